// Loop devices: attach a file (or a byte range of it: one partition) as /dev/loopN.
//
// This host has no udev and no partition scanning, so a GPT partition is never a loopNpM node:
// each partition we need becomes its own loop device, configured by offset + size limit.
// Devices are configured with LO_FLAGS_AUTOCLEAR, so the kernel detaches them when the last
// user goes (our fd, then the mount); nothing has to be cleaned up after a crash once mounts
// are gone. LOOP_CONFIGURE (Linux 5.8) does it in one ioctl; older kernels go through
// util-linux `losetup` and then get autoclear set with LOOP_SET_STATUS64.
import { closeSync, constants as fsc, openSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ioctlBuffer, ioctlInt } from './libc.js';
import { SysError } from './errno.js';

const LOOP_CTL_GET_FREE = 0x4c82;
const LOOP_CONFIGURE = 0x4c0a;
const LOOP_CLR_FD = 0x4c01;
const LOOP_SET_STATUS64 = 0x4c04;
const LOOP_GET_STATUS64 = 0x4c05;

export const LO_FLAGS = { READ_ONLY: 1, AUTOCLEAR: 4, PARTSCAN: 8, DIRECT_IO: 16 } as const;

// struct loop_info64 (232 bytes) field offsets, and struct loop_config (304 bytes) around it.
const INFO_OFFSET = 24;
const INFO_SIZELIMIT = 32;
const INFO_FLAGS = 52;
const INFO_FILE_NAME = 56;
const INFO_SIZE = 232;
const CONFIG_SIZE = 304;
const CONFIG_INFO = 8;

export interface LoopOptions {
  /** Byte offset into the backing file (a partition's start). */
  offset?: number;
  /** Bytes visible through the device (a partition's size); 0 = to the end of the file. */
  sizeLimit?: number;
  readOnly?: boolean;
  /** Bypass the page cache of the backing file (as systemd does by default); falls back silently. */
  directIo?: boolean;
}

export interface LoopDevice {
  readonly path: string;
  readonly number: number;
  readonly readOnly: boolean;
  /** Our open fd on the device: the device stays attached while it (or a mount) holds it. */
  readonly fd: number;
  /** Drop our reference; with autoclear the kernel detaches once nothing (mounts) uses it. */
  close(): void;
  /** Detach now if unused (or mark for autoclear if busy), and close our fd. */
  detach(): void;
}

function buildInfo(buf: Buffer, at: number, file: string, opts: LoopOptions, flags: number): void {
  buf.writeBigUInt64LE(BigInt(opts.offset ?? 0), at + INFO_OFFSET);
  buf.writeBigUInt64LE(BigInt(opts.sizeLimit ?? 0), at + INFO_SIZELIMIT);
  buf.writeUInt32LE(flags, at + INFO_FLAGS);
  Buffer.from(file).subarray(0, 63).copy(buf, at + INFO_FILE_NAME);
}

function loopFlags(opts: LoopOptions, directIo: boolean): number {
  return LO_FLAGS.AUTOCLEAR | (opts.readOnly ? LO_FLAGS.READ_ONLY : 0) | (directIo ? LO_FLAGS.DIRECT_IO : 0);
}

function forceLosetup(): boolean {
  return process.env['MCTL_LOOP_LOSETUP'] === '1';
}

function makeDevice(number: number, fd: number, readOnly: boolean): LoopDevice {
  const path = `/dev/loop${number}`;
  let open = true;
  return {
    path,
    number,
    readOnly,
    fd,
    close() {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
    detach() {
      if (!open) return;
      try {
        ioctlInt(fd, LOOP_CLR_FD, 0);
      } catch {
        // ENXIO: already detached (autoclear beat us); anything else: autoclear will finish it.
      }
      open = false;
      closeSync(fd);
    },
  };
}

/** Attach with LOOP_CTL_GET_FREE + LOOP_CONFIGURE, retrying when another attacher wins the race. */
function attachConfigure(file: string, backingFd: number, opts: LoopOptions): LoopDevice {
  const ctl = openSync('/dev/loop-control', fsc.O_RDWR);
  try {
    for (let attempt = 0; attempt < 64; attempt++) {
      // The free device's number is the ioctl's return value (it takes no argument).
      const number = ioctlBuffer(ctl, LOOP_CTL_GET_FREE, null);
      let fd: number;
      try {
        fd = openSync(`/dev/loop${number}`, opts.readOnly ? fsc.O_RDONLY : fsc.O_RDWR);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      let directIo = opts.directIo ?? false;
      for (;;) {
        const cfg = Buffer.alloc(CONFIG_SIZE);
        cfg.writeUInt32LE(backingFd, 0);
        buildInfo(cfg, CONFIG_INFO, file, opts, loopFlags(opts, directIo));
        try {
          ioctlBuffer(fd, LOOP_CONFIGURE, cfg);
          return makeDevice(number, fd, opts.readOnly ?? false);
        } catch (err) {
          // Direct I/O needs aligned offsets and a file system that supports it: retry buffered.
          if (err instanceof SysError && err.code === 'EINVAL' && directIo) {
            directIo = false;
            continue;
          }
          closeSync(fd);
          if (err instanceof SysError && err.code === 'EBUSY') break; // lost the race for this device
          throw err;
        }
      }
    }
    throw new SysError('LOOP_CONFIGURE', 16, file, 'no free loop device after 64 attempts');
  } finally {
    closeSync(ctl);
  }
}

/** Fallback for kernels without LOOP_CONFIGURE: util-linux losetup, then autoclear via SET_STATUS64. */
function attachLosetup(file: string, opts: LoopOptions): LoopDevice {
  const args = ['--find', '--show'];
  if (opts.offset) args.push('--offset', String(opts.offset));
  if (opts.sizeLimit) args.push('--sizelimit', String(opts.sizeLimit));
  if (opts.readOnly) args.push('--read-only');
  args.push('--', file);
  // node:child_process only on this (old-kernel) path, off the launcher's start path.
  const { execFileSync } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
  let out: string;
  try {
    out = execFileSync('losetup', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? '').trim().split('\n')[0];
    throw new SysError('losetup', 5, file, stderr || 'failed');
  }
  const m = /^\/dev\/loop(\d+)$/.exec(out);
  if (!m) throw new SysError('losetup', 5, file, `unexpected output '${out}'`);
  const number = Number(m[1]);
  const fd = openSync(out, opts.readOnly ? fsc.O_RDONLY : fsc.O_RDWR);
  try {
    const info = Buffer.alloc(INFO_SIZE);
    ioctlBuffer(fd, LOOP_GET_STATUS64, info);
    info.writeUInt32LE(info.readUInt32LE(INFO_FLAGS) | LO_FLAGS.AUTOCLEAR, INFO_FLAGS);
    ioctlBuffer(fd, LOOP_SET_STATUS64, info);
  } catch (err) {
    try {
      ioctlInt(fd, LOOP_CLR_FD, 0);
    } finally {
      closeSync(fd);
    }
    throw err;
  }
  return makeDevice(number, fd, opts.readOnly ?? false);
}

/**
 * Attach `file` (a regular file) as a new loop device. The returned device holds an fd on it;
 * mount from `device.path`, then `close()` — the kernel detaches it when the mount goes.
 */
export function attachLoop(file: string, opts: LoopOptions = {}): LoopDevice {
  if (forceLosetup()) return attachLosetup(file, opts);
  const backingFd = openSync(file, opts.readOnly ? fsc.O_RDONLY : fsc.O_RDWR);
  try {
    return attachConfigure(file, backingFd, opts);
  } catch (err) {
    if (err instanceof SysError && (err.code === 'ENOTTY' || err.code === 'EINVAL') && !opts.directIo) {
      // LOOP_CONFIGURE unknown to this kernel.
      return attachLosetup(file, opts);
    }
    throw err;
  } finally {
    closeSync(backingFd);
  }
}

/** Backing file of an attached loop device (from sysfs), or undefined when it is free. */
export function loopBackingFile(number: number): string | undefined {
  try {
    return readFileSync(`/sys/block/loop${number}/loop/backing_file`, 'utf8').trim();
  } catch {
    return undefined;
  }
}
