// Mount a dissected disk image under a private staging tmpfs:
//
//   /run/mctl/images              a permanent, empty directory (like /run/systemd/nspawn/locks)
//   /run/mctl/images  <- tmpfs    mounted per use, MS_PRIVATE: nothing below propagates anywhere
//   /run/mctl/images/root         the root partition, with usr/home/srv/var/tmp/esp/xbootldr
//                                 mounted at their places below it
//
// Why one fixed mount point instead of a directory per use: a launcher lazily unmounts the
// host's view once the container's mount namespace holds its own copy, but removing a directory
// would also detach every mount sitting on it in *other* namespaces (Linux ≥ 3.18), i.e. the
// container's root before it has pivoted. A fixed directory is never removed, so nothing stays
// behind and nothing can be pulled from under a container. A lock (images.lock) makes the
// staging tmpfs ours from mount to release; a tmpfs found mounted there while the lock is free
// is a leftover of a killed process and is detached first.
//
// Every partition is its own loop device (offset + size limit; no partition scanning needed)
// with autoclear, and our fd on it is closed as soon as it is mounted: from then on the mount is
// the device's only user, and unmounting (or the death of the last mount namespace holding a
// copy) makes the kernel detach it.
import { chmodSync, closeSync, constants as fsc, fstatSync, mkdirSync, openSync, readdirSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MNT, MS, mount, umount2 } from '../sys/libc.js';
import { ofdLock } from '../sys/native-addon.js';
import { attachLoop, type LoopDevice } from '../sys/loop.js';
import { SysError } from '../sys/errno.js';
import { DiskImageError } from './errors.js';
import { dissectImage, type DissectedImage, type ImagePartition } from './dissect.js';
import { expectedVarUuid, type DpsArch } from './dps.js';
import { readMachineID } from './metadata.js';
import { applyImagePolicy, type ImagePolicy } from './policy.js';

export const STAGING_DIR = '/run/mctl/images';
const STAGING_LOCK = '/run/mctl/images.lock';

export interface MountOptions {
  /** Mount everything read-only (--read-only, or a read-only image). */
  readOnly?: boolean;
  /**
   * Bind the var partition regardless of its UUID (systemd's DISSECT_IMAGE_RELAX_VAR_CHECK).
   * By default var is mounted only if its UUID is HMAC-SHA256(image machine ID, var type).
   */
  relaxVarCheck?: boolean;
  arch?: DpsArch;
  /**
   * Mount the non-root partitions beside the root (STAGING_DIR/parts/DESIGNATOR) instead of at
   * their places below it. For --ephemeral: the runtime stacks an overlay on the root path,
   * which would hide partitions mounted below it, so each gets its own overlay from there.
   */
  separatePartitions?: boolean;
  /** --image-policy: partitions it marks unused are left out; an image that breaks it is refused. */
  policy?: ImagePolicy;
}

export interface MountedPartition extends ImagePartition {
  /** Host path of the mount (below rootDir). */
  where: string;
  device: string;
}

export interface MountedImage {
  /** The assembled root, to be used as the container's root directory. */
  rootDir: string;
  /** The private staging tmpfs holding everything (STAGING_DIR while it is ours). */
  stagingDir: string;
  /** Effective read-only state (requested, or forced by a read-only image file). */
  readOnly: boolean;
  /** The root is a tmpfs holding the image's usr partition (a /usr-only image). */
  usrOnly: boolean;
  dissected: DissectedImage;
  mounted: MountedPartition[];
  /** Partitions found but not mounted, with why. */
  skipped: Array<{ designator: string; number: number; reason: string }>;
  /**
   * Lazily unmount the whole staging tree from this mount namespace and give up the staging
   * lock. Idempotent. Mount namespaces that copied the tree keep their copy.
   */
  release(): void;
}

/**
 * Whether we may write to the image (mode, read-only file system, read-only block device).
 * A regular file without any write bit is read-only even for root, who could open it for
 * writing: that is how `mctl read-only` (and systemd's image code) marks a raw image.
 */
export function imageWritable(path: string): boolean {
  try {
    const fd = openSync(path, fsc.O_RDWR);
    try {
      const st = fstatSync(fd);
      return !(st.isFile() && (st.mode & 0o222) === 0);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM' || code === 'ETXTBSY') return false;
    throw err;
  }
}

function isEmptyDir(path: string): boolean {
  try {
    return statSync(path).isDirectory() && readdirSync(path).length === 0;
  } catch {
    return false;
  }
}

function mountOptionsFor(p: ImagePartition): { flags: number; data: string | null } {
  switch (p.designator) {
    case 'esp':
    case 'xbootldr':
      return { flags: MS.NOSUID | MS.NODEV | MS.NOEXEC, data: 'umask=0077' };
    case 'home':
    case 'srv':
    case 'tmp':
      return { flags: MS.NOSUID | MS.NODEV, data: null };
    default:
      return { flags: 0, data: null };
  }
}

/** Find (or make) the directory a partition goes to; undefined with a reason when it cannot be used. */
function placeFor(root: string, p: ImagePartition, rootWritable: boolean, used: Set<string>): { where?: string; reason?: string } {
  if (p.designator === 'esp' || p.designator === 'xbootldr') {
    // The spec's rule for containers: only onto an existing, empty directory.
    const candidates = p.designator === 'esp' ? ['/efi', '/boot'] : ['/boot'];
    for (const c of candidates) {
      if (used.has(c)) continue;
      if (isEmptyDir(join(root, c))) return { where: c };
    }
    return { reason: `no empty ${candidates.join(' or ')} directory in the image` };
  }
  const target = join(root, p.mountPoint);
  try {
    if (statSync(target).isDirectory()) return { where: p.mountPoint };
    return { reason: `${p.mountPoint} in the image is not a directory` };
  } catch {
    if (!rootWritable) return { reason: `${p.mountPoint} does not exist in the read-only image` };
    mkdirSync(target, { recursive: true, mode: 0o755 });
    return { where: p.mountPoint };
  }
}

/**
 * The skeleton of an empty root around a mounted /usr, as systemd's base-filesystem table has
 * it: the top-level directories, and /bin, /sbin, /lib, /lib64 as symlinks into /usr where /usr
 * has that directory (/lib64 only where the x86-64 dynamic loader lives below usr/lib64).
 */
function populateBaseFilesystem(root: string, usrDir: string): void {
  const dirs: Array<[string, number]> = [['etc', 0o755], ['var', 0o755], ['proc', 0o555], ['sys', 0o555], ['dev', 0o555], ['run', 0o555], ['tmp', 0o1777], ['root', 0o750]];
  for (const [name, mode] of dirs) {
    try {
      mkdirSync(join(root, name), { mode });
      chmodSync(join(root, name), mode); // past the umask
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  const links: Array<[string, string, string]> = [
    ['bin', 'usr/bin', 'bin'],
    ['sbin', 'usr/sbin', 'sbin'],
    ['lib', 'usr/lib', 'lib'],
    ['lib64', 'usr/lib64', 'lib64/ld-linux-x86-64.so.2'],
  ];
  for (const [name, target, probe] of links) {
    try {
      statSync(join(usrDir, probe));
    } catch {
      continue;
    }
    try {
      symlinkSync(target, join(root, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

function describeMountError(err: unknown, image: string, p: ImagePartition): DiskImageError {
  const code = err instanceof SysError ? err.code : String(err);
  const which = p.number === 0 ? 'file system' : `${p.designator} partition ${p.number}`;
  return new DiskImageError(`${image}: cannot mount ${which} (${p.fstype}): ${code}`);
}

/**
 * Attach and mount an image. On any failure everything done so far is undone before the
 * (one-line) error propagates.
 */
export function mountImage(path: string, options: MountOptions = {}): MountedImage {
  const found = dissectImage(path, options.arch ? { arch: options.arch } : {});
  const dissected = options.policy ? applyImagePolicy(found, options.policy, options.arch) : found;
  const readOnly = options.readOnly === true || !imageWritable(path);
  const staging = takeStaging();
  const stagingDir = STAGING_DIR;
  const rootDir = join(stagingDir, 'root');
  const mounted: MountedPartition[] = [];
  const skipped: MountedImage['skipped'] = [];
  const release = (): void => staging.release();

  let loop: LoopDevice | undefined;
  try {
    mkdirSync(rootDir, { mode: 0o755 });
    // A /usr-only image: the root is an empty tmpfs (writable, gone with the container).
    if (dissected.usrOnly) {
      mount('mctl-image-root', rootDir, 'tmpfs', 0, 'mode=0755');
      mkdirSync(join(rootDir, 'usr'), { mode: 0o755 });
    }
    const rootWritable = dissected.usrOnly || !readOnly;
    const used = new Set<string>();
    for (const p of dissected.partitions) {
      let where = '/';
      if (p.designator !== 'root') {
        if (p.designator === 'var' && !options.relaxVarCheck) {
          const machineId = readMachineID(rootDir);
          if (machineId.length !== 16 || p.uuid !== expectedVarUuid(machineId)) {
            skipped.push({ designator: p.designator, number: p.number, reason: 'var partition UUID is not bound to the image machine ID' });
            continue;
          }
        }
        const place = placeFor(rootDir, p, rootWritable && (dissected.usrOnly || !p.readOnly), used);
        if (!place.where) {
          skipped.push({ designator: p.designator, number: p.number, reason: place.reason ?? 'no place to mount it' });
          continue;
        }
        where = place.where;
      }
      const ro = readOnly || p.readOnly;
      loop = attachLoop(path, { offset: p.offset, sizeLimit: p.number === 0 ? 0 : p.size, readOnly: ro });
      const device = loop.path;
      let target = where === '/' ? rootDir : join(rootDir, where);
      if (where !== '/' && options.separatePartitions) {
        target = join(stagingDir, 'parts', p.designator);
        mkdirSync(target, { recursive: true, mode: 0o755 });
      }
      const { flags, data } = mountOptionsFor(p);
      try {
        mount(device, target, p.fstype, flags | (ro ? MS.RDONLY : 0), data);
      } catch (err) {
        throw describeMountError(err, path, p);
      } finally {
        // The mount (if any) now holds the device; autoclear detaches it when that goes.
        loop.close();
        loop = undefined;
      }
      used.add(where);
      mounted.push({ ...p, mountPoint: where, where: target, device });
    }
    const usr = mounted.find((p) => p.designator === 'usr');
    if (dissected.usrOnly && usr) populateBaseFilesystem(rootDir, usr.where);
    return { rootDir, stagingDir, readOnly, usrOnly: dissected.usrOnly, dissected, mounted, skipped, release };
  } catch (err) {
    loop?.detach();
    release();
    throw err;
  }
}

interface Staging {
  release(): void;
}

function isMountedOver(dir: string): boolean {
  return statSync(dir).dev !== statSync(dirname(dir)).dev;
}

/** Lock the staging mount point and put a fresh private tmpfs on it. */
function takeStaging(): Staging {
  mkdirSync(STAGING_DIR, { recursive: true, mode: 0o700 });
  const lockFd = openSync(STAGING_LOCK, fsc.O_CREAT | fsc.O_RDWR, 0o600);
  let mounted = false;
  let done = false;
  const release = (): void => {
    if (done) return;
    done = true;
    try {
      if (mounted) umount2(STAGING_DIR, MNT.DETACH);
    } catch {
      // Already detached.
    } finally {
      closeSync(lockFd); // drops the lock
    }
  };
  try {
    ofdLock(lockFd, 'exclusive', true);
    // Whatever is mounted here while nobody holds the lock was left by a killed process.
    for (let i = 0; i < 64 && isMountedOver(STAGING_DIR); i++) umount2(STAGING_DIR, MNT.DETACH);
    mount('mctl-image', STAGING_DIR, 'tmpfs', MS.NOSUID | MS.NODEV | MS.NOEXEC, 'mode=0700,size=64k');
    mounted = true;
    mount(null, STAGING_DIR, null, MS.PRIVATE);
    return { release };
  } catch (err) {
    release();
    throw err;
  }
}

/** Mount an image read-only, run fn on its root, and release it again (metadata reads). */
export async function withMountedImage<T>(path: string, fn: (root: string) => T | Promise<T>): Promise<T> {
  const image = mountImage(path, { readOnly: true, relaxVarCheck: true });
  try {
    return await fn(image.rootDir);
  } finally {
    image.release();
  }
}
