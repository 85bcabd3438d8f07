// Private user namespaces: --private-users= and --private-users-ownership= with nspawn's
// semantics (systemd.md §3.4). The policy lives here; the native helper (native/userns.c) picks
// a range for `pick` (lock files + NSS, next to the clone, so Node never loads koffi for it),
// creates the namespace with that map, and gives the container its root as an idmapped (map) or
// plain clone of the tree attached only inside the container's mount namespace.
import { lstatSync, lchownSync, chmodSync, readdirSync, statSync, statfsSync, mkdirSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../common/errors.js';
import { lgetxattr, lsetxattr } from '../sys/libc.js';
import type { UserNamespaceSpec } from './spec.js';

export const UID_RANGE = 0x10000;
export const UID_BASE_MIN = 0x00080000;
export const UID_BASE_MAX = 0x6fff0000;

export type PrivateUsers =
  | { mode: 'no' }
  | { mode: 'yes' } // shift read from the root directory's owner
  | { mode: 'pick' }
  | { mode: 'identity' }
  | { mode: 'fixed'; shift: number; range: number };

export type Ownership = 'off' | 'chown' | 'map' | 'auto';

function parseUid(text: string, what: string, spec: string): number {
  if (!/^\d+$/.test(text)) throw new UserError(`invalid --private-users '${spec}': bad ${what} '${text}'`);
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n > 0xfffffffe) throw new UserError(`invalid --private-users '${spec}': ${what} out of range`);
  return n;
}

/** --private-users=no|yes|pick|identity|UID[:COUNT] (booleans accepted as nspawn does). */
export function parsePrivateUsers(text: string): PrivateUsers {
  const t = text.trim();
  if (['no', 'false', 'off', '0'].includes(t)) return { mode: 'no' };
  if (['yes', 'true', 'on', '1'].includes(t)) return { mode: 'yes' };
  if (t === 'pick') return { mode: 'pick' };
  if (t === 'identity') return { mode: 'identity' };
  const [a, b, ...rest] = t.split(':');
  if (a === undefined || a === '' || rest.length) throw new UserError(`invalid --private-users '${text}'`, { hint: 'expected no, yes, pick, identity or UID[:COUNT]' });
  const shift = parseUid(a, 'UID', text);
  const range = b === undefined ? UID_RANGE : parseUid(b, 'count', text);
  if (range === 0) throw new UserError(`invalid --private-users '${text}': the range must not be empty`);
  if (shift + range > 0x100000000 - 1) throw new UserError(`invalid --private-users '${text}': UID range ends beyond 4294967294`);
  return { mode: 'fixed', shift, range };
}

export function parseOwnership(text: string): Ownership {
  if (text === 'off' || text === 'chown' || text === 'map' || text === 'auto') return text;
  throw new UserError(`invalid --private-users-ownership '${text}'`, { hint: 'expected off, chown, map or auto' });
}

export function uidLockDir(env: NodeJS.ProcessEnv = process.env): string {
  return env['MCTL_UID_LOCK_DIR'] || '/run/systemd/nspawn-uid';
}

/** The shift recorded by the root directory's owner (what an earlier chown left), or null. */
export function treeShift(root: string): number | null {
  const st = statSync(root);
  const shift = st.uid & 0xffff0000;
  if ((st.gid & 0xffff0000) >>> 0 !== shift >>> 0) return null;
  return shift >>> 0;
}

/** A range known before the start (null for pick, which the native helper resolves). */
export function fixedRange(setting: Exclude<PrivateUsers, { mode: 'no' }>, root: string): { shift: number; range: number } | null {
  switch (setting.mode) {
    case 'identity':
      return { shift: 0, range: UID_RANGE };
    case 'fixed':
      return { shift: setting.shift, range: setting.range };
    case 'yes': {
      const shift = treeShift(root);
      if (shift === null) throw new UserError(`--private-users=yes: the UID and GID of ${root} do not share one range`);
      return { shift, range: UID_RANGE };
    }
    case 'pick':
      return null;
  }
}

/** The host UID that the container's root maps to, from its leader's uid_map. */
export function leaderShift(pid: number): number {
  const [inside, outside] = readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/).map(Number);
  if (inside !== 0 || outside === undefined || !Number.isInteger(outside)) throw new Error(`unexpected uid_map of ${pid}`);
  return outside;
}

// ---------------------------------------------------------------------------------------------
// Ownership: chown (one recursive shift, recorded by the root's owner) or map (idmapped mount).

const ACL_USER = 0x02;
const ACL_GROUP = 0x08;
const ACL_XATTRS = ['system.posix_acl_access', 'system.posix_acl_default'];
const CAP_XATTR = 'security.capability';

function shiftId(id: number, shift: number): number {
  return ((id & 0xffff) | shift) >>> 0;
}

/** Shift the ids inside a POSIX ACL xattr (version 2: 4-byte header, 8-byte entries). */
function shiftAcl(value: Buffer, shift: number): Buffer {
  const out = Buffer.from(value);
  for (let off = 4; off + 8 <= out.length; off += 8) {
    const tag = out.readUInt16LE(off);
    if (tag === ACL_USER || tag === ACL_GROUP) out.writeUInt32LE(shiftId(out.readUInt32LE(off + 4), shift), off + 4);
  }
  return out;
}

/** File capabilities: chown drops them; rewrite as v3 with the container's root as rootid. */
function shiftedCaps(value: Buffer, shift: number): Buffer {
  const v3 = Buffer.alloc(24);
  value.copy(v3, 0, 0, Math.min(value.length, 20));
  const magic = v3.readUInt32LE(0);
  v3.writeUInt32LE((magic & 0x00ffffff) | 0x03000000, 0); // VFS_CAP_REVISION_3, keep the effective flag
  const oldRoot = value.length >= 24 ? value.readUInt32LE(20) : 0;
  v3.writeUInt32LE(shiftId(oldRoot, shift), 20);
  return v3;
}

export interface ChownStats {
  entries: number;
  skipped: boolean;
}

/**
 * Shift every owner in the tree into [shift, shift+0xFFFF] (lower 16 bits kept, as nspawn does,
 * so an already shifted tree can be re-shifted). setuid/setgid bits, ACLs and file capabilities
 * survive. Does nothing when the root already carries this shift. Stays on one filesystem.
 */
export function chownTree(root: string, shift: number): ChownStats {
  const rootSt = lstatSync(root);
  if ((rootSt.uid & 0xffff0000) >>> 0 === shift >>> 0 && (rootSt.gid & 0xffff0000) >>> 0 === shift >>> 0) return { entries: 0, skipped: true };
  let entries = 0;
  const dev = rootSt.dev;
  const visit = (path: string, isRoot: boolean): void => {
    const st = lstatSync(path);
    if (!isRoot && st.dev !== dev) return; // a mount point inside: not ours to change
    entries++;
    const isLink = st.isSymbolicLink();
    const caps = isLink ? null : lgetxattr(path, CAP_XATTR);
    const acls = isLink ? [] : ACL_XATTRS.map((n) => [n, lgetxattr(path, n)] as const);
    const uid = shiftId(st.uid, shift);
    const gid = shiftId(st.gid, shift);
    if (uid !== st.uid || gid !== st.gid) {
      lchownSync(path, uid, gid);
      // chown clears setuid/setgid on files: put the mode back.
      if (!isLink && st.mode & 0o6000) chmodSync(path, st.mode & 0o7777);
    }
    for (const [name, value] of acls) if (value) lsetxattr(path, name, shiftAcl(value, shift));
    if (caps) lsetxattr(path, CAP_XATTR, shiftedCaps(caps, shift));
    if (st.isDirectory()) for (const e of readdirSync(path)) visit(join(path, e), false);
  };
  // The root last-but-first: visit() changes the root's owner first, which records the shift;
  // an interrupted run is redone next time because children are checked individually anyway.
  visit(root, true);
  return { entries, skipped: false };
}

// statfs f_type of file systems that take idmapped mounts, and the kernel that brought it
// (ext4/xfs 5.12, btrfs 5.15, tmpfs 6.3). Anything else is probed by the native helper.
const IDMAP_FILESYSTEMS: ReadonlyMap<number, [number, number]> = new Map([
  [0xef53, [5, 12]],
  [0x58465342, [5, 12]],
  [0x9123683e, [5, 15]],
  [0x01021994, [6, 3]],
]);

function kernelAtLeast(major: number, minor: number, rel = release()): boolean {
  const [a = 0, b = 0] = rel.split(/[.-]/).map(Number);
  return a > major || (a === major && b >= minor);
}

/** Does this file system (and kernel) take idmapped mounts? Known types by statfs, else a probe by the helper. */
export async function supportsIdmap(root: string): Promise<boolean> {
  const since = IDMAP_FILESYSTEMS.get(Number(statfsSync(root).type));
  if (since && kernelAtLeast(since[0], since[1])) return true;
  const [{ spawnSync }, { helperPath }] = await Promise.all([import('node:child_process'), import('./launch.js')]);
  return spawnSync(helperPath(), ['idmap-probe', root], { stdio: 'ignore' }).status === 0;
}

/** auto = map when this filesystem supports idmapped mounts, else chown; a tree shifted before keeps chown. */
export async function resolveOwnership(mode: Ownership, root: string, shift: number | null): Promise<Exclude<Ownership, 'auto'>> {
  if (mode !== 'auto') return mode;
  const recorded = treeShift(root);
  if (recorded !== null && recorded !== 0) return 'chown';
  if (shift === 0) return 'off';
  return (await supportsIdmap(root)) ? 'map' : 'chown';
}

/**
 * Where the helper attaches the container's root view inside the container's mount namespace:
 * an empty directory the container's root (unprivileged on the host) can traverse. Nothing is
 * ever mounted here in the host's namespace; the directory stays (like the lock directory).
 */
export const ROOT_VIEW_DIR = '/run/mctl-idmap';

function ensureRootViewDir(): void {
  try {
    if ((statSync(ROOT_VIEW_DIR).mode & 0o7777) === 0o755) return;
  } catch {
    mkdirSync(ROOT_VIEW_DIR, { recursive: true, mode: 0o755 });
  }
  chmodSync(ROOT_VIEW_DIR, 0o755);
}

/** Files the launcher (re)wrote into an already shifted tree this run (resolv.conf, localtime …). */
function shiftLauncherFiles(root: string, shift: number): void {
  for (const p of ['etc/resolv.conf', 'etc/localtime', 'etc/hostname', 'etc/machine-id']) {
    const full = join(root, p);
    try {
      const st = lstatSync(full);
      if (st.uid < 0x10000) lchownSync(full, (st.uid | shift) >>> 0, (st.gid | shift) >>> 0);
    } catch {
      /* not there */
    }
  }
}

function chownForRange(root: string, shift: number): void {
  chownTree(root, shift);
  shiftLauncherFiles(root, shift);
}

export interface UsernsPlan {
  userNamespace: UserNamespaceSpec;
  /** pick + chown: shift the tree once the helper has picked (the container waits meanwhile). */
  afterNamespaces: ((leaderPid: number) => Promise<void>) | null;
}

/**
 * Everything the launcher does for a user namespace before the start: the map (or the request
 * to pick one), the ownership decision, a chown for a known range, and the root view request.
 */
export async function planUserNamespace(setting: PrivateUsers, ownershipMode: Ownership | undefined, root: string, treeWritable: boolean, env: NodeJS.ProcessEnv = process.env): Promise<UsernsPlan | null> {
  if (setting.mode === 'no') return null;
  const fixed = fixedRange(setting, root);
  const ownership = await resolveOwnership(ownershipMode ?? (setting.mode === 'pick' ? 'auto' : 'off'), root, fixed ? fixed.shift : null);
  if (ownership === 'chown' && !treeWritable) throw new UserError('--private-users-ownership=chown needs a writable tree', { hint: 'use map, or --ephemeral' });
  // Asked here (cheap for known file systems) so the refusal is one line on every launch path.
  if (ownership === 'map' && ownershipMode === 'map' && !(await supportsIdmap(root))) {
    throw new UserError(`--private-users-ownership=map: idmapped mounts are not supported for ${root}`, { hint: 'use --private-users-ownership=chown or auto' });
  }
  ensureRootViewDir();
  const userNamespace: UserNamespaceSpec = {
    uidShift: fixed?.shift ?? 0,
    uidRange: fixed?.range ?? UID_RANGE,
    ...(fixed ? {} : { pickLockDir: uidLockDir(env) }),
    rootView: { kind: ownership === 'map' ? 'idmap' : 'bind', at: ROOT_VIEW_DIR },
  };
  if (ownership !== 'chown') return { userNamespace, afterNamespaces: null };
  if (fixed) {
    chownForRange(root, fixed.shift);
    return { userNamespace, afterNamespaces: null };
  }
  return { userNamespace, afterNamespaces: async (pid) => chownForRange(root, leaderShift(pid)) };
}
