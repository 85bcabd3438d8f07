// Scope backend that asks systemd (org.freedesktop.systemd1) for the scope, as
// systemd-machined v252 does: StartTransientUnit("machine-NAME.scope", "fail", …) in
// machine.slice, reply deferred until the job's JobRemoved; unit changes queue GC.
import dbus, { type Message, type MessageBus, type Variant } from 'dbus-next';
import { call } from '../../dbus/bus.js';
import { pidCgroup, unitOfCgroup } from '../../sys/cgroup.js';
import { BusError, ERR } from '../errors.js';
import type { Machine } from '../machine.js';
import type { ChangeListener, ScopeBackend, ScopeProperty } from './backend.js';
import { scopeUnitName, MACHINE_SLICE } from './cgroupfs.js';

const SD = 'org.freedesktop.systemd1';
const SD_PATH = '/org/freedesktop/systemd1';
const SD_MANAGER = 'org.freedesktop.systemd1.Manager';
const SCOPE_TASKS_MAX = 16384n;
export const SYSTEMD1_DESCRIPTION = 'systemd1 (transient scopes via org.freedesktop.systemd1)';

const MATCHES = [
  `type='signal',sender='${SD}',interface='${SD_MANAGER}',member='JobRemoved',path='${SD_PATH}'`,
  `type='signal',sender='${SD}',interface='${SD_MANAGER}',member='UnitRemoved',path='${SD_PATH}'`,
  `type='signal',sender='${SD}',interface='${SD_MANAGER}',member='Reloading',path='${SD_PATH}'`,
  `type='signal',sender='${SD}',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',arg0='org.freedesktop.systemd1.Unit'`,
];

/** Is org.freedesktop.systemd1 on this bus? Decides which backend runs. */
export async function systemdOnBus(bus: MessageBus): Promise<boolean> {
  try {
    const reply = await call(bus, {
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'NameHasOwner',
      signature: 's',
      body: [SD],
      timeoutMs: 5000,
    });
    return reply.body[0] === true;
  } catch {
    return false;
  }
}

/** sd-bus escaping of a unit name into an object path label (bus_label_escape). */
function unitPath(unit: string): string {
  let out = '';
  Buffer.from(unit, 'utf8').forEach((c, i) => {
    const alpha = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    const digit = c >= 0x30 && c <= 0x39;
    out += alpha || (i > 0 && digit) ? String.fromCharCode(c) : `_${c.toString(16).padStart(2, '0')}`;
  });
  return `${SD_PATH}/unit/${out}`;
}

export class Systemd1Backend implements ScopeBackend {
  readonly kind = 'systemd1' as const;
  private readonly jobWaiters = new Map<string, (result: string) => void>();
  private readonly finishedJobs = new Map<string, string>();
  private readonly byUnit = new Map<string, Machine>();
  private readonly byUnitPath = new Map<string, Machine>();
  private readonly onMessage = (msg: Message): void => this.handleSignal(msg);

  private constructor(
    private readonly bus: MessageBus,
    private readonly onChange: ChangeListener,
    private readonly onReload: () => void,
  ) {}

  static async create(bus: MessageBus, onChange: ChangeListener, onReload: () => void): Promise<Systemd1Backend> {
    const b = new Systemd1Backend(bus, onChange, onReload);
    bus.on('message', b.onMessage);
    for (const rule of MATCHES) {
      await call(bus, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's', body: [rule] });
    }
    try {
      await b.manager('Subscribe', '', []);
    } catch (err) {
      // AlreadySubscribed is fine (a restart on the same connection cannot happen, but be lenient)
      if (!(err instanceof Error) || !/AlreadySubscribed/.test(err.message)) throw err;
    }
    return b;
  }

  describe(): string {
    return SYSTEMD1_DESCRIPTION;
  }

  private manager(member: string, signature: string, body: unknown[]): Promise<Message> {
    return call(this.bus, { destination: SD, path: SD_PATH, interface: SD_MANAGER, member, signature, body });
  }

  private handleSignal(msg: Message): void {
    if (msg.type !== dbus.MessageType.SIGNAL || msg.sender === undefined) return;
    if (msg.interface === SD_MANAGER && msg.member === 'JobRemoved') {
      const [, job, unit, result] = msg.body as [number, string, string, string];
      const waiter = this.jobWaiters.get(job);
      if (waiter) {
        this.jobWaiters.delete(job);
        waiter(result);
      } else {
        // The signal can be parsed in the same read as StartTransientUnit's reply, before the
        // caller registered its waiter: keep the result for it (bounded).
        this.finishedJobs.set(job, result);
        if (this.finishedJobs.size > 4096) this.finishedJobs.delete(this.finishedJobs.keys().next().value as string);
      }
      const m = this.byUnit.get(unit);
      if (m) {
        if (m.scopeJob === job) m.scopeJob = '';
        this.onChange(m);
      }
    } else if (msg.interface === SD_MANAGER && msg.member === 'UnitRemoved') {
      const [unit] = msg.body as [string];
      const m = this.byUnit.get(unit);
      if (m) this.onChange(m);
    } else if (msg.interface === SD_MANAGER && msg.member === 'Reloading') {
      if ((msg.body as [boolean])[0] === false) this.onReload();
    } else if (msg.interface === 'org.freedesktop.DBus.Properties' && msg.member === 'PropertiesChanged' && msg.path) {
      const m = this.byUnitPath.get(msg.path);
      if (m) this.onChange(m);
    }
  }

  async startScope(m: Machine, properties: readonly ScopeProperty[]): Promise<void> {
    const unit = scopeUnitName(m.name);
    const description = `${m.class === 'vm' ? 'Virtual Machine' : 'Container'} ${m.name}`;
    const props: Array<[string, Variant]> = [
      ['Slice', new dbus.Variant('s', MACHINE_SLICE)],
      ['Description', new dbus.Variant('s', description)],
      ['PIDs', new dbus.Variant('au', [m.leader])],
      ['Delegate', new dbus.Variant('b', true)],
      ['CollectMode', new dbus.Variant('s', 'inactive-or-failed')],
      ['AddRef', new dbus.Variant('b', true)],
      ['TasksMax', new dbus.Variant('t', SCOPE_TASKS_MAX)],
      ...properties,
    ];
    m.unit = unit;
    const reply = await this.manager('StartTransientUnit', 'ssa(sv)a(sa(sv))', [unit, 'fail', props, []]);
    const job = reply.body[0] as string;
    m.scopeJob = job;
    this.track(m);
    const early = this.finishedJobs.get(job);
    this.finishedJobs.delete(job);
    const result = early ?? (await new Promise<string>((resolve) => this.jobWaiters.set(job, resolve)));
    m.scopeJob = '';
    if (result !== 'done') {
      this.untrack(m);
      throw new BusError(ERR.JobFailed, `Start job for unit ${unit} failed with '${result}'`);
    }
    m.cgroup = pidCgroup(m.leader) ?? '';
    m.ownsScope = true;
  }

  async adopt(m: Machine): Promise<void> {
    const cgroup = pidCgroup(m.leader);
    const unit = cgroup === undefined ? undefined : unitOfCgroup(cgroup);
    if (!unit || cgroup === undefined) throw new BusError(ERR.Failed, `Failed to determine unit of process ${m.leader} : No data available`);
    m.unit = unit;
    m.cgroup = cgroup.slice(0, cgroup.indexOf(`/${unit}`) + unit.length + 1);
    m.ownsScope = false;
  }

  private track(m: Machine): void {
    if (!m.unit) return;
    this.byUnit.set(m.unit, m);
    this.byUnitPath.set(unitPath(m.unit), m);
  }

  private untrack(m: Machine): void {
    if (!m.unit) return;
    if (this.byUnit.get(m.unit) === m) this.byUnit.delete(m.unit);
    if (this.byUnitPath.get(unitPath(m.unit)) === m) this.byUnitPath.delete(unitPath(m.unit));
  }

  watch(m: Machine): void {
    this.track(m);
  }

  unwatch(m: Machine): void {
    this.untrack(m);
  }

  async isActive(m: Machine): Promise<boolean> {
    if (m.scopeJob) {
      try {
        await call(this.bus, { destination: SD, path: m.scopeJob, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: ['org.freedesktop.systemd1.Job', 'State'] });
        return true;
      } catch {
        m.scopeJob = '';
      }
    }
    if (!m.unit) return false;
    try {
      const reply = await call(this.bus, {
        destination: SD,
        path: unitPath(m.unit),
        interface: 'org.freedesktop.DBus.Properties',
        member: 'Get',
        signature: 'ss',
        body: ['org.freedesktop.systemd1.Unit', 'ActiveState'],
      });
      const state = (reply.body[0] as Variant).value as string;
      return state !== 'inactive' && state !== 'failed';
    } catch {
      return false;
    }
  }

  async stop(m: Machine): Promise<void> {
    if (!m.unit) return;
    try {
      await this.manager('StopUnit', 'ss', [m.unit, 'fail']);
    } catch (err) {
      if (!(err instanceof Error) || !/NoSuchUnit|not loaded/.test(err.message)) throw err;
    }
  }

  async kill(m: Machine, whom: 'leader' | 'all', signal: number): Promise<void> {
    if (whom === 'leader' || !m.unit) {
      process.kill(m.leader, signal);
      return;
    }
    await this.manager('KillUnit', 'ssi', [m.unit, 'all', signal]);
  }

  async release(m: Machine): Promise<void> {
    this.untrack(m);
    // Balance AddRef=true of the scope we created; an adopted unit was never referenced.
    if (m.ownsScope && m.unit) {
      try {
        await this.manager('UnrefUnit', 's', [m.unit]);
      } catch {
        // the unit is already gone
      }
    }
  }

  async sweepOrphans(): Promise<string[]> {
    // systemd collects empty scopes itself (CollectMode=inactive-or-failed).
    return [];
  }

  async close(): Promise<void> {
    this.bus.removeListener('message', this.onMessage);
  }
}
