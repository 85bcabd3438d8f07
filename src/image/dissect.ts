// Dissect a disk image: which byte ranges hold which file systems and where they belong.
// Layouts, as systemd-nspawn --image accepts them: a GPT with Discoverable Partitions (or one
// generic Linux partition), an MBR disk with one Linux partition, or a bare file system.
// Everything here only reads the image, so it runs (and is tested) without root.
import { closeSync, openSync } from 'node:fs';
import { DiskImageError } from './errors.js';
import { fdReader, imageSizeOfFd, parsePartitionTable, type PartitionTable, type ReadAt } from './gpt.js';
import { discoverPartitions, MOUNT_POINTS, type Designator, type Discovery, type DpsArch } from './dps.js';

export type FsType = 'ext4' | 'btrfs' | 'xfs' | 'squashfs' | 'erofs' | 'vfat' | 'swap';

/** File systems that can only be mounted read-only. */
export const READ_ONLY_FS: ReadonlySet<FsType> = new Set(['squashfs', 'erofs']);

/** Identify a file system from its superblock magic (what blkid would say, for the types we mount). */
export function probeFilesystem(read: ReadAt, offset: number, size: number): FsType | undefined {
  const at = (o: number, n: number): Buffer => (o + n <= size ? read(offset + o, n) : Buffer.alloc(0));
  const head = at(0, 4096);
  if (head.length >= 4) {
    if (head.toString('latin1', 0, 4) === 'hsqs') return 'squashfs';
    if (head.toString('latin1', 0, 4) === 'XFSB') return 'xfs';
  }
  if (head.length >= 1084 && head.readUInt32LE(1024) === 0xe0f5e1e2) return 'erofs';
  if (head.length >= 1082 && head.readUInt16LE(1080) === 0xef53) return 'ext4';
  if (head.length >= 4096 && head.toString('latin1', 4086, 4096) === 'SWAPSPACE2') return 'swap';
  const btrfs = at(65536 + 64, 8);
  if (btrfs.length === 8 && btrfs.toString('latin1') === '_BHRfS_M') return 'btrfs';
  if (head.length >= 512 && head[510] === 0x55 && head[511] === 0xaa) {
    const fat16 = head.toString('latin1', 54, 59);
    const fat32 = head.toString('latin1', 82, 87);
    if (fat16 === 'FAT12' || fat16 === 'FAT16' || fat32 === 'FAT32') return 'vfat';
  }
  return undefined;
}

export interface ImagePartition {
  designator: Designator;
  /** Where it is mounted, relative to the container root. */
  mountPoint: string;
  /** 1-based partition number, 0 for a bare file system. */
  number: number;
  offset: number;
  size: number;
  fstype: FsType;
  /** GPT read-only flag or a read-only file system type. */
  readOnly: boolean;
  uuid: string;
  label: string;
}

export interface DissectedImage {
  path: string;
  size: number;
  layout: 'gpt' | 'mbr' | 'filesystem';
  table: PartitionTable | undefined;
  /** In mount order: root first. */
  partitions: ImagePartition[];
  /**
   * A /usr-only image (DPS usr partition, no root partition): the root is an empty tmpfs with
   * the usr partition at /usr (systemd's DISSECT_IMAGE_USR_NO_ROOT).
   */
  usrOnly: boolean;
  ignored: Discovery['ignored'];
}

export interface DissectOptions {
  arch?: DpsArch;
}

function describeLayout(table: PartitionTable): string {
  return table.scheme === 'gpt' ? 'GPT' : 'MBR';
}

/** Dissect an image given a reader; throws DiskImageError with one line for anything unusable. */
export function dissectReader(path: string, read: ReadAt, size: number, options: DissectOptions = {}): DissectedImage {
  if (size === 0) throw new DiskImageError(`${path}: image is empty`);
  const table = parsePartitionTable(read, size);
  if (!table) {
    const fstype = probeFilesystem(read, 0, size);
    if (!fstype || fstype === 'swap' || fstype === 'vfat') {
      if (size < 4096) throw new DiskImageError(`${path}: image is truncated (${size} bytes): no partition table or file system`);
      throw new DiskImageError(`${path}: no partition table and no file system that can be a root (ext4, btrfs, xfs, squashfs, erofs)`);
    }
    return {
      path,
      size,
      layout: 'filesystem',
      table: undefined,
      partitions: [{ designator: 'root', mountPoint: '/', number: 0, offset: 0, size, fstype, readOnly: READ_ONLY_FS.has(fstype), uuid: '', label: '' }],
      usrOnly: false,
      ignored: [],
    };
  }
  const discovery = discoverPartitions(table, options.arch ? { arch: options.arch } : {});
  const root = discovery.partitions.root;
  const usrOnly = !root && discovery.partitions.usr !== undefined;
  if (!root && !usrOnly) {
    throw new DiskImageError(`${path}: ${describeLayout(table)} disk has no root partition for this architecture (Discoverable Partitions type, or a single generic Linux partition)`);
  }
  const partitions: ImagePartition[] = [];
  for (const [designator, mountPoint] of MOUNT_POINTS) {
    const p = discovery.partitions[designator];
    if (!p) continue;
    const fstype = probeFilesystem(read, p.offset, p.size);
    if (!fstype || fstype === 'swap') {
      if (designator === 'root' || (designator === 'usr' && usrOnly)) throw new DiskImageError(`${path}: ${designator} partition ${p.number} holds no known file system (ext4, btrfs, xfs, squashfs, erofs)`);
      discovery.ignored.push({ number: p.number, reason: `${designator} partition holds no known file system` });
      continue;
    }
    if (fstype === 'vfat' && designator !== 'esp' && designator !== 'xbootldr') {
      if (designator === 'root' || (designator === 'usr' && usrOnly)) throw new DiskImageError(`${path}: ${designator} partition ${p.number} is a FAT file system`);
      discovery.ignored.push({ number: p.number, reason: `${designator} partition is FAT` });
      continue;
    }
    partitions.push({
      designator,
      mountPoint,
      number: p.number,
      offset: p.offset,
      size: p.size,
      fstype,
      readOnly: p.readOnly || READ_ONLY_FS.has(fstype),
      uuid: p.uuid,
      label: p.label,
    });
  }
  return { path, size, layout: table.scheme, table, partitions, usrOnly, ignored: discovery.ignored };
}

/** Dissect an image file or block device. */
export function dissectImage(path: string, options: DissectOptions = {}): DissectedImage {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new DiskImageError(`${path}: cannot open image (${code ?? 'error'})`);
  }
  try {
    return dissectReader(path, fdReader(fd), imageSizeOfFd(fd), options);
  } finally {
    closeSync(fd);
  }
}
