// Scope backend for hosts without systemd on the bus: machined creates
// machine.slice/machine-NAME.scope itself in every tracking hierarchy (cgroup2, or the hybrid
// name=systemd + cgroup2 pair), moves the leader in, and notices the end of a machine through
// cgroup.events ("populated 0", inotify) and the leader's pidfd. Stopping follows systemd's
// scope semantics: RequestStop to the scope's Controller= when it has one, else KillSignal= to
// every process; SIGKILL for what is left after the stop timeout.
import { readFileSync, readdirSync, readlinkSync, watch as fsWatch, type FSWatcher } from 'node:fs';
import { constants as osConstants } from 'node:os';
import {
  attachProcess,
  cgroupEventsFile,
  cgroupExists,
  cgroupHierarchies,
  cgroupPids,
  cgroupPopulated,
  createCgroup,
  enableControllers,
  pidCgroup,
  removeCgroup,
  removeCgroupAsync,
  trackingDirs,
  unitOfCgroup,
} from '../../sys/cgroup.js';
import dbus, { type MessageBus } from 'dbus-next';
import { call } from '../../dbus/bus.js';
import { busLabelEscape, unitNameEscape } from '../../dbus/escape.js';
import { BusError, ERR } from '../errors.js';
import { LeaderWatch } from '../leader-watch.js';
import type { Machine } from '../machine.js';
import type { ChangeListener, ScopeBackend, ScopeProperty } from './backend.js';

export const MACHINE_SLICE = 'machine.slice';

export function scopeUnitName(machineName: string): string {
  return `machine-${unitNameEscape(machineName)}.scope`;
}

interface Watched {
  fsWatcher: FSWatcher | undefined;
  killTimer: NodeJS.Timeout | undefined;
}

function stopTimeoutMs(): number {
  const v = Number(process.env['MCTL_MACHINED_STOP_TIMEOUT_SEC'] ?? '90');
  return (Number.isFinite(v) && v >= 0 ? v : 90) * 1000;
}

function signalAll(pids: readonly number[], signal: number): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // exited in the meantime
    }
  }
}

/**
 * Who gets a stop's first signal. When the unit holds the container's launcher next to the
 * container (nspawn under --keep-unit, as in container@.service), only the processes outside
 * the container's PID namespace: the launcher shuts its container down, as the unit's
 * KillMode=mixed has systemd do. Signalling the guest too made its systemd re-execute on SIGTERM
 * instead of halting (and killed its services unordered), so the halt could be lost and the
 * stop end in SIGKILL after the timeout. Otherwise every process, as a scope stop does.
 */
function firstStopTargets(pids: readonly number[], leader: number): number[] {
  const pidns = (pid: number): string | null => {
    try {
      return readlinkSync(`/proc/${pid}/ns/pid`);
    } catch {
      return null;
    }
  };
  const guest = leader > 1 ? pidns(leader) : null;
  if (!guest || guest === pidns(process.pid)) return [...pids];
  const outside = pids.filter((p) => {
    const ns = pidns(p);
    return ns !== null && ns !== guest;
  });
  return outside.length > 0 ? outside : [...pids];
}

export class CgroupfsBackend implements ScopeBackend {
  readonly kind = 'cgroupfs' as const;
  private readonly leaders = new LeaderWatch();
  private readonly watched = new Map<string, Watched>();
  /** KillSignal= given in CreateMachine's scope properties, per machine. */
  private readonly killSignals = new Map<string, number>();
  /** Controller= given in CreateMachine's scope properties (a unique bus name), per machine. */
  private readonly controllers = new Map<string, string>();
  /** Machines whose leader's pidfd reported its exit. */
  private readonly exited = new Set<string>();
  /**
   * Scopes of ours whose machine was released while processes still lived there
   * (UnregisterMachine): removed once empty, as systemd collects such a scope unit.
   */
  private readonly lingering = new Map<string, FSWatcher>();

  /** `bus`: where a scope's Controller= is asked to stop it (RequestStop), as systemd does. */
  constructor(
    private readonly onChange: ChangeListener,
    private readonly bus?: MessageBus,
  ) {}

  describe(): string {
    const h = cgroupHierarchies();
    const where = [h.unified && `cgroup2 at ${h.unified}`, h.systemd && `name=systemd at ${h.systemd}`].filter(Boolean).join(', ');
    return `cgroupfs (${h.layout} layout: ${where || 'no tracking hierarchy found'})`;
  }

  async startScope(m: Machine, properties: readonly ScopeProperty[]): Promise<void> {
    const h = cgroupHierarchies();
    if (!h.unified && !h.systemd) throw new BusError(ERR.NotSupported, 'No cgroup hierarchy to create the machine scope in.');
    let slice = MACHINE_SLICE;
    for (const [key, variant] of properties) {
      if (key === 'Slice' && typeof variant.value === 'string' && /^[A-Za-z0-9:_.\\-]+\.slice$/.test(variant.value)) slice = variant.value;
      if (key === 'KillSignal' && typeof variant.value === 'number') this.killSignals.set(m.name, variant.value);
      if (key === 'Controller' && typeof variant.value === 'string' && variant.value !== '') this.controllers.set(m.name, variant.value);
    }
    const unit = scopeUnitName(m.name);
    const cgroup = `${sliceCgroupPath(slice)}/${unit}`;
    if (cgroupExists(cgroup) && cgroupPopulated(cgroup)) {
      throw new BusError('org.freedesktop.systemd1.UnitExists', `Unit ${unit} already exists.`);
    }
    this.stopLingering(cgroup); // an empty leftover directory of this name is reused
    createCgroup(cgroup);
    try {
      enableControllers(cgroup);
      attachProcess(cgroup, m.leader);
    } catch (err) {
      removeCgroup(cgroup);
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw new BusError(ERR.InvalidArgs, `Leader PID ${m.leader} is gone.`);
      throw err;
    }
    m.unit = unit;
    m.cgroup = cgroup;
    m.ownsScope = true;
    await saveStopSettings(cgroup, this.controllers.get(m.name), this.killSignals.get(m.name));
  }

  async adopt(m: Machine): Promise<void> {
    const cgroup = pidCgroup(m.leader);
    if (cgroup === undefined) throw new BusError(ERR.InvalidArgs, `Failed to determine unit of process ${m.leader}: No such process`);
    const unit = unitOfCgroup(cgroup);
    m.ownsScope = false;
    if (unit) {
      m.unit = unit;
      m.cgroup = cgroup.slice(0, cgroup.indexOf(`/${unit}`) + unit.length + 1);
    } else {
      // No unit around the leader (the host runs no service manager): track the leader alone.
      m.unit = '';
      m.cgroup = '';
    }
  }

  watch(m: Machine): void {
    this.unwatch(m);
    const w: Watched = { fsWatcher: undefined, killTimer: undefined };
    this.watched.set(m.name, w);
    const events = m.cgroup ? cgroupEventsFile(m.cgroup) : undefined;
    if (events) {
      try {
        w.fsWatcher = fsWatch(events, () => {
          if (!cgroupPopulated(m.cgroup)) this.onChange(m);
        });
        w.fsWatcher.on('error', () => this.onChange(m));
      } catch {
        // the cgroup vanished before we looked: GC will find it empty
      }
    }
    this.exited.delete(m.name);
    const onExit = (): void => {
      this.exited.add(m.name);
      this.onChange(m);
    };
    if (m.leader > 1 && !this.leaders.watch(m.leader, onExit)) {
      this.exited.add(m.name);
      // Leader already dead: let GC decide right away.
      queueMicrotask(() => this.onChange(m));
    }
  }

  unwatch(m: Machine): void {
    const w = this.watched.get(m.name);
    if (!w) return;
    w.fsWatcher?.close();
    if (w.killTimer) clearTimeout(w.killTimer);
    this.watched.delete(m.name);
    this.leaders.unwatch(m.leader);
  }

  async isActive(m: Machine): Promise<boolean> {
    if (m.cgroup) return cgroupPopulated(m.cgroup);
    if (m.leader <= 1) return false;
    if (this.leaders.isWatched(m.leader)) return true;
    // Not watched (any more): alive if the PID still runs (a zombie does not count); the
    // registry has already checked at reload that it is the same process (start time).
    return !this.exited.has(m.name) && processRunning(m.leader);
  }

  async stop(m: Machine): Promise<void> {
    // A scope with a controller (mctl-nspawn's supervisor, systemd-nspawn) is asked to stop
    // instead of being signalled, as systemd's scope stop does: the controller sends the kill
    // signal to the container's PID 1 alone, so a booted system shuts down cleanly.
    if (!(await this.requestStop(m))) {
      const saved = m.cgroup ? Number(await loadStopSetting(m.cgroup, XATTR_KILL_SIGNAL)) : NaN;
      const signal = this.killSignals.get(m.name) ?? (saved > 0 ? saved : osConstants.signals.SIGTERM);
      const pids = m.cgroup ? firstStopTargets(cgroupPids(m.cgroup), m.leader) : [m.leader];
      signalAll(pids, signal);
      signalAll(pids, osConstants.signals.SIGCONT);
    }
    const w = this.watched.get(m.name);
    if (w && !w.killTimer) {
      // Like a unit's TimeoutStopSec: whatever ignores the first signal gets SIGKILL.
      w.killTimer = setTimeout(() => {
        signalAll(m.cgroup ? cgroupPids(m.cgroup) : [m.leader], osConstants.signals.SIGKILL);
        setTimeout(() => this.onChange(m), 200).unref();
      }, stopTimeoutMs());
      w.killTimer.unref();
    }
  }

  /** Send org.freedesktop.systemd1.Scope.RequestStop to the scope's controller; false if there is none on the bus. */
  private async requestStop(m: Machine): Promise<boolean> {
    const controller = this.controllers.get(m.name) ?? (m.cgroup ? await loadStopSetting(m.cgroup, XATTR_CONTROLLER) : undefined);
    if (!controller || !this.bus || !m.unit) return false;
    try {
      const owner = await call(this.bus, {
        destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus',
        member: 'NameHasOwner', signature: 's', body: [controller], timeoutMs: 5000,
      });
      // systemd forgets a controller that left the bus and kills the scope itself
      if (owner.body[0] !== true) return false;
      this.bus.send(new dbus.Message({
        type: dbus.MessageType.SIGNAL, destination: controller, path: `/org/freedesktop/systemd1/unit/${busLabelEscape(m.unit)}`,
        interface: 'org.freedesktop.systemd1.Scope', member: 'RequestStop',
      }));
      return true;
    } catch {
      return false;
    }
  }

  async kill(m: Machine, whom: 'leader' | 'all', signal: number): Promise<void> {
    if (whom === 'leader' || !m.cgroup) {
      if (!this.leaders.signal(m.leader, signal)) process.kill(m.leader, signal);
      return;
    }
    signalAll(cgroupPids(m.cgroup), signal);
  }

  async release(m: Machine): Promise<void> {
    this.unwatch(m);
    this.killSignals.delete(m.name);
    this.controllers.delete(m.name);
    this.exited.delete(m.name);
    // Only the scopes we created are ours to remove, and only once nothing lives there.
    if (!m.ownsScope || !m.cgroup) return;
    if (!cgroupPopulated(m.cgroup)) {
      try {
        await removeCgroupAsync(m.cgroup);
      } catch {
        // EBUSY: a process slipped in; the next start of this name reuses the directory
      }
      return;
    }
    this.lingerUntilEmpty(m.cgroup);
  }

  private lingerUntilEmpty(cgroup: string): void {
    const events = cgroupEventsFile(cgroup);
    if (!events || this.lingering.has(cgroup)) return; // without cgroup.events: sweepOrphans at the next start
    try {
      const watcher = fsWatch(events, () => {
        if (cgroupPopulated(cgroup)) return;
        this.stopLingering(cgroup);
        removeCgroupAsync(cgroup).catch(() => undefined);
      });
      watcher.on('error', () => this.stopLingering(cgroup));
      this.lingering.set(cgroup, watcher);
    } catch {
      return; // gone meanwhile
    }
    // It may have emptied between the check and the watch.
    if (!cgroupPopulated(cgroup)) {
      this.stopLingering(cgroup);
      removeCgroupAsync(cgroup).catch(() => undefined);
    }
  }

  private stopLingering(cgroup: string): void {
    this.lingering.get(cgroup)?.close();
    this.lingering.delete(cgroup);
  }

  async sweepOrphans(owned: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    const slice = sliceCgroupPath(MACHINE_SLICE);
    const names = new Set<string>();
    for (const dir of trackingDirs(slice)) {
      try {
        for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory() && /^machine-.+\.scope$/.test(e.name)) names.add(e.name);
      } catch {
        // no machine.slice yet
      }
    }
    for (const unit of names) {
      const cgroup = `${slice}/${unit}`;
      if (owned.has(unit) || cgroupPopulated(cgroup)) continue;
      try {
        removeCgroup(cgroup);
        removed.push(unit);
      } catch {
        // busy: leave it
      }
    }
    return removed;
  }

  async close(): Promise<void> {
    for (const cgroup of [...this.lingering.keys()]) this.stopLingering(cgroup);
    for (const w of this.watched.values()) {
      w.fsWatcher?.close();
      if (w.killTimer) clearTimeout(w.killTimer);
    }
    this.watched.clear();
    this.leaders.close();
  }
}

// The scope's Controller= and KillSignal= also live on its cgroup directory (trusted xattrs, as
// systemd keeps trusted.invocation_id there), so a restarted service still stops the machine the
// way its scope asked for; the supervisor follows machine1's new owner itself.
const XATTR_CONTROLLER = 'trusted.mctl.controller';
const XATTR_KILL_SIGNAL = 'trusted.mctl.kill-signal';

async function saveStopSettings(cgroup: string, controller: string | undefined, killSignal: number | undefined): Promise<void> {
  if (controller === undefined && killSignal === undefined) return;
  const dir = trackingDirs(cgroup)[0];
  if (!dir) return;
  try {
    const { lsetxattr } = await import('../../sys/libc.js');
    if (controller !== undefined) lsetxattr(dir, XATTR_CONTROLLER, Buffer.from(controller));
    if (killSignal !== undefined) lsetxattr(dir, XATTR_KILL_SIGNAL, Buffer.from(String(killSignal)));
  } catch {
    // no xattrs on this cgroupfs: the in-memory copy serves until a restart
  }
}

async function loadStopSetting(cgroup: string, name: string): Promise<string | undefined> {
  const dir = trackingDirs(cgroup)[0];
  if (!dir) return undefined;
  try {
    const { lgetxattr } = await import('../../sys/libc.js');
    return lgetxattr(dir, name)?.toString() || undefined;
  } catch {
    return undefined;
  }
}

/** Whether PID exists and is not a zombie (state Z/X in /proc/PID/stat). */
function processRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** "a-b-c.slice" lives at /a.slice/a-b.slice/a-b-c.slice, as systemd nests slices. */
export function sliceCgroupPath(slice: string): string {
  if (slice === '-.slice') return '';
  const base = slice.slice(0, -'.slice'.length);
  const parts = base.split('-');
  const out: string[] = [];
  for (let i = 1; i <= parts.length; i++) out.push(`${parts.slice(0, i).join('-')}.slice`);
  return '/' + out.join('/');
}
