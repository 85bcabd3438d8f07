// Wires the service together: bus connection, scope backend (chosen by what the bus offers),
// registry, caller credentials, object tree and dispatcher; then claims the bus name.
import type { Message, MessageBus } from 'dbus-next';
import { busLabelEscape, busLabelUnescape } from '../dbus/escape.js';
import { call, connectBus, systemBusAddress } from '../dbus/bus.js';
import { CallerCredentials } from './access.js';
import { ObjectDispatcher, type CallContext, type InterfaceImpl, type ObjectTree, type ResolvedObject } from './bus-objects.js';
import type { MachinedContext } from './context.js';
import { imageChildren, imageFromPath, imageInterface } from './image-dbus.js';
import { MANAGER_INTERFACE, UNPRIVILEGED_METHODS } from './interfaces.js';
import { IMAGE_PATH_PREFIX, MACHINE_PATH_PREFIX, MANAGER_PATH, machinePath, type Machine } from './machine.js';
import { machineInterface, machineOperations } from './machine-dbus.js';
import { managerInterface } from './manager-dbus.js';
import { collectMachineNetwork } from './net-cleanup.js';
import { Registry } from './registry.js';
import type { ScopeBackend } from './scope/backend.js';
import { CgroupfsBackend } from './scope/cgroupfs.js';
import { Systemd1Backend, SYSTEMD1_DESCRIPTION, systemdOnBus } from './scope/systemd1.js';
import { StateStore } from './state-file.js';

export const BUS_NAME = 'org.freedesktop.machine1';

export type BackendChoice = 'auto' | 'systemd1' | 'cgroupfs';

export interface ServiceOptions {
  backend: BackendChoice;
  stateDir: string;
  log: (line: string) => void;
}

export interface RunningService {
  bus: MessageBus;
  registry: Registry;
  backend: ScopeBackend;
  stop(): Promise<void>;
}

async function chooseBackend(bus: MessageBus, choice: BackendChoice, onChange: (m: Machine) => void, onReload: () => void): Promise<ScopeBackend> {
  const useSystemd = choice === 'systemd1' || (choice === 'auto' && (await systemdOnBus(bus)));
  if (useSystemd) return Systemd1Backend.create(bus, onChange, onReload);
  return new CgroupfsBackend(onChange, bus);
}

export async function startService(options: ServiceOptions): Promise<RunningService> {
  const bus = connectBus();
  const disconnected = new Promise<never>((_, reject) => {
    bus.on('error', (err: Error) => reject(new Error(`lost the bus connection: ${err.message}`)));
  });
  disconnected.catch(() => undefined);
  // Hello completes before any call returns; a failed connect surfaces on this first call.
  await Promise.race([
    call(bus, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId', timeoutMs: 10_000 }),
    disconnected,
  ]);

  let registry: Registry | undefined;
  const backend = await chooseBackend(
    bus,
    options.backend,
    (m) => registry?.queueGc(m),
    () => registry?.list().forEach((m) => registry?.queueGc(m)),
  );
  const creds = new CallerCredentials(bus);
  await creds.start();

  let dispatcher: ObjectDispatcher | undefined;
  const store = new StateStore(options.stateDir);
  store.ensureDir();
  registry = new Registry(backend, store, {
    machineNew: (m) => dispatcher?.emitSignal(MANAGER_PATH, MANAGER_INTERFACE.name, 'MachineNew', 'so', [m.name, machinePath(m.name)]),
    machineRemoved: (m) => {
      dispatcher?.emitSignal(MANAGER_PATH, MANAGER_INTERFACE.name, 'MachineRemoved', 'so', [m.name, machinePath(m.name)]);
      void collectMachineNetwork(m.name, options.log);
    },
    log: options.log,
  });
  const ctx: MachinedContext = { registry, creds };
  const guard = async (method: string, c: CallContext): Promise<void> => {
    if (!UNPRIVILEGED_METHODS.has(method)) await creds.requireRoot(c.sender);
  };
  const ops = machineOperations(ctx);
  const manager = managerInterface(ctx, ops, guard) as InterfaceImpl<unknown>;
  const machine = machineInterface(ctx, ops, guard) as InterfaceImpl<unknown>;
  const image = imageInterface(guard) as InterfaceImpl<unknown>;
  const reg = registry;

  const tree: ObjectTree = {
    async resolve(path: string, c: CallContext): Promise<ResolvedObject | undefined> {
      if (path === MANAGER_PATH) return { interfaces: [{ impl: manager, target: null }] };
      if (path.startsWith(MACHINE_PATH_PREFIX)) {
        const label = path.slice(MACHINE_PATH_PREFIX.length);
        let m: Machine | undefined;
        if (label === 'self') m = reg.byPid(await creds.pid(c.sender));
        else if (label && !label.includes('/')) m = reg.get(busLabelUnescape(label));
        return m ? { interfaces: [{ impl: machine, target: m }] } : undefined;
      }
      if (path.startsWith(IMAGE_PATH_PREFIX)) {
        const img = imageFromPath(path);
        return img ? { interfaces: [{ impl: image, target: img }] } : undefined;
      }
      return undefined;
    },
    children(path: string): string[] {
      if (path === '/') return ['org'];
      if (path === '/org') return ['freedesktop'];
      if (path === '/org/freedesktop') return ['machine1'];
      if (path === MANAGER_PATH) return ['image', 'machine'];
      if (path === MANAGER_PATH + '/machine') return reg.list().map((m) => busLabelEscape(m.name));
      if (path === MANAGER_PATH + '/image') return imageChildren();
      return [];
    },
  };
  dispatcher = new ObjectDispatcher(bus, tree, options.log);

  registry.addHost();
  const { restored, collected } = await registry.loadState();
  if (restored.length || collected.length) options.log(`Restored ${restored.length} machine(s), collected ${collected.length} dead one(s).`);
  // Machines that died while the service was down may have left their network behind.
  for (const name of collected) void collectMachineNetwork(name, options.log);
  const swept = await backend.sweepOrphans(registry.ownedUnits());
  if (swept.length) options.log(`Removed ${swept.length} orphaned scope(s): ${swept.join(' ')}`);
  dispatcher.start();

  // DBUS_NAME_FLAG_DO_NOT_QUEUE: a second instance fails instead of waiting in line.
  const reply: Message = await call(bus, {
    destination: 'org.freedesktop.DBus',
    path: '/org/freedesktop/DBus',
    interface: 'org.freedesktop.DBus',
    member: 'RequestName',
    signature: 'su',
    body: [BUS_NAME, 4],
  });
  if (reply.body[0] !== 1 && reply.body[0] !== 4) {
    throw new Error(`the bus name ${BUS_NAME} is already owned by another process (is systemd-machined running?)`);
  }
  options.log(`Scope backend: ${backend.describe()}`);

  return {
    bus,
    registry,
    backend,
    async stop() {
      dispatcher?.stop();
      try {
        await call(bus, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'ReleaseName', signature: 's', body: [BUS_NAME], timeoutMs: 2000 });
      } catch {
        // exiting anyway
      }
      await reg.close();
      bus.disconnect();
    },
  };
}

/** Which backend would run on this bus (for --version): probes without claiming anything. */
export async function probeBackend(): Promise<string> {
  const bus = connectBus();
  const failed = new Promise<string>((resolve) => bus.on('error', (err: Error) => resolve(`unknown (cannot connect to the system bus at ${systemBusAddress()}: ${(err as NodeJS.ErrnoException).code ?? err.message})`)));
  try {
    const probe = systemdOnBus(bus).then((yes) => (yes ? SYSTEMD1_DESCRIPTION : new CgroupfsBackend(() => undefined).describe()));
    const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('unknown (the system bus did not answer)'), 3000).unref());
    return await Promise.race([probe, failed, timeout]);
  } finally {
    bus.disconnect();
  }
}
