// The few org.freedesktop.systemd1 calls mctl needs: start/stop units and wait for the job,
// enable/disable unit files, and a unit's control group.
import { existsSync } from 'node:fs';
import type { Message } from 'dbus-next';
import { SYSTEMD1, type Session } from './session.js';
import { UserError } from '../common/errors.js';

const PATH = '/org/freedesktop/systemd1';
const MANAGER = `${SYSTEMD1}.Manager`;

/** sd_booted(): systemd is PID 1 of this host. */
export function systemdBooted(): boolean {
  return existsSync('/run/systemd/system');
}

export class Systemd1 {
  constructor(private readonly session: Session) {}

  /** StartUnit/StopUnit/RestartUnit and wait for JobRemoved; returns the job result. */
  async runJob(method: 'StartUnit' | 'StopUnit' | 'RestartUnit', unit: string, mode = 'replace'): Promise<string> {
    const bus = await this.session.connection();
    // Match and Subscribe first, so a fast job cannot finish before we listen.
    const rule = `type='signal',sender='${SYSTEMD1}',path='${PATH}',interface='${MANAGER}',member='JobRemoved'`;
    await this.session.call({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's', body: [rule] });
    await this.session.call({ destination: SYSTEMD1, path: PATH, interface: MANAGER, member: 'Subscribe' }, { action: unit });
    const removed = new Map<string, string>();
    let wanted: string | undefined;
    let settle: ((result: string) => void) | undefined;
    const onMessage = (msg: Message): void => {
      if (msg.member !== 'JobRemoved' || msg.interface !== MANAGER) return;
      const [, jobPath, , result] = msg.body as [number, string, string, string];
      if (wanted === jobPath && settle) settle(result);
      else removed.set(jobPath, result);
    };
    bus.on('message', onMessage);
    try {
      const reply = await this.session.call({ destination: SYSTEMD1, path: PATH, interface: MANAGER, member: method, signature: 'ss', body: [unit, mode] }, { action: `${method === 'StopUnit' ? 'stop' : 'start'} ${unit}` });
      const job = reply.body[0] as string;
      const early = removed.get(job);
      if (early !== undefined) return early;
      return await new Promise<string>((resolve) => {
        wanted = job;
        settle = resolve;
      });
    } finally {
      bus.off('message', onMessage);
    }
  }

  /** EnableUnitFiles/DisableUnitFiles, then Reload; returns the symlink changes. */
  async unitFiles(enable: boolean, units: string[]): Promise<[string, string, string][]> {
    const reply = enable
      ? await this.session.call({ destination: SYSTEMD1, path: PATH, interface: MANAGER, member: 'EnableUnitFiles', signature: 'asbb', body: [units, false, false] }, { action: 'enable' })
      : await this.session.call({ destination: SYSTEMD1, path: PATH, interface: MANAGER, member: 'DisableUnitFiles', signature: 'asb', body: [units, false] }, { action: 'disable' });
    const changes = (enable ? reply.body[1] : reply.body[0]) as [string, string, string][];
    await this.session.call({ destination: SYSTEMD1, path: PATH, interface: MANAGER, member: 'Reload' }, { action: 'reload' });
    return changes;
  }

  /** The ControlGroup property of a loaded unit, or undefined when systemd does not know it. */
  async controlGroup(unit: string): Promise<string | undefined> {
    try {
      const path = (await this.session.callRaw({ destination: SYSTEMD1, path: PATH, interface: MANAGER, member: 'GetUnit', signature: 's', body: [unit], timeoutMs: 2000 })).body[0] as string;
      const iface = unit.endsWith('.scope') ? `${SYSTEMD1}.Scope` : `${SYSTEMD1}.Service`;
      const reply = await this.session.callRaw({ destination: SYSTEMD1, path, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: [iface, 'ControlGroup'], timeoutMs: 2000 });
      const cg = (reply.body[0] as { value: string }).value;
      return cg || undefined;
    } catch {
      return undefined;
    }
  }

  /** Whether systemd1 answers on this bus (false on a private test bus or a host without systemd). */
  async available(): Promise<boolean> {
    try {
      const reply = await this.session.callRaw({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'NameHasOwner', signature: 's', body: [SYSTEMD1] });
      return reply.body[0] === true;
    } catch {
      return false;
    }
  }
}

export function jobFailed(unit: string, result: string, verb: string): UserError {
  return new UserError(`${verb} of ${unit} failed: job ${result}`, { hint: `see systemctl status ${unit} and journalctl -u ${unit}` });
}
