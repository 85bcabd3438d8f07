// Mount a dissected disk image under a private staging directory:
//
//   /run/mctl/images/<id>/        tmpfs, marked MS_PRIVATE: nothing below propagates anywhere
//   /run/mctl/images/<id>/root    the root partition, with usr/home/srv/var/tmp/esp/xbootldr
//                                 mounted at their places below it
//
// Every partition is its own loop device (offset + size limit; no partition scanning needed)
// with autoclear, and our fd on it is closed as soon as it is mounted: from then on the mount is
// the device's only user, and unmounting (or the death of the last mount namespace holding a
// copy) makes the kernel detach it. `release()` lazily unmounts the whole staging tree and
// removes the directory; a launcher calls it once the container's mount namespace holds its own
// copy, so nothing of the image stays on the host, and again (harmlessly) on failure.
import { closeSync, constants as fsc, mkdirSync, mkdtempSync, openSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { MNT, MS, mount, umount2 } from '../sys/libc.js';
import { attachLoop, type LoopDevice } from '../sys/loop.js';
import { SysError } from '../sys/errno.js';
import { DiskImageError } from './errors.js';
import { dissectImage, type DissectedImage, type ImagePartition } from './dissect.js';
import { expectedVarUuid, type DpsArch } from './dps.js';
import { readMachineID } from './metadata.js';

export const STAGING_BASE = '/run/mctl/images';

export interface MountOptions {
  /** Mount everything read-only (--read-only, or a read-only image). */
  readOnly?: boolean;
  /**
   * Bind the var partition regardless of its UUID (systemd's DISSECT_IMAGE_RELAX_VAR_CHECK).
   * By default var is mounted only if its UUID is HMAC-SHA256(image machine ID, var type).
   */
  relaxVarCheck?: boolean;
  arch?: DpsArch;
}

export interface MountedPartition extends ImagePartition {
  /** Host path of the mount (below rootDir). */
  where: string;
  device: string;
}

export interface MountedImage {
  /** The assembled root, to be used as the container's root directory. */
  rootDir: string;
  /** The private staging directory holding everything. */
  stagingDir: string;
  /** Effective read-only state (requested, or forced by a read-only image file). */
  readOnly: boolean;
  dissected: DissectedImage;
  mounted: MountedPartition[];
  /** Partitions found but not mounted, with why. */
  skipped: Array<{ designator: string; number: number; reason: string }>;
  /** Unmount everything (lazily) and remove the staging directory. Idempotent. */
  release(): void;
}

/** Whether we may write to the image (mode, read-only file system, read-only block device). */
export function imageWritable(path: string): boolean {
  try {
    closeSync(openSync(path, fsc.O_RDWR));
    return true;
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
  const dissected = dissectImage(path, options.arch ? { arch: options.arch } : {});
  const readOnly = options.readOnly === true || !imageWritable(path);
  mkdirSync(STAGING_BASE, { recursive: true, mode: 0o700 });
  const stagingDir = mkdtempSync(join(STAGING_BASE, 'img-'));
  const rootDir = join(stagingDir, 'root');
  let stagingMounted = false;
  const mounted: MountedPartition[] = [];
  const skipped: MountedImage['skipped'] = [];
  let released = false;

  const release = (): void => {
    if (released) return;
    released = true;
    if (stagingMounted) {
      try {
        umount2(stagingDir, MNT.DETACH);
      } catch {
        // Already gone (e.g. detached by a launcher in this namespace).
      }
    }
    try {
      rmdirSync(stagingDir);
    } catch {
      // Left only if something still sits in it; a later release of the same tree removes it.
    }
  };

  let loop: LoopDevice | undefined;
  try {
    // A private tmpfs as the staging root: mounts below it never propagate to or from the host.
    mount('mctl-image', stagingDir, 'tmpfs', MS.NOSUID | MS.NODEV | MS.NOEXEC, 'mode=0700,size=64k');
    stagingMounted = true;
    mount(null, stagingDir, null, MS.PRIVATE);
    mkdirSync(rootDir, { mode: 0o755 });

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
        const place = placeFor(rootDir, p, !readOnly && !p.readOnly, used);
        if (!place.where) {
          skipped.push({ designator: p.designator, number: p.number, reason: place.reason ?? 'no place to mount it' });
          continue;
        }
        where = place.where;
      }
      const ro = readOnly || p.readOnly;
      loop = attachLoop(path, { offset: p.offset, sizeLimit: p.number === 0 ? 0 : p.size, readOnly: ro });
      const device = loop.path;
      const target = where === '/' ? rootDir : join(rootDir, where);
      const { flags, data } = mountOptionsFor(p);
      try {
        mount(loop.path, target, p.fstype, flags | (ro ? MS.RDONLY : 0), data);
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
    return { rootDir, stagingDir, readOnly, dissected, mounted, skipped, release };
  } catch (err) {
    loop?.detach();
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
