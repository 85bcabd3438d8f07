// The process tree of a machine's control group, drawn like systemd-cgls under `mctl status`.
// Reads the hierarchy systemd itself uses: the unified one when /sys/fs/cgroup is cgroup2,
// else the named "systemd" v1 hierarchy (legacy and hybrid layouts).
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

interface Hierarchy {
  mount: string;
  /** The line prefix in /proc/PID/cgroup ("0::" or "N:name=systemd:"). */
  matches(line: string): string | undefined;
}

function hierarchy(): Hierarchy {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    return { mount: '/sys/fs/cgroup', matches: (l) => (l.startsWith('0::') ? l.slice(3) : undefined) };
  }
  return {
    mount: '/sys/fs/cgroup/systemd',
    matches: (l) => {
      const m = /^\d+:name=systemd:(.*)$/.exec(l);
      return m ? m[1] : undefined;
    },
  };
}

/** The cgroup path of a process in systemd's hierarchy, or undefined if it is gone. */
export function cgroupOfPid(pid: number): string | undefined {
  try {
    const h = hierarchy();
    for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
      const p = h.matches(line);
      if (p !== undefined) return p;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** The unit's cgroup: the leader's path cut after the component named like the unit. */
export function unitCgroupFromLeader(leader: number, unit: string): string | undefined {
  const path = cgroupOfPid(leader);
  if (!path) return undefined;
  const parts = path.split('/');
  const i = parts.indexOf(unit);
  return i > 0 ? parts.slice(0, i + 1).join('/') : path;
}

/**
 * Without a unit name: the leader's cgroup minus the layers a container init creates below its
 * delegated cgroup (nspawn's "payload", the guest systemd's "init.scope").
 */
export function containerCgroupFromLeader(leader: number): string | undefined {
  let path = cgroupOfPid(leader);
  if (!path) return undefined;
  for (const layer of ['/init.scope', '/payload']) if (path.endsWith(layer)) path = path.slice(0, -layer.length);
  return path || '/';
}

function commandLine(pid: number): string {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`);
    const args = raw.toString('utf8').split('\0').filter((s) => s.length > 0);
    if (args.length > 0) return args.join(' ');
    return `[${readFileSync(`/proc/${pid}/comm`, 'utf8').trim()}]`;
  } catch {
    return '(gone)';
  }
}

function pidsIn(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((s) => s.length > 0)
      .map(Number)
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

function children(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
  } catch {
    return [];
  }
}

/** Lines of the tree below `cgroupPath` (not including the root line). */
export function cgroupTreeLines(cgroupPath: string, maxWidth = Infinity): string[] {
  const root = join(hierarchy().mount, cgroupPath);
  if (!existsSync(root)) return [];
  const out: string[] = [];
  const cut = (s: string) => (s.length > maxWidth ? `${s.slice(0, Math.max(0, maxWidth - 1))}…` : s);
  const walk = (dir: string, prefix: string): void => {
    const pids = pidsIn(dir);
    // Empty sub-cgroups are left out, as systemd-cgls does.
    const subs = children(dir).filter((c) => hasProcesses(join(dir, c)));
    const items: ({ pid: number } | { sub: string })[] = [...pids.map((pid) => ({ pid })), ...subs.map((sub) => ({ sub }))];
    items.forEach((item, i) => {
      const last = i === items.length - 1;
      const branch = last ? '└─' : '├─';
      if ('pid' in item) out.push(cut(`${prefix}${branch}${item.pid} ${commandLine(item.pid)}`));
      else {
        out.push(cut(`${prefix}${branch}${item.sub}`));
        walk(join(dir, item.sub), prefix + (last ? '  ' : '│ '));
      }
    });
  };
  walk(root, '');
  return out;
}

function hasProcesses(dir: string): boolean {
  if (pidsIn(dir).length > 0) return true;
  return children(dir).some((c) => hasProcesses(join(dir, c)));
}
