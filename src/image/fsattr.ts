// File-system attributes the image store needs: the immutable flag (chattr +i), btrfs subvolume
// detection, read-only flag, snapshots and quota limits. All go through src/sys/libc.ts ioctls.
import { closeSync, constants as fsc, openSync, statfsSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { ioctlBuffer, ioctlInt } from '../sys/libc.js';
import { SysError } from '../sys/errno.js';

const FS_IOC_GETFLAGS = 0x80086601;
const FS_IOC_SETFLAGS = 0x40086602;
export const FS_IMMUTABLE_FL = 0x10;

const BTRFS_SUPER_MAGIC = 0x9123683e;
const BTRFS_FIRST_FREE_OBJECTID = 256n;
const BTRFS_IOC_SUBVOL_GETFLAGS = 0x80089419;
const BTRFS_IOC_SUBVOL_SETFLAGS = 0x4008941a;
const BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417;
const BTRFS_IOC_QGROUP_LIMIT = 0x8030942b;
const BTRFS_SUBVOL_RDONLY = 2n;
const BTRFS_QGROUP_LIMIT_MAX_RFER = 1n;

function withFd<T>(path: string, flags: number, fn: (fd: number) => T): T {
  const fd = openSync(path, flags | fsc.O_NOCTTY);
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** FS_IOC_GETFLAGS, or 0 when the file system has no such flags (tmpfs, overlay…). */
export function getInodeFlags(path: string): number {
  try {
    return withFd(path, fsc.O_RDONLY | fsc.O_NONBLOCK, (fd) => ioctlInt(fd, FS_IOC_GETFLAGS));
  } catch (err) {
    if (err instanceof SysError && (err.code === 'ENOTTY' || err.code === 'EOPNOTSUPP' || err.code === 'ENOSYS')) return 0;
    throw err;
  }
}

/** Set or clear inode flags (mask) to value, like chattr. */
export function setInodeFlags(path: string, mask: number, value: number): void {
  withFd(path, fsc.O_RDONLY | fsc.O_NONBLOCK, (fd) => {
    const old = ioctlInt(fd, FS_IOC_GETFLAGS);
    const next = (old & ~mask) | (value & mask);
    if (next !== old) ioctlInt(fd, FS_IOC_SETFLAGS, next);
  });
}

export function isImmutable(path: string): boolean {
  return (getInodeFlags(path) & FS_IMMUTABLE_FL) !== 0;
}

export function isOnBtrfs(path: string): boolean {
  return statfsSync(path).type === BTRFS_SUPER_MAGIC;
}

/** A btrfs subvolume's root directory has inode 256 on a btrfs file system. */
export function isSubvolume(path: string): boolean {
  const st = statSync(path, { bigint: true });
  return st.isDirectory() && st.ino === BTRFS_FIRST_FREE_OBJECTID && isOnBtrfs(path);
}

function subvolFlags(fd: number): bigint {
  const buf = Buffer.alloc(8);
  ioctlBuffer(fd, BTRFS_IOC_SUBVOL_GETFLAGS, buf);
  return buf.readBigUInt64LE(0);
}

export function isSubvolumeReadOnly(path: string): boolean {
  return withFd(path, fsc.O_RDONLY | fsc.O_DIRECTORY, (fd) => (subvolFlags(fd) & BTRFS_SUBVOL_RDONLY) !== 0n);
}

export function setSubvolumeReadOnly(path: string, readOnly: boolean): void {
  withFd(path, fsc.O_RDONLY | fsc.O_DIRECTORY, (fd) => {
    const old = subvolFlags(fd);
    const next = readOnly ? old | BTRFS_SUBVOL_RDONLY : old & ~BTRFS_SUBVOL_RDONLY;
    if (next === old) return;
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64LE(next);
    ioctlBuffer(fd, BTRFS_IOC_SUBVOL_SETFLAGS, buf);
  });
}

/** Snapshot subvolume `source` as `target` (same btrfs file system); throws SysError otherwise. */
export function snapshotSubvolume(source: string, target: string, readOnly: boolean): void {
  withFd(source, fsc.O_RDONLY | fsc.O_DIRECTORY, (srcFd) =>
    withFd(dirname(target), fsc.O_RDONLY | fsc.O_DIRECTORY, (dirFd) => {
      // struct btrfs_ioctl_vol_args_v2: s64 fd, u64 transid, u64 flags, u64 unused[4], char name[4040].
      const args = Buffer.alloc(4096);
      args.writeBigInt64LE(BigInt(srcFd), 0);
      args.writeBigUInt64LE(readOnly ? BTRFS_SUBVOL_RDONLY : 0n, 16);
      const name = Buffer.from(basename(target));
      if (name.length >= 4040) throw new SysError('btrfs snapshot', 36, target);
      name.copy(args, 56);
      ioctlBuffer(dirFd, BTRFS_IOC_SNAP_CREATE_V2, args);
    }),
  );
}

/** Limit the referenced size of a subvolume's own qgroup (quota must be enabled on the fs). */
export function setSubvolumeLimit(path: string, bytes: bigint): void {
  withFd(path, fsc.O_RDONLY | fsc.O_DIRECTORY, (fd) => {
    // struct btrfs_ioctl_qgroup_limit_args: u64 qgroupid (0 = this subvolume), then
    // struct btrfs_qgroup_limit { u64 flags, max_rfer, max_excl, rsv_rfer, rsv_excl }.
    const args = Buffer.alloc(48);
    args.writeBigUInt64LE(BTRFS_QGROUP_LIMIT_MAX_RFER, 8);
    args.writeBigUInt64LE(bytes, 16);
    ioctlBuffer(fd, BTRFS_IOC_QGROUP_LIMIT, args);
  });
}
