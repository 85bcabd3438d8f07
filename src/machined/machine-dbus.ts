// org.freedesktop.machine1.Machine objects (systemd's machine-dbus.c): properties of a Machine
// record and the per-machine methods, which the Manager's *Machine methods share.
import { BusError, ERR } from './errors.js';
import type { CallContext, HandlerResult, InterfaceImpl } from './bus-objects.js';
import { addresses, bindMount, copy, openLogin, openPty, openRootDirectory, openShell, osRelease, uidShift } from './container.js';
import { MACHINE_INTERFACE } from './interfaces.js';
import { machineState, type Machine } from './machine.js';
import type { MachinedContext } from './context.js';

/** The per-machine operations, shared by Machine.X and Manager.XMachine(name, …). */
export function machineOperations(ctx: MachinedContext) {
  return {
    async terminate(m: Machine): Promise<unknown[]> {
      await ctx.registry.terminate(m);
      return [];
    },
    async kill(m: Machine, who: string, signal: number): Promise<unknown[]> {
      await ctx.registry.kill(m, who, signal);
      return [];
    },
    async getAddresses(m: Machine): Promise<unknown[]> {
      return [await addresses(m)];
    },
    getOSRelease(m: Machine): unknown[] {
      return [osRelease(m)];
    },
    getUIDShift(m: Machine): unknown[] {
      return [uidShift(m)];
    },
    openPTY(m: Machine): HandlerResult {
      const pty = openPty(m);
      return { body: [pty.fd, pty.path], closeFds: [pty.fd] };
    },
    async openLogin(m: Machine): Promise<HandlerResult> {
      const pty = await openLogin(m);
      return { body: [pty.fd, pty.path], closeFds: [pty.fd] };
    },
    async openShell(m: Machine, user: string, path: string, args: string[], environment: string[]): Promise<HandlerResult> {
      const pty = await openShell(m, { user, path, args, environment });
      return { body: [pty.fd, pty.path], closeFds: [pty.fd] };
    },
    async bindMount(m: Machine, source: string, destination: string, readOnly: boolean, mkdir: boolean): Promise<unknown[]> {
      await bindMount(m, source, destination, readOnly, mkdir);
      return [];
    },
    async copy(m: Machine, direction: 'from' | 'to', source: string, destination: string, flags: bigint): Promise<unknown[]> {
      await copy(m, direction, source, destination, flags);
      return [];
    },
    openRootDirectory(m: Machine): HandlerResult {
      const fd = openRootDirectory(m);
      return { body: [fd], closeFds: [fd] };
    },
  };
}

export type MachineOperations = ReturnType<typeof machineOperations>;

/** dbus-next hands 't' over as bigint or a Long-like object; normalise. */
export function toBigInt(v: unknown): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return BigInt(v);
  return BigInt(String(v));
}

function ensureLive(ctx: MachinedContext, m: Machine): Machine {
  // An object reference may outlive its machine between resolve and call.
  if (ctx.registry.get(m.name) !== m) throw new BusError(ERR.NoSuchMachine, `No machine '${m.name}' known`);
  return m;
}

export function machineInterface(ctx: MachinedContext, ops: MachineOperations, guard: (name: string, call: CallContext) => Promise<void>): InterfaceImpl<Machine> {
  const wrap =
    <A extends unknown[]>(name: string, fn: (m: Machine, ...args: A) => Promise<HandlerResult | unknown[]> | HandlerResult | unknown[]) =>
    async (m: Machine, args: unknown[], call: CallContext): Promise<HandlerResult | unknown[]> => {
      await guard(name, call);
      return fn(ensureLive(ctx, m), ...(args as A));
    };
  return {
    spec: MACHINE_INTERFACE,
    methods: {
      Terminate: wrap('Terminate', (m) => ops.terminate(m)),
      Kill: wrap('Kill', (m, who: string, sig: number) => ops.kill(m, who, sig)),
      GetAddresses: wrap('GetAddresses', (m) => ops.getAddresses(m)),
      GetOSRelease: wrap('GetOSRelease', (m) => ops.getOSRelease(m)),
      GetUIDShift: wrap('GetUIDShift', (m) => ops.getUIDShift(m)),
      OpenPTY: wrap('OpenPTY', (m) => ops.openPTY(m)),
      OpenLogin: wrap('OpenLogin', (m) => ops.openLogin(m)),
      OpenShell: wrap('OpenShell', (m, user: string, path: string, args: string[], env: string[]) => ops.openShell(m, user, path, args, env)),
      BindMount: wrap('BindMount', (m, s: string, d: string, ro: boolean, mk: boolean) => ops.bindMount(m, s, d, ro, mk)),
      CopyFrom: wrap('CopyFrom', (m, s: string, d: string) => ops.copy(m, 'from', s, d, 0n)),
      CopyTo: wrap('CopyTo', (m, s: string, d: string) => ops.copy(m, 'to', s, d, 0n)),
      CopyFromWithFlags: wrap('CopyFromWithFlags', (m, s: string, d: string, f: unknown) => ops.copy(m, 'from', s, d, toBigInt(f))),
      CopyToWithFlags: wrap('CopyToWithFlags', (m, s: string, d: string, f: unknown) => ops.copy(m, 'to', s, d, toBigInt(f))),
      OpenRootDirectory: wrap('OpenRootDirectory', (m) => ops.openRootDirectory(m)),
    },
    properties: {
      Name: (m) => m.name,
      Id: (m) => m.id,
      Timestamp: (m) => m.realtimeUsec,
      TimestampMonotonic: (m) => m.monotonicUsec,
      Service: (m) => m.service,
      Unit: (m) => m.unit,
      Scope: (m) => m.unit,
      Leader: (m) => m.leader,
      Class: (m) => m.class,
      RootDirectory: (m) => m.rootDirectory,
      NetworkInterfaces: (m) => m.netifs,
      State: (m) => machineState(m),
    },
  };
}
