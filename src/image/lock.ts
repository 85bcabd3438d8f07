// Image locks, compatible with systemd's (machine-image.c image_path_lock / image_name_lock):
//
//  - a "global" lock /run/systemd/nspawn/locks/inode-DEV:INO (block-MAJ:MIN for block devices),
//    keyed by the image's identity so two paths to the same image collide;
//  - a "local" lock file .#BASENAME.lck next to the image (not for /dev paths);
//  - a name lock /run/systemd/nspawn/locks/name-NAME that reserves a name during clone/rename.
//
// All are OFD locks (fcntl F_OFD_SETLK) on files opened O_RDWR, exactly the lock type systemd's
// make_lock_file() takes, so stock machined/nspawn and mctl see each other's locks. A running
// launcher holds the path lock exclusively (shared for read-only images) for the container's
// whole life; store operations take it exclusively without waiting and fail with "in use".
import { closeSync, fstatSync, mkdirSync, openSync, statSync, unlinkSync, constants as fsc } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ofdLock } from '../sys/native-addon.js';
import { UserError } from '../common/errors.js';
import { ImageError } from './errors.js';

export const LOCK_DIR = '/run/systemd/nspawn/locks';

interface LockFile {
  path: string;
  fd: number;
  exclusive: boolean;
}

/** A held lock; keep `fds` open in whichever process must hold it (they are O_CLOEXEC). */
export interface ImageLock {
  readonly fds: readonly number[];
  readonly paths: readonly string[];
  release(): void;
}

const NO_LOCK: ImageLock = { fds: [], paths: [], release: () => undefined };

function locksDisabled(): boolean {
  const v = process.env['SYSTEMD_NSPAWN_LOCK'];
  return v !== undefined && /^(0|no|false|off)$/i.test(v);
}

/** Take one lock file the way make_lock_file() does; undefined when someone else holds it. */
function takeLockFile(path: string, exclusive: boolean): LockFile | undefined {
  for (;;) {
    const fd = openSync(path, fsc.O_CREAT | fsc.O_RDWR | fsc.O_NOFOLLOW | fsc.O_NOCTTY, 0o600);
    let ok = false;
    try {
      if (!ofdLock(fd, exclusive ? 'exclusive' : 'shared')) return undefined;
      // A releaser may have unlinked the file between our open and our lock: retry on a fresh one.
      if (fstatSync(fd).nlink === 0) continue;
      ok = true;
      return { path, fd, exclusive };
    } finally {
      if (!ok) closeSync(fd);
    }
  }
}

/** Release like release_lock_file(): the last holder removes the file. */
function dropLockFile(lock: LockFile): void {
  try {
    // A shared holder may remove the file only if nobody else holds it (upgrade succeeds).
    if (lock.exclusive || ofdLock(lock.fd, 'exclusive')) unlinkSync(lock.path);
  } catch {
    // Removing the file is tidiness only; the lock itself goes with the fd.
  } finally {
    closeSync(lock.fd);
  }
}

function heldLock(files: LockFile[]): ImageLock {
  let released = false;
  return {
    fds: files.map((f) => f.fd),
    paths: files.map((f) => f.path),
    release() {
      if (released) return;
      released = true;
      for (const f of files.reverse()) dropLockFile(f);
    },
  };
}

/** The global lock path for an image path (undefined if the path does not exist). */
export function globalLockPath(path: string): string | undefined {
  let st;
  try {
    st = statSync(path, { bigint: true });
  } catch {
    return undefined;
  }
  if (st.isBlockDevice()) {
    const rdev = st.rdev;
    const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
    const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
    return join(LOCK_DIR, `block-${major}:${minor}`);
  }
  return join(LOCK_DIR, `inode-${st.dev}:${st.ino}`);
}

/** make_lock_file_for(): the ".#NAME.lck" file next to a path. */
export function localLockPath(path: string): string {
  return join(dirname(path), `.#${basename(path)}.lck`);
}

/**
 * Lock an image path. Exclusive (default) for writers and for launchers of writable images,
 * shared for read-only use. Fails with a one-line UserError when the image is in use.
 */
export function lockImage(path: string, options: { shared?: boolean; what?: string } = {}): ImageLock {
  if (locksDisabled()) return NO_LOCK;
  const exclusive = !options.shared;
  const what = options.what ?? path;
  if (path === '/') {
    if (exclusive) throw new ImageError('busy', `${what} is the host's root directory and cannot be locked for writing`);
    return NO_LOCK;
  }
  const held: LockFile[] = [];
  try {
    if (!path.startsWith('/dev/')) {
      try {
        const local = takeLockFile(localLockPath(path), exclusive);
        if (!local) throw busy(what);
        held.push(local);
      } catch (err) {
        // A read-only directory (e.g. /usr/lib/machines) cannot hold a local lock file; shared use is fine.
        if (err instanceof UserError || exclusive || (err as NodeJS.ErrnoException).code !== 'EROFS') throw err;
      }
    }
    const global = globalLockPath(path);
    if (global) {
      mkdirSync(dirname(LOCK_DIR), { recursive: true, mode: 0o755 });
      mkdirSync(LOCK_DIR, { recursive: true, mode: 0o700 });
      const lock = takeLockFile(global, exclusive);
      if (!lock) throw busy(what);
      held.push(lock);
    }
    return heldLock(held);
  } catch (err) {
    for (const f of held.reverse()) dropLockFile(f);
    throw err;
  }
}

/** Reserve an image/machine name (name-NAME), as clone and rename do for their new name. */
export function lockImageName(name: string): ImageLock {
  if (locksDisabled()) return NO_LOCK;
  mkdirSync(LOCK_DIR, { recursive: true, mode: 0o700 });
  const lock = takeLockFile(join(LOCK_DIR, `name-${name}`), true);
  if (!lock) throw new ImageError('busy', `image name '${name}' is being used by another operation`);
  return heldLock([lock]);
}

/** True when some process holds a lock on the image (a running machine, or an operation). */
export function isImageLocked(path: string): boolean {
  if (locksDisabled()) return false;
  try {
    lockImage(path).release();
    return false;
  } catch (err) {
    if (err instanceof ImageError && err.kind === 'busy') return true;
    throw err;
  }
}

function busy(what: string): ImageError {
  return new ImageError('busy', `${what} is in use by a running machine or another operation`);
}
