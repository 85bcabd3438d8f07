// What a failed or finished container start must not leave on the host: mounts and cgroups.
import { existsSync, readFileSync, readdirSync } from 'node:fs';

/**
 * Mounts mentioning `tree` or `mountTag`, and top-level cgroups named `cgroupPrefix*`, as one
 * comparable string (mounts, then `--`, then cgroups). Only what could be ours is listed: other
 * tests mount and unmount concurrently.
 */
export function launcherHostState(tree: string, mountTag: string, cgroupPrefix: string): string {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ').slice(3, 5).join(' '))
    .filter((m) => m.includes(tree) || m.includes(mountTag))
    .sort()
    .join('\n');
  const cgroups = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd', '/sys/fs/cgroup']
    .filter((d) => existsSync(d))
    .flatMap((d) => readdirSync(d).filter((n) => n.startsWith(cgroupPrefix)).map((n) => `${d}/${n}`))
    .join('\n');
  return `${mounts}\n--\n${cgroups}`;
}
