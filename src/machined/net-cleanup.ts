// When a machine leaves the registry, remove what mctl's launcher set up for its network (host
// links, nftables rules, state files) — the launcher's own watcher normally does this, but it may
// have been killed with the launcher (a unit's cgroup being cleaned up, kill -9 of everything).
// src/net is imported on first use so that the service's start stays lean.

/** The launcher's lock can outlive the leader by a moment (the supervisor reaps, then exits). */
const LOCK_WAIT_TRIES = 20;
const LOCK_WAIT_MS = 250;

export async function collectMachineNetwork(name: string, log: (line: string) => void): Promise<void> {
  try {
    const net = await import('../net/index.js');
    // Most machines have no network state of ours: decide that without touching any lock.
    if (!net.readMachineNetState(name)) return;
    for (let i = 0; ; i++) {
      const result = await net.collect(name);
      if (result === 'collected') log(`Removed the network of machine ${name}.`);
      if (result !== 'running' || i >= LOCK_WAIT_TRIES) return;
      await new Promise((resolve) => setTimeout(resolve, LOCK_WAIT_MS));
    }
  } catch (err) {
    log(`Failed to remove the network of machine ${name}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
