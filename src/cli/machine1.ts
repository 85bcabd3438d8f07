// Typed calls to org.freedesktop.machine1 (ours or stock systemd-machined), low-level messages
// only: a CLI run is short, so the introspection round trip of proxy objects is skipped.
import type { Variant } from 'dbus-next';
import { MACHINE1, MACHINE1_PATH, type Session, type Subject } from './session.js';
import type { CallSpec } from '../dbus/bus.js';

const MANAGER = `${MACHINE1}.Manager`;
export const MACHINE_IFACE = `${MACHINE1}.Machine`;
export const IMAGE_IFACE = `${MACHINE1}.Image`;

export interface MachineListEntry {
  name: string;
  class: string;
  service: string;
  path: string;
}

export interface ImageListEntry {
  name: string;
  type: string;
  readOnly: boolean;
  crtime: bigint;
  mtime: bigint;
  usage: bigint;
  path: string;
}

export interface Address {
  family: number;
  bytes: Buffer;
}

export type PropertyMap = Record<string, Variant>;

function manager(member: string, signature = '', body: unknown[] = [], timeoutMs?: number): CallSpec {
  return { destination: MACHINE1, path: MACHINE1_PATH, interface: MANAGER, member, signature, body, ...(timeoutMs ? { timeoutMs } : {}) };
}

/** Slow operations (copies, clones, pool cleanup) get a long timeout, as machinectl's infinite one. */
const SLOW_MS = 3_600_000;

export class Machine1 {
  constructor(private readonly session: Session) {}

  async listMachines(): Promise<MachineListEntry[]> {
    const reply = await this.session.call(manager('ListMachines'));
    return (reply.body[0] as [string, string, string, string][]).map(([name, cls, service, path]) => ({ name, class: cls, service, path }));
  }

  async listImages(): Promise<ImageListEntry[]> {
    const reply = await this.session.call(manager('ListImages'));
    return (reply.body[0] as [string, string, boolean, bigint, bigint, bigint, string][]).map(([name, type, readOnly, crtime, mtime, usage, path]) => ({
      name,
      type,
      readOnly,
      crtime: BigInt(crtime),
      mtime: BigInt(mtime),
      usage: BigInt(usage),
      path,
    }));
  }

  async getMachine(name: string): Promise<string> {
    return (await this.session.call(manager('GetMachine', 's', [name]), { machine: name })).body[0] as string;
  }

  async getImage(name: string): Promise<string> {
    return (await this.session.call(manager('GetImage', 's', [name]), { image: name })).body[0] as string;
  }

  async properties(path: string, iface: string, subject: Subject = {}): Promise<PropertyMap> {
    const reply = await this.session.call(
      { destination: MACHINE1, path, interface: 'org.freedesktop.DBus.Properties', member: 'GetAll', signature: 's', body: [iface] },
      subject,
    );
    return reply.body[0] as PropertyMap;
  }

  async managerProperties(): Promise<PropertyMap> {
    return this.properties(MACHINE1_PATH, MANAGER);
  }

  async addresses(name: string): Promise<Address[]> {
    const reply = await this.session.call(manager('GetMachineAddresses', 's', [name]), { machine: name });
    return (reply.body[0] as [number, Buffer | number[]][]).map(([family, bytes]) => ({ family, bytes: Buffer.from(bytes) }));
  }

  async osRelease(name: string): Promise<Record<string, string>> {
    return (await this.session.call(manager('GetMachineOSRelease', 's', [name]), { machine: name })).body[0] as Record<string, string>;
  }

  async uidShift(name: string): Promise<number> {
    return (await this.session.call(manager('GetMachineUIDShift', 's', [name]), { machine: name })).body[0] as number;
  }

  async terminate(name: string): Promise<void> {
    await this.session.call(manager('TerminateMachine', 's', [name]), { machine: name, action: `terminate ${name}` });
  }

  async kill(name: string, whom: string, signal: number): Promise<void> {
    await this.session.call(manager('KillMachine', 'ssi', [name, whom, signal]), { machine: name, action: `kill ${name}` });
  }

  /** OpenMachineLogin → (master fd, pts path inside the container). */
  async openLogin(name: string): Promise<{ fd: number; path: string }> {
    const reply = await this.session.call(manager('OpenMachineLogin', 's', [name]), { machine: name, action: `login ${name}` });
    return { fd: reply.body[0] as number, path: reply.body[1] as string };
  }

  async openShell(name: string, user: string, path: string, args: string[], env: string[]): Promise<{ fd: number; path: string }> {
    const reply = await this.session.call(manager('OpenMachineShell', 'sssasas', [name, user, path, args, env]), { machine: name, action: `shell ${name}` });
    return { fd: reply.body[0] as number, path: reply.body[1] as string };
  }

  async bind(name: string, source: string, dest: string, readOnly: boolean, mkdir: boolean): Promise<void> {
    await this.session.call(manager('BindMountMachine', 'sssbb', [name, source, dest, readOnly, mkdir], SLOW_MS), { machine: name, action: `bind into ${name}` });
  }

  async copy(direction: 'To' | 'From', name: string, source: string, dest: string, replace: boolean): Promise<void> {
    const subject = { machine: name, action: `copy ${direction === 'To' ? 'to' : 'from'} ${name}` };
    if (replace) await this.session.call(manager(`Copy${direction}MachineWithFlags`, 'ssst', [name, source, dest, 1n], SLOW_MS), subject);
    else await this.session.call(manager(`Copy${direction}Machine`, 'sss', [name, source, dest], SLOW_MS), subject);
  }

  async imageCall(member: string, name: string, signature = 's', rest: unknown[] = [], action?: string): Promise<unknown[]> {
    const reply = await this.session.call(manager(member, signature, [name, ...rest], SLOW_MS), { image: name, ...(action ? { action } : {}) });
    return reply.body;
  }

  async setPoolLimit(bytes: bigint): Promise<void> {
    await this.session.call(manager('SetPoolLimit', 't', [bytes]), { action: 'set pool limit' });
  }

  async cleanPool(mode: 'all' | 'hidden'): Promise<[string, bigint][]> {
    const reply = await this.session.call(manager('CleanPool', 's', [mode], SLOW_MS), { action: 'clean' });
    return (reply.body[0] as [string, bigint][]).map(([n, s]) => [n, BigInt(s)]);
  }
}
