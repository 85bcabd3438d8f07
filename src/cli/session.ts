// One CLI invocation's connection to the machine manager: connects lazily (so `--help` and
// local verbs never touch the bus), turns D-Bus errors into one-line UserErrors with hints,
// and knows which bus -M/--machine selects.
import { existsSync } from 'node:fs';
import type { MessageBus, Message } from 'dbus-next';
import { connectBus, call, systemBusAddress, type CallSpec } from '../dbus/bus.js';
import { UserError } from '../common/errors.js';
import { painter, type OutputMode, type Paint } from './output.js';

/** Options every verb accepts (declared once in main.ts). */
export interface GlobalArgs {
  output: OutputMode;
  'no-pager': boolean;
  'no-legend': boolean;
  'no-ask-password': boolean;
  quiet: boolean;
  machine?: string | undefined;
}

export const MACHINE1 = 'org.freedesktop.machine1';
export const MACHINE1_PATH = '/org/freedesktop/machine1';
export const SYSTEMD1 = 'org.freedesktop.systemd1';

/** What a call is about, so an error can name it. */
export interface Subject {
  machine?: string;
  image?: string;
  action?: string;
}

interface DBusErrorLike {
  type: string;
  text: string;
}

function isDBusError(err: unknown): err is DBusErrorLike {
  return typeof err === 'object' && err !== null && typeof (err as { type?: unknown }).type === 'string' && 'text' in err;
}

/** Map a D-Bus error reply to the line the user sees. */
export function describeBusError(err: unknown, subject: Subject = {}): UserError {
  if (!isDBusError(err)) {
    if (err instanceof UserError) return err;
    const msg = err instanceof Error ? err.message : String(err);
    return new UserError(subject.action ? `${subject.action}: ${msg}` : msg);
  }
  const text = (err.text || err.type).split('\n')[0] ?? err.type;
  const what = subject.action ? `${subject.action}: ` : '';
  switch (err.type) {
    case 'org.freedesktop.machine1.NoSuchMachine':
      return new UserError(`no machine '${subject.machine ?? '?'}'`, { hint: 'see mctl list' });
    case 'org.freedesktop.machine1.NoSuchImage':
      return new UserError(`no image '${subject.image ?? subject.machine ?? '?'}'`, { hint: 'see mctl list-images' });
    case 'org.freedesktop.machine1.MachineExists':
      return new UserError(`${what}machine '${subject.machine ?? '?'}' already exists`, { hint: 'see mctl list' });
    case 'org.freedesktop.DBus.Error.ServiceUnknown':
    case 'org.freedesktop.DBus.Error.NameHasNoOwner':
      if (text.includes(SYSTEMD1)) return new UserError(`${what}systemd is not running on this bus`, { hint: 'mctl start works without systemd only via mctl-nspawn' });
      return new UserError(`${what}the machine manager is not running`, { hint: 'start mctl-machined or systemd-machined' });
    case 'org.freedesktop.DBus.Error.AccessDenied':
    case 'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired':
      return new UserError(`${what}permission denied: ${text}`, { hint: 'run as root' });
    case 'org.freedesktop.systemd1.NoSuchUnit':
    case 'org.freedesktop.systemd1.LoadFailed':
      return new UserError(`${what}${text}`, { hint: 'install units/container@.service and units/machines.target into /etc/systemd/system, then systemctl daemon-reload' });
    case 'org.freedesktop.DBus.Error.UnknownMethod':
      return new UserError(`${what}the machine manager does not support this: ${text}`);
    case 'org.freedesktop.DBus.Error.InvalidArgs':
      return new UserError(`${what}${text}`);
    default:
      return new UserError(`${what}${text}`);
  }
}

function socketPathOf(address: string): string | undefined {
  const m = /(?:^|;)unix:(?:[^;]*,)?path=([^,;]+)/.exec(address);
  return m?.[1] ? decodeURIComponent(m[1]) : undefined;
}

export class Session {
  readonly args: GlobalArgs;
  readonly paint: Paint;
  private bus: MessageBus | undefined;
  private connecting: Promise<MessageBus> | undefined;
  private hostBus: Session | undefined;

  constructor(args: GlobalArgs) {
    this.args = args;
    this.paint = painter();
  }

  /** An informational line on stderr (machinectl's log_info); -q silences it. */
  info(line: string): void {
    if (!this.args.quiet) process.stderr.write(`${line}\n`);
  }

  /** The bus address: the system bus, or with -M NAME the system bus inside that container. */
  private async address(): Promise<string> {
    const target = this.args.machine;
    if (!target || target === '.host') return systemBusAddress();
    // -M NAME: look the leader up on the host's manager and use the container's own socket
    // through /proc/LEADER/root (what sd-bus's x-machine-unix does without joining namespaces).
    this.hostBus = new Session({ ...this.args, machine: undefined });
    const leader = await this.hostBus.machineLeader(target);
    return `unix:path=/proc/${leader}/root/run/dbus/system_bus_socket`;
  }

  private async machineLeader(name: string): Promise<number> {
    const path = (await this.call({ destination: MACHINE1, path: MACHINE1_PATH, interface: `${MACHINE1}.Manager`, member: 'GetMachine', signature: 's', body: [name] }, { machine: name })).body[0] as string;
    const reply = await this.call(
      { destination: MACHINE1, path, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: [`${MACHINE1}.Machine`, 'Leader'] },
      { machine: name },
    );
    return (reply.body[0] as { value: number }).value;
  }

  async connection(): Promise<MessageBus> {
    if (this.bus) return this.bus;
    if (!this.connecting) {
      this.connecting = (async () => {
        const address = await this.address();
        const sock = socketPathOf(address);
        if (sock && !existsSync(sock)) {
          throw new UserError(`cannot connect to the system bus: ${sock} does not exist`, {
            hint: this.args.machine ? `machine '${this.args.machine}' has no system bus` : 'is dbus-daemon running? DBUS_SYSTEM_BUS_ADDRESS selects another bus',
          });
        }
        const bus = connectBus(address);
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new UserError(`cannot connect to the system bus at ${address}: no answer within 10 s`)), 10_000);
          bus.once('connect', () => {
            clearTimeout(timer);
            resolve();
          });
          bus.once('error', (err: Error) => {
            clearTimeout(timer);
            reject(new UserError(`cannot connect to the system bus at ${address}: ${err.message}`, { hint: 'is dbus-daemon running? DBUS_SYSTEM_BUS_ADDRESS selects another bus' }));
          });
        });
        // Later stream errors (the daemon going away) must not crash us with a stack trace.
        bus.on('error', () => undefined);
        this.bus = bus;
        return bus;
      })();
    }
    return this.connecting;
  }

  /** A method call with errors mapped for the user. */
  async call(spec: CallSpec, subject: Subject = {}): Promise<Message> {
    const bus = await this.connection();
    try {
      return await call(bus, spec);
    } catch (err) {
      throw describeBusError(err, subject);
    }
  }

  /** Same as call(), but the raw D-Bus error name is kept for callers that branch on it. */
  async callRaw(spec: CallSpec): Promise<Message> {
    const bus = await this.connection();
    return call(bus, spec);
  }

  close(): void {
    this.hostBus?.close();
    if (this.bus) this.bus.disconnect();
    this.bus = undefined;
  }
}
