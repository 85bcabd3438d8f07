// Who is calling: the bus daemon knows each connection's uid and pid
// (GetConnectionUnixUser/ProcessID). Uids are cached per unique name and dropped when the
// name leaves the bus, so an access check costs one round trip per client, not per call.
import type { Message, MessageBus } from 'dbus-next';
import { call } from '../dbus/bus.js';
import { BusError, ERR } from './errors.js';

const DBUS = { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus' };
const CACHE_LIMIT = 4096;

export class CallerCredentials {
  private readonly uids = new Map<string, Promise<number>>();

  constructor(private readonly bus: MessageBus) {}

  /** Listen for NameOwnerChanged so cached entries die with their connection. */
  async start(): Promise<void> {
    await call(this.bus, {
      ...DBUS,
      member: 'AddMatch',
      signature: 's',
      body: ["type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',path='/org/freedesktop/DBus'"],
    });
    this.bus.on('message', (msg: Message) => {
      if (msg.member === 'NameOwnerChanged' && msg.sender === 'org.freedesktop.DBus') {
        const [name, , newOwner] = msg.body as [string, string, string];
        if (name.startsWith(':') && newOwner === '') this.uids.delete(name);
      }
    });
  }

  uid(sender: string): Promise<number> {
    let p = this.uids.get(sender);
    if (!p) {
      p = call(this.bus, { ...DBUS, member: 'GetConnectionUnixUser', signature: 's', body: [sender], timeoutMs: 10_000 }).then((r) => r.body[0] as number);
      p.catch(() => this.uids.delete(sender));
      if (this.uids.size >= CACHE_LIMIT) this.uids.delete(this.uids.keys().next().value as string);
      this.uids.set(sender, p);
    }
    return p;
  }

  async pid(sender: string): Promise<number> {
    const r = await call(this.bus, { ...DBUS, member: 'GetConnectionUnixProcessID', signature: 's', body: [sender], timeoutMs: 10_000 });
    return r.body[0] as number;
  }

  /** v252 without polkit: mutating calls are for root only. */
  async requireRoot(sender: string): Promise<void> {
    let uid: number;
    try {
      uid = await this.uid(sender);
    } catch {
      throw new BusError(ERR.AccessDenied, 'Access denied: cannot determine the caller');
    }
    if (uid !== 0) throw new BusError(ERR.AccessDenied, 'Access denied');
  }
}
