// --image=FILE|/dev/BLOCK for mctl-nspawn: turn a disk image into a root directory the launcher
// boots like any other, and make sure nothing of it outlives the container on the host.
//
// Life cycle:
//  1. lock the image (exclusive; shared when it is used read-only), as systemd-nspawn does;
//  2. dissect + mount it under a private staging tmpfs in the host's mount namespace
//     (src/image/mount.ts); partitions are loop devices with autoclear;
//  3. launch with spec.root = the staging root; the container's mount namespace copies the
//     staging tree (the runtime rbinds the root), so in the afterNamespaces hook the host-side
//     tree is lazily detached: from then on the mounts live only in the container's namespace,
//     and the loop devices detach themselves when that namespace dies. The same hook hands the
//     image lock's fds to the native supervisor (cleared FD_CLOEXEC before its execve), which
//     holds them until the container exits — stock machined sees the image as busy;
//  4. on a failed start the onAbort hook (and release() in any case) unmounts everything.
//
// A /usr-only image (DPS usr partition, no root partition) boots from an empty tmpfs root with
// the partition at /usr and the /bin, /sbin, /lib(64) symlinks into it (src/image/mount.ts).
//
// --ephemeral and --volatile=overlay: the image is attached read-only and every partition gets an
// overlay with a tmpfs upper inside the container's namespace (root through spec.rootLayer =
// 'overlay', the others as overlay mount ops), so writes vanish at exit and the image file is
// never copied. --volatile=yes|state attach it read-only too (the launcher adds the tmpfs layers).
//
// An image that cannot be written at all (squashfs, erofs, a GPT read-only root, a file without
// write permission), started without --read-only/--volatile/-x, gets an empty tmpfs on /var: what
// --volatile=state does. Stock nspawn boots such an image read-only as a whole, and a Debian guest
// then ends "degraded" (systemd-logind cannot create its StateDirectory /var/lib/systemd/linger).
import { basename } from 'node:path';
import { statSync } from 'node:fs';
import { cleanupHostname } from '../common/names.js';
import { UserError } from '../common/errors.js';
import { findImage, lockImage, mountImage, imageWritable, parseImagePolicy, type ImageLock, type MountedImage } from '../image/index.js';
import type { LaunchHooks } from './launch.js';
import type { MountOp } from './spec.js';
import type { VolatileMode } from './options.js';

export interface ImageRootOptions {
  /** --read-only */
  readOnly: boolean;
  /** -x/--ephemeral */
  ephemeral: boolean;
  /** --volatile= (default no) */
  volatile?: VolatileMode;
  /** --image-policy= (systemd.image-policy(7)); none: every partition found is used. */
  policy?: string;
}

export interface ImageRoot {
  /** spec.root */
  root: string;
  /**
   * spec.readOnlyRoot: --read-only, --volatile=state, or an image we cannot write (file mode,
   * squashfs, GPT flag); with a throw-away layer (-x, --volatile=overlay|yes) only --read-only.
   */
  readOnly: boolean;
  /** spec.rootLayer: 'overlay' for --ephemeral and --volatile=overlay, else 'plain'. */
  rootLayer: 'plain' | 'overlay';
  /**
   * Mount ops to put FIRST in spec.mounts: overlays of the non-root partitions (-x,
   * --volatile=overlay), or the tmpfs on /var of an image that cannot be written.
   */
  mounts: MountOp[];
  /** What was mounted (for -q-less status output and tests). */
  image: MountedImage;
  /** The image lock; its fds must stay open in the process that supervises the container. */
  lock: ImageLock;
  /** Lazily detach the host-side mounts (once the container's namespace holds its copy). */
  detachHost(): void;
  /** Undo everything: host mounts, staging directory, lock. Idempotent. */
  release(): void;
}

/** Default machine name of an image: its file name without ".raw", cleaned up (as nspawn). */
export function imageMachineName(path: string): string {
  const name = cleanupHostname(basename(path).replace(/\.raw$/, ''));
  if (!name) throw new UserError(`cannot derive a machine name from ${path}`, { hint: 'use --machine=NAME' });
  return name;
}

export type MachineRoot = { kind: 'directory'; path: string; readOnly: boolean } | { kind: 'image'; path: string; readOnly: boolean };

/**
 * nspawn's root for `-M NAME` without -D/-i: the pool image NAME — a directory/subvolume
 * (-D) or NAME.raw / a block device (-i); a read-only image implies --read-only.
 * Undefined when there is no such image.
 */
export function resolveMachineImage(name: string): MachineRoot | undefined {
  const image = findImage(name);
  if (!image || image.name === '.host') return undefined;
  if (image.type === 'raw' || image.type === 'block') return { kind: 'image', path: image.path, readOnly: image.readOnly };
  return { kind: 'directory', path: image.path, readOnly: image.readOnly };
}

function checkImagePath(path: string): void {
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UserError(`image ${path} cannot be used: ${code === 'ENOENT' ? 'no such file' : code}`);
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new UserError(`image ${path} is neither a regular file nor a block device`);
}

/** Lock, dissect and mount an image for a container. Throws one-line errors, leaving nothing behind. */
export function prepareImageRoot(path: string, options: ImageRootOptions): ImageRoot {
  checkImagePath(path);
  const policy = options.policy !== undefined ? parseImagePolicy(options.policy) : undefined;
  const volatile = options.volatile ?? 'no';
  // A throw-away layer over the root (which would hide partitions mounted below the root path).
  const overlay = options.ephemeral || volatile === 'overlay';
  const wantReadOnly = options.readOnly || options.ephemeral || volatile !== 'no' || !imageWritable(path);
  const lock = lockImage(path, { shared: wantReadOnly, what: `image ${path}` });
  let image: MountedImage;
  try {
    image = mountImage(path, { readOnly: wantReadOnly, separatePartitions: overlay, ...(policy ? { policy } : {}) });
  } catch (err) {
    lock.release();
    throw err;
  }
  const mounts: MountOp[] = [];
  if (overlay) {
    // The runtime stacks the root's overlay on the root path, and submounts are not part of an
    // overlay anyway: each partition (mounted beside the root) gets its own throw-away layer.
    for (const p of image.mounted) {
      if (p.designator === 'root') continue;
      mounts.push({ kind: 'overlay', destination: p.mountPoint, lowerDirs: [p.where], upperDir: null, workDir: null, temporaryUpper: true });
    }
  }
  const rootReadOnly = image.mounted.find((p) => p.designator === 'root')?.readOnly ?? false;
  // A /usr-only image's root is a fresh tmpfs: writable whatever the image is.
  const unwritable = !image.usrOnly && (image.readOnly || rootReadOnly);
  // Nothing asked about the root, and it cannot be written: give the OS a /var it can write
  // (--volatile=state), unless the image brings its own var (or a tmp partition at /var/tmp).
  const ownVar = image.mounted.some((p) => p.mountPoint === '/var' || p.mountPoint.startsWith('/var/'));
  if (unwritable && !options.readOnly && !options.ephemeral && volatile === 'no' && !ownVar) {
    mounts.push({ kind: 'tmpfs', destination: '/var', options: 'mode=0755' });
  }
  let released = false;
  return {
    root: image.rootDir,
    readOnly: overlay || volatile === 'yes' ? options.readOnly : options.readOnly || volatile === 'state' || unwritable,
    rootLayer: overlay ? 'overlay' : 'plain',
    mounts,
    image,
    lock,
    detachHost: () => image.release(),
    release() {
      if (released) return;
      released = true;
      image.release();
      lock.release();
    },
  };
}

/** Launch hooks for an image root: detach host mounts once the namespace exists; undo on abort. */
export function imageLaunchHooks(root: ImageRoot): LaunchHooks {
  return {
    afterNamespaces: [
      async () => {
        root.detachHost();
        // The supervisor this process execve()s into must hold the image lock for the
        // container's life; the container itself was forked before this and never sees it.
        const { clearCloexec } = await import('../sys/native-addon.js');
        for (const fd of root.lock.fds) clearCloexec(fd);
      },
    ],
    onAbort: [
      async () => {
        root.release();
      },
    ],
  };
}
