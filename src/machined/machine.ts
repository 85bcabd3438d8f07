// A registered machine: the record machined keeps (machine.c's Machine), apart from its D-Bus
// surface (machine-dbus.ts) and its scope backend.
import { busLabelEscape } from '../dbus/escape.js';

export type MachineClass = 'container' | 'vm' | 'host';
export type MachineState = 'opening' | 'running' | 'closing';

export const MANAGER_PATH = '/org/freedesktop/machine1';
export const MACHINE_PATH_PREFIX = '/org/freedesktop/machine1/machine/';
export const IMAGE_PATH_PREFIX = '/org/freedesktop/machine1/image/';
export const HOST_NAME = '.host';

export interface Machine {
  name: string;
  /** 16 bytes, or empty when the caller gave none. */
  id: Buffer;
  service: string;
  class: MachineClass;
  leader: number;
  /** /proc/PID/stat start time of the leader, to tell it from a later process with its PID. */
  leaderStartTime: string;
  rootDirectory: string;
  netifs: number[];
  /** The unit holding the machine's processes (machine-NAME.scope, or the adopted unit). */
  unit: string;
  /** The cgroup path of that unit when known (cgroupfs backend), for kill/populated checks. */
  cgroup: string;
  /** Whether the scope was created by us (and so is ours to remove). */
  ownsScope: boolean;
  /** systemd1 job path while the scope start is pending. */
  scopeJob: string;
  realtimeUsec: bigint;
  monotonicUsec: bigint;
  /** True once stop was requested (State=closing). */
  stopping: boolean;
  /** True once the start finished (scope job done / adopted). */
  started: boolean;
}

export function machinePath(name: string): string {
  return MACHINE_PATH_PREFIX + busLabelEscape(name);
}

export function imagePath(name: string): string {
  return IMAGE_PATH_PREFIX + busLabelEscape(name);
}

export function machineState(m: Machine): MachineState {
  if (m.stopping) return 'closing';
  if (m.scopeJob) return 'opening';
  return 'running';
}

/** Current CLOCK_REALTIME and CLOCK_MONOTONIC in µs, like systemd's dual_timestamp. */
export function nowTimestamps(): { realtimeUsec: bigint; monotonicUsec: bigint } {
  const realtimeUsec = BigInt(Date.now()) * 1000n;
  // process.hrtime is CLOCK_MONOTONIC on Linux, the clock systemd's *Monotonic values use.
  const monotonicUsec = process.hrtime.bigint() / 1000n;
  return { realtimeUsec, monotonicUsec };
}

export function idHex(id: Buffer): string {
  return id.length === 16 ? id.toString('hex') : '';
}
