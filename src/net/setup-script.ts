// The whole network setup of one container as ONE process: forking this (large) Node process
// costs several ms per child, more than the tiny tools themselves, so instead of spawning ip,
// nsenter+ip, nft and the watcher one by one, a POSIX sh script runs them (nft in parallel with
// the ip batches) and starts the watcher at the end. Inputs travel in the environment.
import { runTool, ToolError } from './exec.js';

export interface SetupScript {
  /** Complete `nft -f` input, or null for no rules. */
  nft: string | null;
  /** `ip -batch` lines run on the host (link creation, addresses of the host side). */
  host: readonly string[];
  /** `ip -batch` lines run inside the container's network namespace (after `host`). */
  container: readonly string[];
  /** The container's network namespace file (/proc/PID/ns/net). */
  netns: string;
  /** Sysctls under /proc/sys/net written after the host batch (they may name new links). */
  sysctls: ReadonlyArray<readonly [string, string]>;
  /** Watcher started detached at the end: waits for this lock, then runs `argv`. */
  watcher: { lock: string; argv: readonly string[]; env: Record<string, string> } | null;
}

// Exit codes name the step that failed.
const FAILED: Record<number, string> = { 10: 'nft', 11: 'ip', 12: 'ip (in the container)', 13: 'sysctl' };

const SCRIPT = `
nft_pid=; rc=0
if [ -n "$MCTL_NFT" ]; then printf '%s' "$MCTL_NFT" | nft -f - & nft_pid=$!; fi
printf '%s' "$MCTL_HOST" | ip -batch - || rc=11
if [ $rc = 0 ]; then
  for kv in $MCTL_SYSCTLS; do printf '%s' "\${kv#*=}" > "/proc/sys/net/\${kv%%=*}" || rc=13; done
fi
if [ $rc = 0 ] && [ -n "$MCTL_CONT" ]; then printf '%s' "$MCTL_CONT" | nsenter --net="$MCTL_NETNS" -- ip -batch - || rc=12; fi
if [ -n "$nft_pid" ]; then wait $nft_pid || { [ $rc = 0 ] && rc=10; }; fi
[ $rc = 0 ] || exit $rc
if [ -n "$MCTL_WATCH_LOCK" ]; then
  setsid sh -c 'flock -x "$0" true; exec "$@"' "$MCTL_WATCH_LOCK" "$@" </dev/null >/dev/null 2>&1 &
fi
exit 0
`;

/** Run it; on failure a ToolError named after the failing step, carrying its stderr. */
export async function runSetupScript(s: SetupScript): Promise<void> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...(s.watcher?.env ?? {}),
    MCTL_NFT: s.nft ?? '',
    MCTL_HOST: s.host.length ? s.host.join('\n') + '\n' : '',
    MCTL_CONT: s.container.length ? s.container.join('\n') + '\n' : '',
    MCTL_NETNS: s.netns,
    MCTL_SYSCTLS: s.sysctls.map(([k, v]) => `${k}=${v}`).join(' '),
    MCTL_WATCH_LOCK: s.watcher?.lock ?? '',
  };
  try {
    await runTool(['sh', '-c', SCRIPT, 'mctl-net-setup', ...(s.watcher?.argv ?? [])], undefined, env);
  } catch (err) {
    if (err instanceof ToolError && err.status !== null && FAILED[err.status]) throw new ToolError(FAILED[err.status] ?? 'sh', err.stderr, err.status);
    throw err;
  }
}
