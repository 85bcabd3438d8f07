// The machine registry: validation, creation/registration, termination, garbage collection
// and recovery from the state directory (systemd's machined.c/machine.c logic). It knows
// nothing of D-Bus: the bus layer calls it and listens to its events.
import { readFileSync } from 'node:fs';
import { isValidHostname } from '../common/names.js';
import { pidCgroup } from '../sys/cgroup.js';
import { BusError, ERR } from './errors.js';
import { HOST_NAME, machineState, nowTimestamps, type Machine, type MachineClass } from './machine.js';
import type { ScopeBackend, ScopeProperty } from './scope/backend.js';
import type { StateStore } from './state-file.js';

export interface RegistryEvents {
  machineNew(m: Machine): void;
  machineRemoved(m: Machine): void;
  log(line: string): void;
}

export interface MachineParams {
  name: string;
  id: Buffer;
  service: string;
  class: string;
  leader: number;
  rootDirectory: string;
  netifs: number[];
}

/** Field 22 of /proc/PID/stat: the start time that tells a process from a later one with its PID. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function hostMachineId(): Buffer {
  try {
    const hex = readFileSync('/etc/machine-id', 'utf8').trim();
    if (/^[0-9a-f]{32}$/.test(hex)) return Buffer.from(hex, 'hex');
  } catch {
    // no machine-id: the host machine has an empty Id
  }
  return Buffer.alloc(0);
}

export class Registry {
  readonly machines = new Map<string, Machine>();
  private readonly byLeader = new Map<number, Machine>();
  private readonly byUnit = new Map<string, Machine>();
  private readonly gcQueue = new Set<Machine>();
  private gcScheduled = false;
  private gcRunning: Promise<void> = Promise.resolve();

  constructor(
    readonly backend: ScopeBackend,
    private readonly store: StateStore,
    private readonly events: RegistryEvents,
  ) {}

  /** The host itself, always present as ".host" (never saved, never collected). */
  addHost(): void {
    const host: Machine = {
      name: HOST_NAME,
      id: hostMachineId(),
      service: '',
      class: 'host',
      leader: 1,
      leaderStartTime: '',
      rootDirectory: '/',
      netifs: [],
      unit: '-.slice',
      cgroup: '/',
      ownsScope: false,
      scopeJob: '',
      ...nowTimestamps(),
      stopping: false,
      started: true,
    };
    this.machines.set(host.name, host);
  }

  get(name: string): Machine | undefined {
    return this.machines.get(name);
  }

  require(name: string): Machine {
    const m = this.machines.get(name);
    if (!m) throw new BusError(ERR.NoSuchMachine, `No machine '${name}' known`);
    return m;
  }

  /** manager_get_machine_by_pid(): the leader itself, else the unit its cgroup belongs to. */
  byPid(pid: number): Machine | undefined {
    const direct = this.byLeader.get(pid);
    if (direct) return direct;
    const cgroup = pidCgroup(pid);
    if (cgroup === undefined) return undefined;
    for (const m of this.machines.values()) {
      if (m.name === HOST_NAME || !m.cgroup || m.cgroup === '/') continue;
      if (cgroup === m.cgroup || cgroup.startsWith(`${m.cgroup}/`)) return m;
    }
    return undefined;
  }

  list(): Machine[] {
    return [...this.machines.values()];
  }

  /** Checks shared by Create* and Register* (v252 method_create_or_register_machine). */
  private validate(p: MachineParams): MachineClass {
    if (!isValidHostname(p.name)) throw new BusError(ERR.InvalidArgs, 'Invalid machine name');
    if (p.id.length !== 0 && p.id.length !== 16) throw new BusError(ERR.InvalidArgs, 'Invalid machine ID parameter');
    let klass: MachineClass;
    if (p.class === '' || p.class === 'container') klass = 'container';
    else if (p.class === 'vm') klass = 'vm';
    else throw new BusError(ERR.InvalidArgs, 'Invalid machine class parameter');
    if (p.leader === 1) throw new BusError(ERR.InvalidArgs, 'Invalid leader PID');
    if (p.rootDirectory !== '' && !p.rootDirectory.startsWith('/')) throw new BusError(ERR.InvalidArgs, 'Root directory must be empty or an absolute path');
    if (p.netifs.some((i) => !Number.isInteger(i) || i <= 0)) throw new BusError(ERR.InvalidArgs, 'Invalid network interface index');
    if (this.machines.has(p.name)) throw new BusError(ERR.MachineExists, `Machine '${p.name}' already exists`);
    if (processStartTime(p.leader) === undefined) {
      throw new BusError('System.Error.ESRCH', `Failed to determine unit of process ${p.leader} : No such process`);
    }
    const other = this.byLeader.get(p.leader);
    if (other) throw new BusError(ERR.MachineExists, `Leader PID ${p.leader} already belongs to machine '${other.name}'`);
    return klass;
  }

  private newMachine(p: MachineParams, klass: MachineClass): Machine {
    return {
      name: p.name,
      id: Buffer.from(p.id),
      service: p.service,
      class: klass,
      leader: p.leader,
      leaderStartTime: processStartTime(p.leader) ?? '',
      rootDirectory: p.rootDirectory,
      netifs: [...p.netifs],
      unit: '',
      cgroup: '',
      ownsScope: false,
      scopeJob: '',
      ...nowTimestamps(),
      stopping: false,
      started: false,
    };
  }

  /** Insert before the (possibly slow) scope start, so a racing duplicate gets MachineExists. */
  private insert(m: Machine): void {
    this.machines.set(m.name, m);
    this.byLeader.set(m.leader, m);
  }

  private forget(m: Machine): void {
    if (this.machines.get(m.name) === m) this.machines.delete(m.name);
    if (this.byLeader.get(m.leader) === m) this.byLeader.delete(m.leader);
    if (m.unit && this.byUnit.get(m.unit) === m) this.byUnit.delete(m.unit);
  }

  /** CreateMachine*: a new machine-NAME.scope for the leader; resolves once it runs. */
  async create(p: MachineParams, properties: readonly ScopeProperty[]): Promise<Machine> {
    const klass = this.validate(p);
    const m = this.newMachine(p, klass);
    this.insert(m);
    try {
      await this.backend.startScope(m, properties);
    } catch (err) {
      this.forget(m);
      throw err;
    }
    this.started(m);
    return m;
  }

  /** RegisterMachine*: adopt the unit the leader already runs in. */
  async register(p: MachineParams): Promise<Machine> {
    const klass = this.validate(p);
    const m = this.newMachine(p, klass);
    this.insert(m);
    try {
      await this.backend.adopt(m);
    } catch (err) {
      this.forget(m);
      throw err;
    }
    this.started(m);
    return m;
  }

  private started(m: Machine): void {
    m.started = true;
    if (m.unit) this.byUnit.set(m.unit, m);
    this.save(m);
    this.backend.watch(m);
    this.events.log(`New machine ${m.name}.`);
    this.events.machineNew(m);
  }

  private save(m: Machine): void {
    if (m.name === HOST_NAME) return;
    try {
      this.store.save(m);
    } catch (err) {
      this.events.log(`Failed to save state of machine ${m.name}: ${(err as Error).message}`);
    }
  }

  async terminate(m: Machine): Promise<void> {
    if (m.name === HOST_NAME) throw new BusError(ERR.NotSupported, 'Cannot terminate the host machine');
    m.stopping = true;
    this.save(m);
    await this.backend.stop(m);
    this.queueGc(m);
  }

  async kill(m: Machine, whom: string, signal: number): Promise<void> {
    let target: 'leader' | 'all';
    if (whom === '' || whom === 'all') target = 'all';
    else if (whom === 'leader') target = 'leader';
    else throw new BusError(ERR.InvalidArgs, `Invalid kill parameter '${whom}'`);
    if (!Number.isInteger(signal) || signal <= 0 || signal >= 65) throw new BusError(ERR.InvalidArgs, 'Invalid signal ' + signal);
    if (m.name === HOST_NAME) throw new BusError(ERR.NotSupported, 'Cannot kill the host machine');
    await this.backend.kill(m, target, signal);
  }

  /** UnregisterMachine: forget the machine without stopping its unit. */
  async unregister(m: Machine): Promise<void> {
    if (m.name === HOST_NAME) throw new BusError(ERR.NotSupported, 'Cannot unregister the host machine');
    await this.finalize(m);
  }

  private async finalize(m: Machine): Promise<void> {
    if (!this.machines.has(m.name) || this.machines.get(m.name) !== m) return;
    this.forget(m);
    this.gcQueue.delete(m);
    try {
      this.store.remove(m);
    } catch (err) {
      this.events.log(`Failed to remove state of machine ${m.name}: ${(err as Error).message}`);
    }
    if (m.started) {
      this.events.log(`Machine ${m.name} terminated.`);
      this.events.machineRemoved(m);
      m.started = false;
    }
    await this.backend.release(m);
  }

  queueGc(m: Machine): void {
    if (m.name === HOST_NAME) return;
    this.gcQueue.add(m);
    if (this.gcScheduled) return;
    this.gcScheduled = true;
    setImmediate(() => {
      this.gcScheduled = false;
      this.gcRunning = this.gcRunning.then(() => this.gc(false));
    });
  }

  /** Collect machines whose unit is gone (manager_gc). */
  private async gc(dropNotStarted: boolean): Promise<void> {
    const batch = [...this.gcQueue];
    this.gcQueue.clear();
    for (const m of batch) {
      if (this.machines.get(m.name) !== m) continue;
      if (!(await this.collectable(m, dropNotStarted))) continue;
      if (!m.stopping) {
        m.stopping = true;
        await this.backend.stop(m).catch(() => undefined);
      }
      if (await this.collectable(m, dropNotStarted)) await this.finalize(m);
    }
  }

  private async collectable(m: Machine, dropNotStarted: boolean): Promise<boolean> {
    if (m.name === HOST_NAME) return false;
    if (dropNotStarted && !m.started) return true;
    if (m.scopeJob) return false;
    return !(await this.backend.isActive(m));
  }

  /** Reload machines from the state directory after a restart: live ones come back, dead ones go. */
  async loadState(): Promise<{ restored: string[]; collected: string[] }> {
    const restored: string[] = [];
    const collected: string[] = [];
    for (const m of this.store.loadAll()) {
      if (this.machines.has(m.name)) continue;
      this.machines.set(m.name, m);
      if (m.leader > 0 && !this.byLeader.has(m.leader)) this.byLeader.set(m.leader, m);
      const alive = m.leader > 0 && this.leaderIsTheSame(m);
      // A recycled leader PID that now belongs to some other process must not keep the machine.
      if (!alive && !m.cgroup) m.leader = 0;
      if (m.leader === 0 && !m.cgroup) {
        await this.finalize(m);
        collected.push(m.name);
        continue;
      }
      if (!alive && this.byLeader.get(m.leader) === m) this.byLeader.delete(m.leader);
      if (!(await this.backend.isActive(m))) {
        await this.finalize(m);
        collected.push(m.name);
        continue;
      }
      // Survivor: re-announce it as systemd does (machine_start on a machine with a unit).
      m.stopping = false;
      this.started(m);
      restored.push(m.name);
    }
    return { restored, collected };
  }

  /** Is the process with the leader's PID still the machine's leader (same cgroup/start time)? */
  private leaderIsTheSame(m: Machine): boolean {
    const start = processStartTime(m.leader);
    if (start === undefined) return false;
    if (m.leaderStartTime && start !== m.leaderStartTime) return false;
    if (!m.cgroup) return true;
    const cgroup = pidCgroup(m.leader);
    return cgroup !== undefined && (cgroup === m.cgroup || cgroup.startsWith(`${m.cgroup}/`));
  }

  /** Names of units we created, for the backend's orphan sweep. */
  ownedUnits(): Set<string> {
    return new Set(this.list().filter((m) => m.ownsScope && m.unit).map((m) => m.unit));
  }

  state(m: Machine): string {
    return machineState(m);
  }

  async close(): Promise<void> {
    await this.gcRunning;
    await this.backend.close();
  }
}
