// Where a machine's processes live and how they are stopped: a scope backend. Two exist, like
// systemd-machined's single one split by what the host offers: systemd1 (ask PID 1 for a
// transient scope over D-Bus) and cgroupfs (no systemd on the bus: make the cgroups ourselves).
import type { Variant } from 'dbus-next';
import type { Machine } from '../machine.js';

export type ScopeProperty = [string, Variant];

export type BackendKind = 'systemd1' | 'cgroupfs';

export interface ScopeBackend {
  readonly kind: BackendKind;
  /** One line for --version/status: which backend and what it found. */
  describe(): string;
  /**
   * CreateMachine: put the leader into a new machine-NAME.scope under machine.slice. Resolves
   * once the scope is running (systemd1: JobRemoved with result "done"); sets m.unit/m.cgroup.
   */
  startScope(m: Machine, properties: readonly ScopeProperty[]): Promise<void>;
  /** RegisterMachine: adopt the unit the leader already runs in; sets m.unit/m.cgroup. */
  adopt(m: Machine): Promise<void>;
  /** Begin watching a started or reloaded machine; changes are reported through onChange. */
  watch(m: Machine): void;
  unwatch(m: Machine): void;
  /** Whether the machine's unit still has life in it (false = collectable). */
  isActive(m: Machine): Promise<boolean>;
  /** TerminateMachine: stop the unit (kills its processes). */
  stop(m: Machine): Promise<void>;
  /** KillMachine: signal the leader or every process of the unit. */
  kill(m: Machine, whom: 'leader' | 'all', signal: number): Promise<void>;
  /** The machine is gone from the registry: drop our reference / leftover cgroups. */
  release(m: Machine): Promise<void>;
  /** After reload: remove empty machine scopes left by a crash that no machine owns any more. */
  sweepOrphans(owned: ReadonlySet<string>): Promise<string[]>;
  close(): Promise<void>;
}

/** Called by a backend when something about a machine changed and GC should look at it. */
export type ChangeListener = (m: Machine) => void;
