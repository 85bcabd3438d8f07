// Lock files with systemd's semantics (OFD locks, as make_lock_file() takes them), so our
// locks and stock systemd-nspawn's exclude each other. A lock lives as long as its open file
// description: a lock held for a container's life is inherited across exec by clearing
// FD_CLOEXEC (keepAcrossExec) and dies with the last process holding it, also on SIGKILL.
import { closeSync, fstatSync, mkdirSync, openSync, statSync, unlinkSync, constants } from 'node:fs';
import { dirname } from 'node:path';
import { ofdLockWait } from '../sys/libc.js';
import { ofdLock, flock, clearCloexec } from '../sys/native-addon.js';

/**
 * 'ofd': systemd's lock type (stock nspawn's /run/systemd/nspawn-uid locks use it).
 * 'flock': BSD lock, used for our own per-machine locks so `flock(1)` can wait for a launcher's end.
 */
export type LockKind = 'ofd' | 'flock';

/** Per path, the promise the next in-process acquireAsync caller waits for. */
const localQueue = new Map<string, Promise<void>>();

export class LockFile {
  readonly path: string;
  private fdValue: number | null;
  /** Lets the next in-process acquireAsync caller go. */
  private onRelease: (() => void) | null = null;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fdValue = fd;
  }

  get fd(): number {
    if (this.fdValue === null) throw new Error(`${this.path}: lock already released`);
    return this.fdValue;
  }

  /** Take the lock without waiting; null when someone else holds it. */
  static tryAcquire(path: string, kind: LockKind = 'ofd'): LockFile | null {
    return LockFile.open(path, kind);
  }

  /** Take the lock, polling for up to `ms` milliseconds (for locks held only briefly, e.g. by a collector). */
  static async acquireWithin(path: string, kind: LockKind, ms: number): Promise<LockFile | null> {
    const end = Date.now() + ms;
    for (;;) {
      const lock = LockFile.tryAcquire(path, kind);
      if (lock || Date.now() >= end) return lock;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * Take the lock without blocking the event loop: callers in this process queue up first (OFD
   * locks of two open file descriptions in one process exclude each other, so a blocking wait
   * there would never end), then the lock is polled until another process lets go.
   */
  static async acquireAsync(path: string, kind: LockKind = 'ofd'): Promise<LockFile> {
    const previous = localQueue.get(path) ?? Promise.resolve();
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    const tail = previous.then(() => mine);
    localQueue.set(path, tail);
    await previous;
    try {
      for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
        // OFD locks are waited for on a worker thread (taken the moment the holder lets go);
        // BSD locks, and an interrupted wait, fall back to polling.
        const lock = LockFile.tryAcquire(path, kind) ?? (kind === 'ofd' ? await LockFile.waitOfd(path) : null);
        if (lock) {
          lock.onRelease = () => {
            if (localQueue.get(path) === tail) localQueue.delete(path);
            done();
          };
          return lock;
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    } catch (err) {
      if (localQueue.get(path) === tail) localQueue.delete(path);
      done();
      throw err;
    }
  }

  /** Open and wait for an OFD lock without blocking the event loop; null if the wait failed or the file was replaced. */
  private static async waitOfd(path: string): Promise<LockFile | null> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    if ((await ofdLockWait(fd, 'exclusive')) && LockFile.isCurrent(fd, path)) return new LockFile(path, fd);
    closeSync(fd);
    return null;
  }

  /** The previous holder may have unlinked the file between our open and our lock: then we locked an orphan inode. */
  private static isCurrent(fd: number, path: string): boolean {
    const st = fstatSync(fd);
    let current: ReturnType<typeof statSync> | undefined;
    try {
      current = statSync(path);
    } catch {
      current = undefined;
    }
    return st.nlink > 0 && current !== undefined && current.ino === st.ino && current.dev === st.dev;
  }

  /** Open and lock without waiting (a waiting lock is acquireAsync's, off the event loop). */
  private static open(path: string, kind: LockKind): LockFile | null {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    for (;;) {
      const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
      let locked = false;
      try {
        locked = kind === 'ofd' ? ofdLock(fd, 'exclusive') : flock(fd, 'exclusive');
        if (!locked) {
          closeSync(fd);
          return null;
        }
        // If the file was replaced meanwhile, try again on the new one.
        if (LockFile.isCurrent(fd, path)) return new LockFile(path, fd);
      } catch (err) {
        closeSync(fd);
        throw err;
      }
      closeSync(fd);
    }
  }

  /** Let the fd (and so the lock) survive execve into the resident supervisor. */
  keepAcrossExec(): number {
    clearCloexec(this.fd);
    return this.fd;
  }

  /** Release; with unlink, remove the file first (safe: we hold it exclusively). */
  release(unlink = true): void {
    if (this.fdValue === null) return;
    if (unlink) {
      try {
        unlinkSync(this.path);
      } catch {
        /* already gone */
      }
    }
    closeSync(this.fdValue);
    this.fdValue = null;
    this.onRelease?.();
    this.onRelease = null;
  }
}

/** Is the lock at PATH free right now? (Takes and drops it; does not unlink.) */
export function isLockFree(path: string, kind: LockKind = 'ofd'): boolean {
  const l = LockFile.tryAcquire(path, kind);
  if (!l) return false;
  l.release(false);
  return true;
}
