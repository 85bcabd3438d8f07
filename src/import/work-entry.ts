// The hidden pool entry a transfer builds its image in, and the one step that publishes it.
// Everything before commit() happens under ".#mctl-PID-RAND-NAME"; a failure or Ctrl-C removes
// it, and one left by a killed process (kill -9, power loss) is recognised by its dead PID and
// removed by the next transfer or by cleanStaleTransfers() (`mctl clean`, and the service's CleanPool).
import { existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../common/errors.js';
import { isValidHostname } from '../common/names.js';
import { lockImage, lockImageName, markImageReadOnly, poolPath, findImage, type ImageLock } from '../image/index.js';
import { tempEntryName, tempEntryOwner } from './names.js';

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The image names a work entry may belong to. "NAME.raw" is itself a valid image name, so an
 * entry ending in ".raw" could be a raw transfer to NAME or a tar transfer to NAME.raw: both.
 */
function entryImageNames(entry: string): string[] {
  const rest = entry.replace(/^\.#mctl-[0-9]+-[0-9a-f]{8}-/, '');
  const names = [rest];
  for (const suffix of ['.raw', '.hoist', '.nspawn']) if (rest.endsWith(suffix)) names.push(rest.slice(0, -suffix.length));
  return names.filter((n) => isValidHostname(n));
}

/** Take the name reservation of every name NAMES may be; null when a live operation holds one. */
function reserveNames(names: string[], ours: string | undefined): ImageLock[] | null {
  const held: ImageLock[] = [];
  for (const name of names) {
    if (name === ours) continue; // this process holds it: the PID check has spoken
    try {
      held.push(lockImageName(name));
    } catch {
      for (const l of held) l.release();
      return null;
    }
  }
  return held;
}

/**
 * Remove work entries of interrupted transfers (kill -9, power loss) and return their names.
 * An entry is stale only when its PID is gone AND nobody holds the image-name reservation a
 * running transfer keeps for its whole life; the PID alone is not trusted, because a transfer
 * in another PID namespace (or a recycled PID) would fool it. The reservation is held while the
 * entry is removed, so a new transfer to that name cannot start meanwhile. systemd itself only
 * removes "/var/lib/machines/.#*" at boot (tmpfiles "R!"); stock machined never lists them.
 */
export async function cleanStaleTransfers(pool = poolPath(), options: { reservedByUs?: string } = {}): Promise<string[]> {
  let entries: string[];
  try {
    entries = readdirSync(pool);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const entry of entries) {
    const owner = tempEntryOwner(entry);
    if (owner === null || processAlive(owner)) continue;
    const names = entryImageNames(entry);
    if (names.length === 0) continue;
    const held = reserveNames(names, options.reservedByUs);
    if (!held) continue; // a transfer (or clone/rename) to that name is running
    try {
      await rm(join(pool, entry), { recursive: true, force: true });
      removed.push(entry);
    } finally {
      // releasing also unlinks the dead transfer's reservation file
      for (const l of held) l.release();
    }
  }
  return removed;
}

export type EntryKind = 'directory' | 'raw';

export interface CommitOptions {
  force: boolean;
  readOnly: boolean;
  /** NAME.nspawn contents to place next to the image. */
  settings?: Buffer | null;
}

function hasOsRelease(dir: string): boolean {
  return existsSync(join(dir, 'etc/os-release')) || existsSync(join(dir, 'usr/lib/os-release'));
}

export class WorkEntry {
  readonly pool: string;
  readonly name: string;
  readonly kind: EntryKind;
  readonly path: string;
  private nameLock: ImageLock | null;
  private finished = false;

  private constructor(pool: string, name: string, kind: EntryKind, lock: ImageLock) {
    this.pool = pool;
    this.name = name;
    this.kind = kind;
    this.path = join(pool, tempEntryName(name) + (kind === 'raw' ? '.raw' : ''));
    this.nameLock = lock;
  }

  /** The image's final path in the pool. */
  get target(): string {
    return join(this.pool, this.kind === 'raw' ? `${this.name}.raw` : this.name);
  }

  /**
   * Reserve NAME (one transfer per name), refuse an existing image unless FORCE, clean up
   * stale work entries, and create the hidden directory (raw: only the name is reserved).
   */
  static async create(name: string, kind: EntryKind, options: { force: boolean; settingsExpected?: boolean }): Promise<WorkEntry> {
    const pool = poolPath();
    mkdirSync(pool, { recursive: true, mode: 0o700 });
    let lock: ImageLock;
    try {
      lock = lockImageName(name);
    } catch {
      throw new UserError(`a transfer or operation on image '${name}' is already in progress`);
    }
    const entry = new WorkEntry(pool, name, kind, lock);
    try {
      if (!options.force) entry.assertFree();
      await cleanStaleTransfers(pool, { reservedByUs: name });
      if (kind === 'directory') await mkdir(entry.path, { mode: 0o755 });
      return entry;
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  private existing(): string[] {
    return [join(this.pool, this.name), join(this.pool, `${this.name}.raw`)].filter((p) => {
      try {
        lstatSync(p);
        return true;
      } catch {
        return false;
      }
    });
  }

  assertFree(): void {
    if (this.existing().length > 0) throw new UserError(`image '${this.name}' already exists`, { hint: 'use --force to replace it' });
  }

  /** A tarball whose only top-level entry is the OS directory: move that directory up, as importd does. */
  hoistSingleOsDirectory(): boolean {
    if (this.kind !== 'directory' || hasOsRelease(this.path)) return false;
    const entries = readdirSync(this.path);
    if (entries.length !== 1) return false;
    const inner = join(this.path, entries[0]!);
    if (!lstatSync(inner).isDirectory() || !hasOsRelease(inner)) return false;
    const lifted = `${this.path}.hoist`;
    renameSync(inner, lifted);
    rmdirSync(this.path);
    renameSync(lifted, this.path);
    return true;
  }

  /** Publish: replace an existing image if forced, rename into place, settings, read-only. */
  async commit(options: CommitOptions): Promise<string> {
    const existing = this.existing();
    if (existing.length > 0) {
      if (!options.force) throw new UserError(`image '${this.name}' already exists`, { hint: 'use --force to replace it' });
      for (const path of existing) {
        const lock = lockImage(path, { what: `image '${this.name}'` }); // refuses while a machine runs from it
        try {
          if (findImage(this.name)?.path === path) await markImageReadOnly(this.name, false).catch(() => undefined);
          await rm(path, { recursive: true, force: true });
        } finally {
          lock.release();
        }
      }
    }
    const settingsPath = join(this.pool, `${this.name}.nspawn`);
    if (options.settings && existsSync(settingsPath) && !options.force) {
      throw new UserError(`settings file ${settingsPath} already exists`, { hint: 'use --force to replace it' });
    }
    await rename(this.path, this.target);
    this.finished = true;
    try {
      if (options.settings) {
        const tmp = join(this.pool, `${tempEntryName(this.name)}.nspawn`);
        await writeFile(tmp, options.settings, { mode: 0o644 });
        await rename(tmp, settingsPath);
      }
      if (options.readOnly) await markImageReadOnly(this.name, true);
    } finally {
      this.release();
    }
    return this.target;
  }

  /** Remove the work entry (failure, cancel, or a download-only transfer). */
  async discard(): Promise<void> {
    if (!this.finished) {
      this.finished = true;
      await rm(this.path, { recursive: true, force: true });
      await rm(`${this.path}.hoist`, { recursive: true, force: true });
    }
    this.release();
  }

  private release(): void {
    this.nameLock?.release();
    this.nameLock = null;
  }
}
