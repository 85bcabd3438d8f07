// launch(spec, hooks): run a ContainerSpec. Implementation follows; this file fixes the hook interface.
import type { ContainerSpec } from './spec.js';

/**
 * Called after the container's namespaces exist and (with a user namespace) its uid/gid maps
 * are written, before any mount is made inside and before the payload runs. `leaderPid` is the
 * container's PID 1 as seen from the host. Used for veth moves and machine registration.
 * A hook that throws aborts the start: the container is killed and nothing is left behind.
 */
export interface LaunchHooks {
  afterNamespaces?: Array<(leaderPid: number) => Promise<void>>;
  /** Undo for what the hooks did, run when the start fails after them (reverse order). */
  onAbort?: Array<() => Promise<void>>;
}

export type { ContainerSpec };
