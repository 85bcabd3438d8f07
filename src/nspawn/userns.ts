// Private user namespaces: --private-users= and --private-users-ownership= with nspawn's
// semantics (systemd.md §3.4). The policy lives here; the launcher creates the namespace with
// the map we compute and keeps our range lock open for the container's whole life.
//
// pick: 64 Ki-sized ranges between 0x80000 and 0x6FFF0000. A range is ours while we hold the
// lock file /run/systemd/nspawn-uid/<base> (OFD lock, the kind stock systemd-nspawn takes, so
// stock nspawn and mctl never hand out the same range), and only if NSS knows no user or group
// at its first and last ID.
import { randomBytes } from 'node:crypto';
import { lstatSync, lchownSync, chmodSync, readdirSync, statSync, mkdirSync, rmdirSync, closeSync, openSync, readlinkSync, writeFileSync, readFileSync, constants } from 'node:fs';
import { join, dirname } from 'node:path';
import { spawn } from 'node:child_process';
import { UserError } from '../common/errors.js';
import { siphash24, hexKey } from '../net/siphash.js';
import { LockFile } from '../net/lockfile.js';
import { userIdExists, groupIdExists, lgetxattr, lsetxattr, openTree, moveMount, mountSetattr, umount2, mount, OPEN_TREE, AT, MOUNT_ATTR, MNT, MS } from '../sys/libc.js';

export const UID_RANGE = 0x10000;
export const UID_BASE_MIN = 0x00080000;
export const UID_BASE_MAX = 0x6fff0000;
const PICK_KEY = hexKey('e156e0f04af041af9641cf413394ff72');
const PICK_TRIES = 100;

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

export interface UidRange {
  shift: number;
  range: number;
  /** Held for the container's life when the range was picked (null for fixed ranges). */
  lock: LockFile | null;
}

export interface PickOptions {
  /** Where range locks live (stock nspawn's directory by default, shared on purpose). */
  lockDir?: string;
  /** Test hook: the candidates after the first two (default: random). */
  random?: () => number;
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

function inRange(base: number): boolean {
  return base >= UID_BASE_MIN && base <= UID_BASE_MAX && base % UID_RANGE === 0;
}

/** Fold any 32/64-bit value into an aligned base inside the allowed window. */
function foldCandidate(v: bigint): number {
  return Number((v % BigInt(UID_BASE_MAX - UID_BASE_MIN)) + BigInt(UID_BASE_MIN)) & 0xffff0000;
}

/** nspawn's pick: image owner first, then siphash24(name), then random; lock + NSS checks. */
export function pickUidRange(machine: string, root: string | null, opts: PickOptions = {}): UidRange {
  const lockDir = opts.lockDir ?? uidLockDir();
  const random = opts.random ?? ((): number => randomBytes(4).readUInt32LE(0));
  let candidate: number | null = root ? treeShift(root) : null;
  for (let attempt = 0; attempt < PICK_TRIES; attempt++) {
    if (candidate !== null && inRange(candidate >>> 0)) {
      const base = candidate >>> 0;
      const lock = LockFile.tryAcquire(join(lockDir, String(base)));
      if (lock) {
        const taken = userIdExists(base) || userIdExists(base + 0xfffe) || groupIdExists(base) || groupIdExists(base + 0xfffe);
        if (!taken) return { shift: base, range: UID_RANGE, lock };
        lock.release(true);
      }
    }
    candidate = attempt === 0 ? foldCandidate(siphash24(machine, PICK_KEY)) : foldCandidate(BigInt(random()));
  }
  throw new UserError('no free UID range for the container after 100 attempts (EBUSY)');
}

/** Resolve --private-users into a concrete map (null = no user namespace). */
export function resolveUidRange(setting: PrivateUsers, machine: string, root: string, opts: PickOptions = {}): UidRange | null {
  switch (setting.mode) {
    case 'no':
      return null;
    case 'identity':
      return { shift: 0, range: UID_RANGE, lock: null };
    case 'fixed':
      return { shift: setting.shift, range: setting.range, lock: null };
    case 'yes': {
      const shift = treeShift(root);
      if (shift === null) throw new UserError(`--private-users=yes: the UID and GID of ${root} do not share one range`);
      return { shift, range: UID_RANGE, lock: null };
    }
    case 'pick':
      return pickUidRange(machine, root, opts);
  }
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

/** Does the kernel and this filesystem support idmapped mounts? (Cheap probe: clone + setattr.) */
export async function supportsIdmap(root: string): Promise<boolean> {
  try {
    const ns = await makeUserns(UID_BASE_MAX, UID_RANGE);
    try {
      const fd = openTree(root, OPEN_TREE.CLONE | OPEN_TREE.CLOEXEC);
      try {
        mountSetattr(fd, AT.EMPTY_PATH, { attrSet: MOUNT_ATTR.IDMAP, usernsFd: ns.fd });
        return true;
      } finally {
        closeSync(fd);
      }
    } finally {
      ns.close();
    }
  } catch {
    return false;
  }
}

export interface Userns {
  fd: number;
  close(): void;
}

/**
 * A user namespace with the map "0 SHIFT RANGE" for uids and gids, held by an fd. Made by a
 * short-lived `unshare --user` child (Node itself cannot unshare a user namespace: threads).
 */
export async function makeUserns(shift: number, range: number): Promise<Userns> {
  const child = spawn('unshare', ['--user', '--', 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = child.pid;
  if (!pid) throw new Error('unshare --user failed to start');
  try {
    const self = readlinkSync('/proc/self/ns/user');
    // unshare(2) happens right after the exec spawn() already waited for: poll briefly, synchronously.
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; ; i++) {
      let ns = self;
      try {
        ns = readlinkSync(`/proc/${pid}/ns/user`);
      } catch {
        /* not yet */
      }
      if (ns !== self) break;
      if (i > 4000) throw new Error('unshare --user did not create a namespace');
      Atomics.wait(sleeper, 0, 0, 0.25);
    }
    writeFileSync(`/proc/${pid}/uid_map`, `0 ${shift} ${range}\n`);
    writeFileSync(`/proc/${pid}/setgroups`, 'deny');
    writeFileSync(`/proc/${pid}/gid_map`, `0 ${shift} ${range}\n`);
    const fd = openSync(`/proc/${pid}/ns/user`, constants.O_RDONLY);
    return { fd, close: () => closeSync(fd) };
  } finally {
    child.kill('SIGKILL');
  }
}

export interface IdmappedRoot {
  /** Where the idmapped view of the tree is mounted (use as the container's root). */
  path: string;
  /**
   * Detach our copy (safe once the container's mount namespace has its own); removeDir=false
   * keeps the empty mount point, which must stay while a container uses the mount.
   */
  release(removeDir?: boolean): void;
}

/** The handle for a view mounted at `at` (idmapped or a plain bind). */
function rootView(at: string): IdmappedRoot {
  return {
    path: at,
    release: (removeDir = true) => {
      try {
        umount2(at, MNT.DETACH);
      } catch {
        /* already gone */
      }
      // rmdir of a mount point also detaches the mounts on it in OTHER namespaces (the
      // container's root!), so while a container uses it the empty directory has to stay.
      if (!removeDir) return;
      try {
        rmdirSync(at);
      } catch {
        /* busy or gone */
      }
    },
  };
}

/**
 * Mount an idmapped view of `root` (recursively) at `at`, mapping host ids 0..range-1 of the
 * files to shift..shift+range-1, so the container's root sees the image's own owners while the
 * image on disk stays untouched. `usernsFd`: the container's /proc/PID/ns/user or makeUserns().
 */
export function mountIdmapped(root: string, at: string, usernsFd: number): IdmappedRoot {
  // The caller picks the parent; for container roots a private mount (ensurePrivateMountDir).
  mkdirSync(dirname(at), { recursive: true, mode: 0o755 });
  mkdirSync(at, { mode: 0o700 });
  const fd = openTree(root, OPEN_TREE.CLONE | OPEN_TREE.CLOEXEC | AT.RECURSIVE);
  try {
    mountSetattr(fd, AT.EMPTY_PATH | AT.RECURSIVE, { attrSet: MOUNT_ATTR.IDMAP, usernsFd });
    moveMount(fd, at);
    // Private, so detaching our copy later does not propagate into the container's copy.
    mount(null, at, null, MS.PRIVATE | MS.REC);
  } catch (err) {
    try {
      umount2(at, MNT.DETACH);
    } catch {
      /* not mounted yet */
    }
    try {
      rmdirSync(at);
    } catch {
      /* keep going */
    }
    throw err;
  } finally {
    closeSync(fd);
  }
  return rootView(at);
}

function isMountPoint(dir: string): boolean {
  const esc = dir.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === esc);
}

/**
 * The directory holding the container roots' mount points, as a PRIVATE mount of its own.
 * Umount propagation follows the parent mount: under a shared /run (every systemd host) our
 * detaching of a root would propagate into the container's (slave) copy of /run and take its
 * root away; and mounts made there would leak into every peer namespace. Parents stay
 * traversable (0755) for the container's root, which is unprivileged on the host.
 */
export function ensurePrivateMountDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  if (isMountPoint(dir)) return;
  const lock = LockFile.acquire(`${dir}.lock`);
  try {
    if (!isMountPoint(dir)) {
      mount(dir, dir, null, MS.BIND);
      mount(null, dir, null, MS.PRIVATE);
    }
  } finally {
    lock.release(false);
  }
}

/**
 * A plain recursive bind of `root` at `at`: with chown ownership (or a fixed range) the tree may
 * sit below directories the container's root cannot traverse (mkdtemp's 0700, say), so the
 * runtime gets the same traversable path it gets for an idmapped root.
 */
export function bindRoot(root: string, at: string): IdmappedRoot {
  // The caller picks the parent; for container roots a private mount (ensurePrivateMountDir).
  mkdirSync(dirname(at), { recursive: true, mode: 0o755 });
  mkdirSync(at, { mode: 0o700 });
  try {
    mount(root, at, null, MS.BIND | MS.REC);
    mount(null, at, null, MS.PRIVATE | MS.REC);
  } catch (err) {
    try {
      umount2(at, MNT.DETACH);
    } catch {
      /* not mounted */
    }
    rmdirSync(at);
    throw err;
  }
  return rootView(at);
}

/** Remove the empty mount-point directories left by containers that are gone (named NAME.PID). */
export function sweepIdmapDirs(dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const pid = Number(/\.(\d+)$/.exec(n)?.[1]);
    if (!pid) continue;
    try {
      process.kill(pid, 0);
      continue; // its launcher/supervisor still runs
    } catch {
      /* dead */
    }
    try {
      rmdirSync(join(dir, n)); // fails (and is left) if something is still mounted there
    } catch {
      /* keep */
    }
  }
}

/**
 * The decision before any probing: 'map?' means "auto: map if this filesystem and kernel support
 * idmapped mounts, else chown" — the caller tries the mount (with the userns it needs anyway).
 */
export function ownershipPlan(mode: Ownership, root: string, shift: number): 'off' | 'chown' | 'map' | 'map?' {
  if (mode !== 'auto') return mode;
  const recorded = treeShift(root);
  if (recorded !== null && recorded !== 0) return 'chown';
  if (shift === 0) return 'off';
  return 'map?';
}

/** auto = map when this filesystem supports idmapped mounts, else chown; a tree shifted before keeps chown. */
export async function resolveOwnership(mode: Ownership, root: string, shift: number): Promise<Exclude<Ownership, 'auto'>> {
  if (mode !== 'auto') return mode;
  const recorded = treeShift(root);
  if (recorded !== null && recorded !== 0) return 'chown';
  if (shift === 0) return 'off';
  return (await supportsIdmap(root)) ? 'map' : 'chown';
}
