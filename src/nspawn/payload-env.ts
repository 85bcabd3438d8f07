// Pure pieces of the payload's start: who it runs as (from the container's own passwd/group
// files, never the host's NSS) and the environment PID 1 gets, in systemd-nspawn's order.
import { UserError } from '../common/errors.js';
import { DEFAULT_PATH, type ContainerSpec } from './spec.js';

export interface ResolvedUser {
  uid: number;
  gid: number;
  groups: number[];
  name: string;
  home: string;
  shell: string;
}

export const ROOT_USER: ResolvedUser = { uid: 0, gid: 0, groups: [], name: 'root', home: '/root', shell: '/bin/sh' };

/**
 * Resolve --user against the container's /etc/passwd and /etc/group contents (null if missing).
 * A name must exist; a bare number is accepted even without an entry (home "/").
 */
export function resolveUser(user: string | null, passwd: string | null, group: string | null): ResolvedUser {
  if (user === null || user === 'root' || user === '0') {
    const entry = user === null ? undefined : findPasswd(passwd, user);
    return entry ?? { ...ROOT_USER };
  }
  const entry = findPasswd(passwd, user);
  if (!entry) {
    if (/^\d+$/.test(user)) {
      const uid = Number(user);
      return { uid, gid: uid, groups: [], name: user, home: '/', shell: '/bin/sh' };
    }
    throw new UserError(`user '${user}' does not exist in the container`);
  }
  entry.groups = supplementaryGroups(group, entry.name, entry.gid);
  return entry;
}

function findPasswd(passwd: string | null, user: string): ResolvedUser | undefined {
  if (!passwd) return undefined;
  const numeric = /^\d+$/.test(user);
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f.length < 7) continue;
    const [name, , uid, gid, , home, shell] = f as [string, string, string, string, string, string, string];
    if (numeric ? uid === user : name === user) {
      return { uid: Number(uid), gid: Number(gid), groups: [], name, home: home || '/', shell: shell || '/bin/sh' };
    }
  }
  return undefined;
}

function supplementaryGroups(group: string | null, name: string, primary: number): number[] {
  const out = new Set<number>();
  for (const line of (group ?? '').split('\n')) {
    const f = line.split(':');
    if (f.length < 4) continue;
    const members = (f[3] ?? '').split(',').filter(Boolean);
    if (members.includes(name)) out.add(Number(f[2]));
  }
  out.delete(primary);
  return [...out].sort((a, b) => a - b);
}

/** UUID as 8-4-4-4-12 (nspawn's $container_uuid form) from 32 hex digits or an already dashed id. */
export function formatUuid(id: string): string {
  const hex = id.replace(/-/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new UserError(`invalid UUID '${id}'`);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The environment of the container's first process; spec.payload.env wins over the defaults. */
export function containerEnvironment(spec: ContainerSpec, user: ResolvedUser, term: string | undefined): string[] {
  const env = new Map<string, string>([
    ['PATH', DEFAULT_PATH],
    ['container', spec.containerManager],
    ['container_uuid', formatUuid(spec.uuid)],
    ['HOME', user.home],
    ['USER', user.name],
    ['LOGNAME', user.name],
    ['SHELL', user.shell],
    ['TERM', spec.console === 'pipe' ? (term ?? 'dumb') : term && term !== 'dumb' ? term : 'vt220'],
    ['NOTIFY_SOCKET', '/run/host/notify'],
  ]);
  for (const [k, v] of Object.entries(spec.payload.env)) env.set(k, v);
  return [...env].map(([k, v]) => `${k}=${v}`);
}
