// The machine image store: what systemd calls the image search path, with /var/lib/machines
// (env MCTL_POOL) as the writable pool. Typed operations used by mctl-machined's Image objects,
// the CLI's image verbs (through machined) and the importer.
//
// Image kinds, as in systemd: a directory tree, a btrfs subvolume, NAME.raw (a disk or file-system
// image) or a block device node. Names starting with "." are hidden; ".#…" entries are temporary
// files of in-flight operations and lock files and are never images. ".host" is the host's "/".
import { accessSync, constants as fsc, existsSync, openSync, closeSync, readdirSync, statSync, chmodSync, renameSync, type BigIntStats, type RmOptions } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { isValidImageName } from '../common/names.js';
import { ioctlInt } from '../sys/libc.js';
import { imageSizeOfFd } from './gpt.js';
import { ImageError } from './errors.js';
import { FS_IMMUTABLE_FL, getInodeFlags, isOnBtrfs, isSubvolume, isSubvolumeReadOnly, setInodeFlags, setSubvolumeLimit, setSubvolumeReadOnly, snapshotSubvolume } from './fsattr.js';
import { lockImage, lockImageName, type ImageLock } from './lock.js';
import { readMetadata, type ImageMetadata } from './metadata.js';

export { lockImage, lockImageName, isImageLocked, type ImageLock } from './lock.js';
export type { ImageMetadata } from './metadata.js';

export type ImageType = 'directory' | 'subvolume' | 'raw' | 'block';

export interface ImageInfo {
  name: string;
  path: string;
  type: ImageType;
  readOnly: boolean;
  hidden: boolean;
  /** µs since the epoch; 0 when the file system does not record it. */
  crtime: number;
  mtime: number;
  /** Bytes; null = unknown (D-Bus reports UINT64_MAX, machinectl shows "-"). */
  usage: number | null;
  usageExclusive: number | null;
  limit: number | null;
  limitExclusive: number | null;
}

export const DEFAULT_POOL = '/var/lib/machines';
const SETTINGS_DIRS = ['/etc/systemd/nspawn', '/run/systemd/nspawn'];
/** Files that belong to a raw image and travel with it (verity data next to the image). */
const RAW_AUXILIARY = ['.roothash', '.roothash.p7s', '.usrhash', '.usrhash.p7s', '.verity'];
const BLKROGET = 0x125e;
const BLKROSET = 0x125d;

/** The writable pool: env MCTL_POOL, default /var/lib/machines. */
export function poolPath(): string {
  return process.env['MCTL_POOL'] || DEFAULT_POOL;
}

/** systemd's machine image search path, with the pool in /var/lib/machines' place. */
export function searchPath(): string[] {
  const pool = poolPath();
  const dirs = ['/etc/machines', '/run/machines', pool, '/var/lib/container', '/usr/local/lib/machines', '/usr/lib/machines'];
  return dirs.filter((d, i) => dirs.indexOf(d) === i);
}

function usec(ns: bigint): number {
  return Number(ns / 1000n);
}

function isVendor(path: string): boolean {
  return path === '/usr' || path.startsWith('/usr/');
}

function onReadOnlyFs(path: string): boolean {
  try {
    accessSync(path, fsc.W_OK);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EROFS';
  }
}

function blockDeviceInfo(path: string): { readOnly: boolean; size: number | null } {
  try {
    const fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
    try {
      return { readOnly: ioctlInt(fd, BLKROGET) !== 0, size: imageSizeOfFd(fd) };
    } finally {
      closeSync(fd);
    }
  } catch {
    return { readOnly: false, size: null };
  }
}

/** Build the ImageInfo for one path, or undefined when it is not an image. */
export function inspectPath(name: string, path: string): ImageInfo | undefined {
  let st: BigIntStats;
  try {
    st = statSync(path, { bigint: true });
  } catch {
    return undefined;
  }
  const hidden = name.startsWith('.');
  const base = { name, path, hidden, crtime: usec(st.birthtimeNs), mtime: usec(st.mtimeNs) };
  const vendorOrRo = isVendor(path) || onReadOnlyFs(path);
  if (st.isDirectory()) {
    if (path === '/') {
      return { ...base, type: 'directory', readOnly: true, usage: null, usageExclusive: null, limit: null, limitExclusive: null };
    }
    let subvolume = false;
    try {
      subvolume = isSubvolume(path);
    } catch {
      subvolume = false;
    }
    if (subvolume) {
      let ro = vendorOrRo;
      try {
        ro ||= isSubvolumeReadOnly(path);
      } catch {
        // Without the ioctl we cannot tell; report writable as systemd does on error.
      }
      return { ...base, type: 'subvolume', readOnly: ro, usage: null, usageExclusive: null, limit: null, limitExclusive: null };
    }
    let immutable = false;
    try {
      immutable = (getInodeFlags(path) & FS_IMMUTABLE_FL) !== 0;
    } catch {
      immutable = false;
    }
    return { ...base, type: 'directory', readOnly: vendorOrRo || immutable, usage: null, usageExclusive: null, limit: null, limitExclusive: null };
  }
  if (st.isFile()) {
    let immutable = false;
    try {
      immutable = (getInodeFlags(path) & FS_IMMUTABLE_FL) !== 0;
    } catch {
      immutable = false;
    }
    const ro = vendorOrRo || immutable || (Number(st.mode) & 0o222) === 0;
    const usage = Number(st.blocks) * 512;
    const size = Number(st.size);
    return { ...base, type: 'raw', readOnly: ro, usage, usageExclusive: usage, limit: size, limitExclusive: size };
  }
  if (st.isBlockDevice()) {
    const dev = blockDeviceInfo(path);
    return { ...base, type: 'block', readOnly: vendorOrRo || dev.readOnly, usage: dev.size, usageExclusive: dev.size, limit: dev.size, limitExclusive: dev.size };
  }
  return undefined;
}

/** The image name a directory entry stands for, or undefined when it is not one. */
function entryName(entry: string, path: string): string | undefined {
  if (entry.startsWith('.#')) return undefined;
  let st;
  try {
    st = statSync(path);
  } catch {
    return undefined;
  }
  let name = entry;
  if (st.isFile()) {
    if (!entry.endsWith('.raw')) return undefined;
    name = entry.slice(0, -4);
  } else if (!st.isDirectory() && !st.isBlockDevice()) return undefined;
  if (name === '.host' || !isValidImageName(name)) return undefined;
  return name;
}

export interface ListOptions {
  /** Include ".host" (the host's root), as machined's ListImages does. Default true. */
  includeHost?: boolean;
}

/** Every image on the search path (first occurrence of a name wins), sorted by name. */
export function listImages(options: ListOptions = {}): ImageInfo[] {
  const seen = new Map<string, ImageInfo>();
  for (const dir of searchPath()) {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      continue;
    }
    for (const entry of entries) {
      const path = join(dir, entry);
      const name = entryName(entry, path);
      if (name === undefined || seen.has(name)) continue;
      const info = inspectPath(name, path);
      if (info) seen.set(name, info);
    }
  }
  if (options.includeHost !== false && !seen.has('.host')) {
    const host = inspectPath('.host', '/');
    if (host) seen.set('.host', host);
  }
  return [...seen.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Find one image by name; undefined when there is none. Invalid names are an error. */
export function findImage(name: string): ImageInfo | undefined {
  if (name === '.host') return inspectPath('.host', '/');
  if (!isValidImageName(name)) throw new ImageError('invalid', `invalid image name '${name}'`, { hint: 'use letters, digits, "-" and "." (at most 64 characters)' });
  for (const dir of searchPath()) {
    for (const entry of [name, `${name}.raw`]) {
      const path = join(dir, entry);
      if (!existsSync(path)) continue;
      if (entryName(entry, path) !== name) continue;
      const info = inspectPath(name, path);
      if (info) return info;
    }
  }
  return undefined;
}

/** Like findImage, but a missing image is a one-line error. */
export function getImage(name: string): ImageInfo {
  const image = findImage(name);
  if (!image) throw new ImageError('no-such-image', `no image '${name}'`);
  return image;
}

function assertWritable(image: ImageInfo, verb: string): void {
  if (image.path === '/' || image.name === '.host') throw new ImageError('read-only', `cannot ${verb} the host image`);
  if (isVendor(image.path)) throw new ImageError('read-only', `cannot ${verb} image '${image.name}': it is a vendor image in ${dirname(image.path)}`);
}

function assertNewName(newName: string): void {
  if (newName === '.host' || !isValidImageName(newName)) {
    throw new ImageError('invalid', `invalid image name '${newName}'`, { hint: 'use letters, digits, "-" and "." (at most 64 characters)' });
  }
  if (findImage(newName)) throw new ImageError('exists', `image '${newName}' already exists`);
}

/** NAME.nspawn settings files that belong to an image: /etc, /run, and next to the image. */
export function settingsPaths(image: Pick<ImageInfo, 'name' | 'path'>): string[] {
  const file = `${image.name}.nspawn`;
  return [...SETTINGS_DIRS.map((d) => join(d, file)), join(dirname(image.path), file)];
}

function auxiliaryPaths(image: ImageInfo): string[] {
  const own = image.type === 'raw' ? RAW_AUXILIARY.map((s) => join(dirname(image.path), `${image.name}${s}`)) : [];
  return [...settingsPaths(image), ...own];
}

function renamedAux(path: string, oldName: string, newName: string): string {
  return join(dirname(path), newName + basename(path).slice(oldName.length));
}

function imageFileName(type: ImageType, name: string): string {
  return type === 'raw' ? `${name}.raw` : name;
}

function tempName(dir: string, name: string): string {
  // Unique enough for a name guarded by the name lock; avoids loading node:crypto on every start.
  return join(dir, `.#${name}.${process.pid.toString(36)}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`);
}

// node:fs/promises and node:child_process are loaded on first use: the launcher imports this
// module on every --image start.
async function rm(path: string, options: RmOptions): Promise<void> {
  await (await import('node:fs/promises')).rm(path, options);
}

async function copyFile(source: string, target: string): Promise<void> {
  await (await import('node:fs/promises')).copyFile(source, target);
}

async function run(cmd: string, args: readonly string[]): Promise<void> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 1 << 20 }, (err, _out, stderr) => {
      if (!err) return resolve();
      const line = String(stderr).trim().split('\n')[0] || err.message;
      reject(new ImageError('invalid', `${cmd} failed: ${line}`));
    });
  });
}

/** Copy a tree preserving owners, modes, links, devices, xattrs and ACLs, sharing extents if the fs can. */
export async function copyTree(source: string, target: string): Promise<void> {
  await run('cp', ['-a', '--reflink=auto', '--no-target-directory', '--', source, target]);
}

/** Copy a file (reflink when possible, sparse otherwise) preserving mode, owner and times. */
async function copyImageFile(source: string, target: string): Promise<void> {
  await run('cp', ['-a', '--reflink=auto', '--sparse=always', '--no-target-directory', '--', source, target]);
}

/** Remove an image (and its settings and verity files). Refused while the image is in use. */
export async function removeImage(name: string): Promise<void> {
  const image = getImage(name);
  assertWritable(image, 'remove');
  const lock = lockImage(image.path, { what: `image '${name}'` });
  try {
    if (image.type === 'block') throw new ImageError('not-supported', `cannot remove block device image '${name}'`);
    if (image.type === 'raw') {
      // A read-only raw image is only chmod a-w / +i; removing it is still allowed, as in systemd.
      clearImmutable(image.path);
      await rm(image.path, { force: true });
    } else {
      clearImmutable(image.path);
      if (image.type === 'subvolume') {
        try {
          setSubvolumeReadOnly(image.path, false);
        } catch {
          // rm below reports the real problem if the flag could not be cleared.
        }
      }
      await rm(image.path, { recursive: true, force: true });
    }
    for (const aux of auxiliaryPaths(image)) await rm(aux, { force: true });
  } finally {
    lock.release();
  }
}

function clearImmutable(path: string): boolean {
  try {
    if ((getInodeFlags(path) & FS_IMMUTABLE_FL) === 0) return false;
    setInodeFlags(path, FS_IMMUTABLE_FL, 0);
    return true;
  } catch {
    return false;
  }
}

/** Rename an image within its directory; its settings and verity files follow. */
export async function renameImage(name: string, newName: string): Promise<ImageInfo> {
  const image = getImage(name);
  assertWritable(image, 'rename');
  const nameLock = lockImageName(newName);
  let lock: ImageLock | undefined;
  try {
    assertNewName(newName);
    lock = lockImage(image.path, { what: `image '${name}'` });
    const target = join(dirname(image.path), imageFileName(image.type, newName));
    if (existsSync(target)) throw new ImageError('exists', `image '${newName}' already exists`);
    // The immutable bit forbids rename; take it off and put it back on the new path.
    const wasImmutable = clearImmutable(image.path);
    try {
      renameSync(image.path, target);
    } catch (err) {
      if (wasImmutable) setInodeFlags(image.path, FS_IMMUTABLE_FL, FS_IMMUTABLE_FL);
      throw err;
    }
    if (wasImmutable) setInodeFlags(target, FS_IMMUTABLE_FL, FS_IMMUTABLE_FL);
    for (const aux of auxiliaryPaths(image)) {
      if (existsSync(aux)) renameSync(aux, renamedAux(aux, name, newName));
    }
    return inspectPath(newName, target) ?? { ...image, name: newName, path: target };
  } finally {
    lock?.release();
    nameLock.release();
  }
}

/**
 * Clone an image into the pool: a btrfs snapshot when source and pool share a btrfs file
 * system, otherwise a copy (reflinked where the file system can). The copy is built under a
 * hidden temporary name and renamed into place, so a failed clone leaves nothing behind.
 */
export async function cloneImage(name: string, newName: string, options: { readOnly?: boolean } = {}): Promise<ImageInfo> {
  const image = getImage(name);
  if (image.name === '.host') throw new ImageError('not-supported', 'cannot clone the host image');
  const nameLock = lockImageName(newName);
  const pool = poolPath();
  const target = join(pool, imageFileName(image.type === 'raw' ? 'raw' : 'directory', newName));
  const temp = tempName(pool, newName);
  try {
    assertNewName(newName);
    if (image.type === 'block') throw new ImageError('not-supported', `cannot clone block device image '${name}'`);
    if (!existsSync(pool)) throw new ImageError('invalid', `image pool ${pool} does not exist`);
    let snapshotted = false;
    if (image.type === 'subvolume' && isOnBtrfs(pool)) {
      try {
        snapshotSubvolume(image.path, temp, false);
        snapshotted = true;
      } catch {
        snapshotted = false; // different file system or nested subvolumes: fall back to a copy
      }
    }
    if (!snapshotted) {
      if (image.type === 'raw') await copyImageFile(image.path, temp);
      else await copyTree(image.path, temp);
      // A read-only source's copy must not inherit its immutable bit or a-w mode by accident.
      clearImmutable(temp);
      if (image.type === 'raw') chmodSync(temp, (statSync(temp).mode & 0o7777) | 0o200);
    }
    if (existsSync(target)) throw new ImageError('exists', `image '${newName}' already exists`);
    renameSync(temp, target);
    for (const aux of auxiliaryPaths(image)) {
      if (!existsSync(aux)) continue;
      const dest = renamedAux(aux, name, newName);
      // Settings next to the image go next to the clone (the pool); /etc and /run stay where they are.
      const placed = dirname(aux) === dirname(image.path) ? join(pool, basename(dest)) : dest;
      if (!existsSync(placed)) await copyFile(aux, placed);
    }
    if (options.readOnly) await markImageReadOnly(newName, true);
    return getImage(newName);
  } catch (err) {
    await rm(temp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  } finally {
    nameLock.release();
  }
}

/** Mark an image read-only or writable (subvolume flag, chattr +i, or raw file mode). */
export async function markImageReadOnly(name: string, readOnly: boolean): Promise<ImageInfo> {
  const image = getImage(name);
  assertWritable(image, 'change');
  switch (image.type) {
    case 'subvolume':
      setSubvolumeReadOnly(image.path, readOnly);
      break;
    case 'directory':
      setInodeFlags(image.path, FS_IMMUTABLE_FL, readOnly ? FS_IMMUTABLE_FL : 0);
      break;
    case 'raw': {
      const mode = statSync(image.path).mode & 0o7777;
      chmodSync(image.path, readOnly ? mode & ~0o222 : (mode & 0o444) | 0o200);
      break;
    }
    case 'block': {
      const fd = openSync(image.path, fsc.O_RDONLY | fsc.O_NONBLOCK);
      try {
        ioctlInt(fd, BLKROSET, readOnly ? 1 : 0);
      } finally {
        closeSync(fd);
      }
      break;
    }
  }
  return getImage(name);
}

/** Set a size limit: btrfs quota on subvolumes only (as systemd); others are not supported. */
export async function setImageLimit(name: string, bytes: bigint): Promise<void> {
  const image = getImage(name);
  assertWritable(image, 'limit');
  if (image.type !== 'subvolume') {
    throw new ImageError('not-supported', `image '${name}' is a ${image.type}: size limits need a btrfs subvolume`);
  }
  setSubvolumeLimit(image.path, bytes);
}

/** Pool limit: the pool must be a btrfs subvolume with quota enabled. */
export async function setPoolLimit(bytes: bigint): Promise<void> {
  const pool = poolPath();
  if (!isSubvolume(pool)) throw new ImageError('not-supported', `pool ${pool} is not a btrfs subvolume: size limits are not supported`);
  setSubvolumeLimit(pool, bytes);
}

export interface CleanedImage {
  name: string;
  usage: number | null;
}

/**
 * Remove hidden images (mode "hidden") or every image (mode "all") that is writable, not a
 * vendor or host image and not in use; images in use are skipped, as systemd does.
 */
export async function cleanPool(mode: 'hidden' | 'all'): Promise<CleanedImage[]> {
  const removed: CleanedImage[] = [];
  for (const image of listImages({ includeHost: false })) {
    if (isVendor(image.path) || image.readOnly || image.type === 'block') continue;
    if (mode === 'hidden' && !image.hidden) continue;
    try {
      await removeImage(image.name);
      removed.push({ name: image.name, usage: image.usageExclusive });
    } catch (err) {
      if (err instanceof ImageError && err.kind === 'busy') continue;
      throw err;
    }
  }
  return removed;
}

/** hostname, machine-id, machine-info and os-release of an image (raw images are mounted read-only). */
export async function imageMetadata(name: string): Promise<ImageMetadata> {
  const image = getImage(name);
  if (image.type === 'directory' || image.type === 'subvolume') return readMetadata(image.path);
  const { withMountedImage } = await import('./mount.js');
  return withMountedImage(image.path, (root) => readMetadata(root));
}
