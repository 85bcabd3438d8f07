// Registration with org.freedesktop.machine1 and scope allocation, as systemd-nspawn 252 does
// it (systemd.md §3.8):
//   register + keep-unit      → RegisterMachineWithNetwork (machined adopts our unit)
//   register, no keep-unit    → CreateMachineWithNetwork with scope properties (machine-NAME.scope)
//   no register, no keep-unit → StartTransientUnit NAME.scope on systemd1, when systemd is on the bus
//   no register + keep-unit   → nothing
// "auto" registers when org.freedesktop.machine1 has an owner and skips silently otherwise.
//
// The message building is pure (unit-tested); dbus-next is only loaded when a bus is really
// used, because its import alone would cost more than a /bin/true container start.
import { existsSync, statSync } from 'node:fs';
import { UserError } from '../common/errors.js';
import type { RegisterMode } from './options.js';
import { parseSignal } from './signals.js';
import type { BusController } from './launch.js';
import type { MountOp } from './spec.js';

/** A D-Bus property as plain data: name, signature, value (converted to a Variant when sent). */
export type PropertyValue = [name: string, signature: string, value: unknown];

export interface RegistrationRequest {
  machineName: string;
  /** 32 hex digits. */
  uuid: string;
  /** The container's PID 1 as the host sees it. */
  leaderPid: number;
  rootDirectory: string;
  /** Host-side ifindexes of the container's network links (veth), for machined's GetAddresses. */
  netifIndices: number[];
  slice: string | undefined;
  killSignal: number | undefined;
  /** --property values (NAME=VALUE). */
  properties: readonly string[];
  /** Device nodes bound in with --bind: the scope must allow them. */
  mounts: readonly MountOp[];
  /** Unique bus name of the supervisor's own connection (the scope's Controller=), or null. */
  controller?: string | null;
}

export const SERVICE_NAME = 'mctl-nspawn';

const MAX_U64 = (1n << 64n) - 1n;

function parseBytes(value: string): bigint {
  if (value === 'infinity') return MAX_U64;
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([KMGTPE]?)(?:i?B)?$/i.exec(value);
  if (!m) throw new UserError(`--property: invalid size '${value}'`);
  const exp = 'KMGTPE'.indexOf(m[2]!.toUpperCase()) + 1;
  return BigInt(Math.floor(Number(m[1]) * 1024 ** exp));
}

function parseUsec(value: string): bigint {
  if (value === 'infinity') return MAX_U64;
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(us|ms|s|sec|m|min|h)?$/.exec(value);
  if (!m) throw new UserError(`--property: invalid time span '${value}'`);
  const mult: Record<string, number> = { us: 1, ms: 1e3, s: 1e6, sec: 1e6, m: 60e6, min: 60e6, h: 3600e6 };
  return BigInt(Math.round(Number(m[1]) * mult[m[2] ?? 's']!));
}

function parseBool(name: string, value: string): boolean {
  if (/^(1|yes|y|true|t|on)$/i.test(value)) return true;
  if (/^(0|no|n|false|f|off)$/i.test(value)) return false;
  throw new UserError(`--property: ${name}: '${value}' is not a boolean`);
}

const BOOL_PROPS = ['Delegate', 'CPUAccounting', 'MemoryAccounting', 'TasksAccounting', 'IOAccounting', 'IPAccounting', 'SendSIGKILL', 'SendSIGHUP'];
const STRING_PROPS = ['Description', 'DevicePolicy', 'KillMode', 'CollectMode', 'ManagedOOMSwap', 'ManagedOOMMemoryPressure'];
const WEIGHT_PROPS = ['CPUWeight', 'StartupCPUWeight', 'IOWeight', 'StartupIOWeight'];
const BYTES_PROPS = ['MemoryMin', 'MemoryLow', 'MemoryHigh', 'MemoryMax', 'MemorySwapMax'];

/** The subset of systemd's unit property syntax that makes sense for a container scope. */
export function parseUnitProperty(assignment: string): PropertyValue {
  const eq = assignment.indexOf('=');
  const name = assignment.slice(0, eq);
  const value = assignment.slice(eq + 1);
  if (BOOL_PROPS.includes(name)) return [name, 'b', parseBool(name, value)];
  if (STRING_PROPS.includes(name)) return [name, 's', value];
  if (WEIGHT_PROPS.includes(name)) {
    if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 10000) throw new UserError(`--property: ${name}: invalid weight '${value}'`);
    return [name, 't', BigInt(value)];
  }
  if (BYTES_PROPS.includes(name)) return [name, 't', parseBytes(value)];
  if (name === 'TasksMax') {
    if (value !== 'infinity' && !/^[0-9]+$/.test(value)) throw new UserError(`--property: TasksMax: invalid value '${value}'`);
    return [name, 't', value === 'infinity' ? MAX_U64 : BigInt(value)];
  }
  if (name === 'CPUQuota') {
    const m = /^([0-9]+(?:\.[0-9]+)?)%$/.exec(value);
    if (!m) throw new UserError(`--property: CPUQuota: '${value}' is not a percentage`);
    return ['CPUQuotaPerSecUSec', 't', BigInt(Math.round(Number(m[1]) * 10_000))];
  }
  if (name === 'KillSignal') {
    const sig = parseSignal(value);
    if (sig === undefined) throw new UserError(`--property: KillSignal: unknown signal '${value}'`);
    return [name, 'i', sig];
  }
  if (name === 'TimeoutStopSec') return ['TimeoutStopUSec', 't', parseUsec(value)];
  if (name === 'DeviceAllow') {
    const [path = '', access = 'rwm'] = value.split(/\s+/);
    if (!/^[rwm]+$/.test(access)) throw new UserError(`--property: DeviceAllow: invalid access '${access}'`);
    return [name, 'a(ss)', [[path, access]]];
  }
  throw new UserError(`--property: unknown or unsupported property '${name}'`);
}

/** Device nodes among the bind sources, which the scope's device policy must allow (as nspawn does). */
function boundDevices(mounts: readonly MountOp[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const m of mounts) {
    if (m.kind !== 'bind') continue;
    try {
      const st = statSync(m.source);
      if (st.isCharacterDevice() || st.isBlockDevice()) out.push([m.source, m.readOnly ? 'r' : 'rw']);
    } catch {
      // The plan already checked the source exists; a vanished one fails later in the runtime.
    }
  }
  return out;
}

// Stop semantics, as systemd-nspawn 252: the supervisor's own bus connection is the scope's
// Controller= and KillMode=mixed; systemd then does not signal the scope on stop but sends
// Scope.RequestStop to the controller, and the supervisor sends the kill signal to PID 1 only
// (SIGRTMIN+3: a booted systemd shuts down cleanly); whatever is left after TimeoutStopSec gets
// SIGKILL. Without a controller (the supervisor could not connect) "mixed" would mean an
// immediate SIGKILL of everything (a scope has no main process), so the fallback is
// KillMode=control-group: the kill signal to every process of the container.
function killProperties(req: RegistrationRequest): PropertyValue[] {
  const controller: PropertyValue[] = req.controller ? [['Controller', 's', req.controller]] : [];
  if (req.killSignal === undefined) return controller;
  return [...controller, ['KillSignal', 'i', req.killSignal], ['KillMode', 's', req.controller ? 'mixed' : 'control-group']];
}

export function scopeProperties(req: RegistrationRequest): PropertyValue[] {
  const props: PropertyValue[] = [];
  if (req.slice !== undefined) props.push(['Slice', 's', req.slice]);
  props.push(...killProperties(req));
  props.push(['DevicePolicy', 's', 'closed']);
  props.push(['DeviceAllow', 'a(ss)', [['/dev/net/tun', 'rwm'], ['char-pts', 'rw'], ...boundDevices(req.mounts)]]);
  for (const p of req.properties) props.push(parseUnitProperty(p));
  return props;
}

/** Properties for the transient NAME.scope nspawn makes itself under --register=no. */
export function transientScopeProperties(req: RegistrationRequest): PropertyValue[] {
  const props: PropertyValue[] = [
    ['PIDs', 'au', [req.leaderPid]],
    ['Description', 's', `Container ${req.machineName}`],
    ['Delegate', 'b', true],
    ['CollectMode', 's', 'inactive-or-failed'],
    ['AddRef', 'b', true],
    ['Slice', 's', req.slice ?? 'machine.slice'],
    ...killProperties(req),
  ];
  props.push(['DevicePolicy', 's', 'closed']);
  props.push(['DeviceAllow', 'a(ss)', [['/dev/net/tun', 'rwm'], ['char-pts', 'rw'], ...boundDevices(req.mounts)]]);
  for (const p of req.properties) props.push(parseUnitProperty(p));
  return props;
}

export function idBytes(uuid: string): Buffer {
  return Buffer.from(uuid, 'hex');
}

export type Plan = 'register-machine' | 'create-machine' | 'transient-scope' | 'nothing';

/** What to do for --register and --keep-unit (before asking the bus who is there). */
export function registrationPlan(mode: RegisterMode, keepUnit: boolean): Plan {
  if (mode !== 'no') return keepUnit ? 'register-machine' : 'create-machine';
  return keepUnit ? 'nothing' : 'transient-scope';
}

function busSocketPath(address: string): string | null {
  const m = /(?:^|;)unix:path=([^,;]+)/.exec(address);
  return m ? m[1]! : null;
}

/**
 * One registration: `start(leaderPid)` runs in the launcher's afterNamespaces hook, before the
 * payload runs; `stop()` undoes it (UnregisterMachine / AbandonScope) when the start fails later.
 * After a successful start the launcher becomes the native supervisor: the bus connection ends
 * with it, machined drops the machine when its leader exits and the scope is collected when empty.
 */
export class Registration {
  private bus: import('dbus-next').MessageBus | null = null;
  private done: 'machine' | 'scope' | null = null;
  private scopeName = '';
  private readonly controller: BusController | undefined;

  constructor(
    private readonly mode: RegisterMode,
    private readonly keepUnit: boolean,
    private readonly base: Omit<RegistrationRequest, 'leaderPid'>,
  ) {
    // Fail early on a bad --property, before any namespace exists.
    for (const p of base.properties) parseUnitProperty(p);
    const plan = registrationPlan(mode, keepUnit);
    if (plan === 'create-machine' || plan === 'transient-scope') {
      const address = process.env['DBUS_SYSTEM_BUS_ADDRESS'] || 'unix:path=/run/dbus/system_bus_socket';
      this.controller = { address, uniqueName: null, trustedSenders: [] };
    }
  }

  /** The machine was registered (machined knows it) — for messages and tests. */
  get registered(): boolean {
    return this.done === 'machine';
  }

  /** False when the system bus address names a socket that does not exist (no dbus-next load needed). */
  async busMayExist(): Promise<boolean> {
    // Same rule as src/dbus/bus.ts systemBusAddress(), without importing dbus-next.
    const address = process.env['DBUS_SYSTEM_BUS_ADDRESS'] || 'unix:path=/run/dbus/system_bus_socket';
    const socket = busSocketPath(address);
    return socket === null || existsSync(socket);
  }

  /**
   * The supervisor's bus connection for Controller= (filled in by launch() before start());
   * undefined under --keep-unit or without registration, where no scope of ours is stopped.
   */
  get busController(): BusController | undefined {
    return this.controller;
  }

  async start(leaderPid: number): Promise<void> {
    const plan = registrationPlan(this.mode, this.keepUnit);
    if (plan === 'nothing') return;
    const { systemBusAddress } = await import('../dbus/bus.js');
    const address = systemBusAddress();
    const socket = busSocketPath(address);
    if (socket !== null && !existsSync(socket)) {
      // No system bus at all: nothing to register with.
      if (this.mode === 'yes') throw new UserError(`cannot register machine: no system bus at ${socket}`);
      return;
    }
    const req: RegistrationRequest = { ...this.base, leaderPid, controller: this.controller?.uniqueName ?? null };
    const { connectBus, call } = await import('../dbus/bus.js');
    const bus = connectBus(address);
    this.bus = bus;
    // A failed connection surfaces as an 'error' event; turn it into a rejection of the first call.
    bus.on('error', () => undefined);
    try {
      if (plan === 'transient-scope') {
        if (!(await this.nameAvailable('org.freedesktop.systemd1'))) return await this.close();
        await this.startTransientScope(req);
        await this.trustStopRequestsFrom(['org.freedesktop.systemd1']);
        await this.close();
        return;
      }
      if (!(await this.nameAvailable('org.freedesktop.machine1'))) {
        if (this.mode === 'auto') return await this.close();
        throw new UserError('org.freedesktop.machine1 is not on the bus (is mctl-machined or systemd-machined running?)');
      }
      const dbus = (await import('dbus-next')).default;
      const variants = (props: PropertyValue[]) => props.map(([n, sig, v]) => [n, new dbus.Variant(sig, v)]);
      if (plan === 'register-machine') {
        const register = () =>
          call(bus, {
            destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager',
            member: 'RegisterMachineWithNetwork', signature: 'sayssusai',
            body: [req.machineName, idBytes(req.uuid), SERVICE_NAME, 'container', req.leaderPid, req.rootDirectory, req.netifIndices],
          });
        try {
          await register();
        } catch (err) {
          // Under --keep-unit the unit outlives a reboot (exit 133 → restart): the supervisor
          // cannot unregister, so the previous run's registration is still there. Drop it when
          // its leader is gone, then register again.
          if ((err as { type?: string }).type !== 'org.freedesktop.machine1.MachineExists' || !(await this.dropStaleMachine(req.machineName))) throw err;
          await register();
        }
      } else {
        await call(bus, {
          destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager',
          member: 'CreateMachineWithNetwork', signature: 'sayssusaia(sv)',
          body: [req.machineName, idBytes(req.uuid), SERVICE_NAME, 'container', req.leaderPid, req.rootDirectory, req.netifIndices,
            variants(scopeProperties(req))],
        });
        // systemd sends RequestStop for a scope it runs; mctl-machined without systemd does itself
        await this.trustStopRequestsFrom(['org.freedesktop.systemd1', 'org.freedesktop.machine1']);
      }
      this.done = 'machine';
      await this.close();
    } catch (err) {
      await this.close();
      if (plan === 'transient-scope') throw new UserError(`failed to allocate scope ${req.machineName}.scope: ${busErrorText(err)}`);
      throw new UserError(`failed to register machine '${req.machineName}': ${busErrorText(err)}`);
    }
  }

  /** The supervisor obeys Scope.RequestStop only from the owners of these names (followed on changes). */
  private async trustStopRequestsFrom(names: string[]): Promise<void> {
    if (!this.controller?.uniqueName) return;
    const { call } = await import('../dbus/bus.js');
    for (const name of names) {
      try {
        const reply = await call(this.bus!, {
          destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus',
          member: 'GetNameOwner', signature: 's', body: [name], timeoutMs: 5000,
        });
        this.controller.trustedSenders.push({ name, owner: reply.body[0] as string });
      } catch {
        // not on the bus: nobody to trust for it
      }
    }
  }

  /** Unregister machine `name` if its leader has exited; true when it did. */
  private async dropStaleMachine(name: string): Promise<boolean> {
    const bus = this.bus;
    if (!bus) return false;
    const { call } = await import('../dbus/bus.js');
    const manager = { destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager' };
    const path = (await call(bus, { ...manager, member: 'GetMachine', signature: 's', body: [name], timeoutMs: 5000 })).body[0] as string;
    const leader = (await call(bus, {
      destination: 'org.freedesktop.machine1', path, interface: 'org.freedesktop.DBus.Properties',
      member: 'Get', signature: 'ss', body: ['org.freedesktop.machine1.Machine', 'Leader'], timeoutMs: 5000,
    })).body[0] as { value: number };
    if (processExists(leader.value)) return false;
    await call(bus, { ...manager, member: 'UnregisterMachine', signature: 's', body: [name], timeoutMs: 5000 });
    return true;
  }

  /** Owned now, or bus-activatable (systemd-machined normally starts on first use). */
  private async nameAvailable(name: string): Promise<boolean> {
    if (await this.nameHasOwner(name)) return true;
    const { call } = await import('../dbus/bus.js');
    const reply = await call(this.bus!, {
      destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus',
      member: 'ListActivatableNames', timeoutMs: 5000,
    });
    return (reply.body[0] as string[]).includes(name);
  }

  private async nameHasOwner(name: string): Promise<boolean> {
    const { call } = await import('../dbus/bus.js');
    const reply = await call(this.bus!, {
      destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus',
      member: 'NameHasOwner', signature: 's', body: [name], timeoutMs: 5000,
    });
    return reply.body[0] === true;
  }

  private async startTransientScope(req: RegistrationRequest): Promise<void> {
    const { call } = await import('../dbus/bus.js');
    const dbus = (await import('dbus-next')).default;
    const bus = this.bus!;
    this.scopeName = `${req.machineName}.scope`;
    const systemd = { destination: 'org.freedesktop.systemd1', path: '/org/freedesktop/systemd1', interface: 'org.freedesktop.systemd1.Manager' };
    await call(bus, { ...systemd, member: 'Subscribe' }).catch(() => undefined);
    // Wait for our job's JobRemoved: the scope exists (and holds the leader) only then.
    let jobPath = '';
    let resolveJob: (result: string) => void = () => undefined;
    const jobDone = new Promise<string>((r) => (resolveJob = r));
    const early = new Map<string, string>();
    const onMessage = (msg: import('dbus-next').Message) => {
      if (msg.member !== 'JobRemoved' || msg.interface !== 'org.freedesktop.systemd1.Manager') return;
      const [, path, , result] = msg.body as [number, string, string, string];
      if (path === jobPath) resolveJob(result);
      else early.set(path, result);
    };
    bus.on('message', onMessage);
    await call(bus, {
      destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's',
      body: ["type='signal',sender='org.freedesktop.systemd1',interface='org.freedesktop.systemd1.Manager',member='JobRemoved'"],
    });
    const props = transientScopeProperties(req).map(([n, sig, v]) => [n, new dbus.Variant(sig, v)]);
    const reply = await call(bus, { ...systemd, member: 'StartTransientUnit', signature: 'ssa(sv)a(sa(sv))', body: [this.scopeName, 'fail', props, []] });
    jobPath = reply.body[0] as string;
    const already = early.get(jobPath);
    if (already !== undefined) resolveJob(already);
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([jobDone, new Promise<string>((r) => (timer = setTimeout(() => r('timeout'), 25_000)))]);
    clearTimeout(timer);
    bus.off('message', onMessage);
    if (result !== 'done') throw new UserError(`failed to allocate scope ${this.scopeName}: job ${result}`);
    this.done = 'scope';
  }

  /** Undo at exit: UnregisterMachine (CreateMachine/RegisterMachine) or AbandonScope; always closes the bus. */
  async stop(): Promise<void> {
    if (!this.done && !this.bus) return;
    const { call, connectBus, systemBusAddress } = await import('../dbus/bus.js');
    if (!this.bus) {
      this.bus = connectBus(systemBusAddress());
      this.bus.on('error', () => undefined);
    }
    try {
      if (this.done === 'machine') {
        await call(this.bus, {
          destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager',
          member: 'UnregisterMachine', signature: 's', body: [this.base.machineName], timeoutMs: 5000,
        }).catch(() => undefined);
      } else if (this.done === 'scope') {
        await call(this.bus, {
          destination: 'org.freedesktop.systemd1', path: '/org/freedesktop/systemd1', interface: 'org.freedesktop.systemd1.Manager',
          member: 'AbandonScope', signature: 's', body: [this.scopeName], timeoutMs: 5000,
        }).catch(() => undefined);
      }
    } finally {
      this.done = null;
      await this.close();
    }
  }

  /**
   * Close the connection now. Its socket (usocket) has no FD_CLOEXEC, and disconnect() only
   * half-closes it: it would survive the execve() into the supervisor as a bus connection that
   * nobody reads. So the stream is destroyed (a synchronous close) as soon as it is not needed.
   */
  private async close(): Promise<void> {
    const bus = this.bus;
    this.bus = null;
    if (!bus) return;
    bus.disconnect();
    (bus as unknown as { _connection?: { stream?: { destroy?: () => void } } })._connection?.stream?.destroy?.();
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function busErrorText(err: unknown): string {
  if (err instanceof UserError) return err.message;
  const e = err as { type?: string; text?: string; message?: string };
  if (e.type && e.text) return `${e.text} (${e.type})`;
  return e.message?.split('\n')[0] ?? String(err);
}
