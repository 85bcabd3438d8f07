// The transfers running on this host, for list-transfers and cancel-transfer. systemd-importd
// keeps them in its memory; we have no daemon, so each transfer publishes a small file
// /run/mctl/transfers/ID (its PID, type, source and target, progress) and holds an OFD lock on
// it for its whole life. A file nobody holds is the leftover of a killed process: it is removed
// on sight, so a listed transfer is always a running one.
import { closeSync, fstatSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, unlinkSync, writeSync, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../common/errors.js';
import { ofdLock } from '../sys/native-addon.js';

export const TRANSFER_DIR = '/run/mctl/transfers';

/** Transfer types, named as importd names them. */
export type TransferType = 'pull-tar' | 'pull-raw' | 'import-tar' | 'import-raw' | 'import-fs' | 'export-tar' | 'export-raw';

export interface TransferInfo {
  id: number;
  pid: number;
  type: TransferType;
  /** Where the data comes from (pull, import) or goes to (export). */
  remote: string;
  /** The image name in the pool ("" while a default name is not known). */
  local: string;
  /** 0..1, or null when the size is unknown (a pipe, a server without Content-Length). */
  progress: number | null;
  /** µs since the epoch. */
  started: number;
}

/** The running transfer's handle on its own record. */
export interface TransferRecord {
  readonly id: number | null;
  update(bytes: number, total: number | null): void;
  close(): void;
}

function transferDir(): string {
  return process.env['MCTL_TRANSFER_DIR'] || TRANSFER_DIR;
}

// The progress sits in a fixed-width first line, rewritten in place (pwrite at offset 0): the
// file keeps its inode, and with it the lock, and a reader never sees a half-written record.
const PROGRESS_WIDTH = 8;
function progressField(p: number | null): string {
  return (p === null ? 'n/a' : Math.min(1, Math.max(0, p)).toFixed(6)).padStart(PROGRESS_WIDTH);
}

/** True when some process holds the record's lock; an unheld record is removed. */
function recordIsLive(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDWR | fsc.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? readOnlyProbe(path) : false;
  }
  try {
    if (!ofdLock(fd, 'exclusive')) return true;
    // Nobody holds it: a dead transfer's. Remove it unless the name now points at another file.
    try {
      if (statSync(path).ino === fstatSync(fd).ino) unlinkSync(path);
    } catch {
      // already gone
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

/** For users who may not write the record: a shared lock still conflicts with the holder's. */
function readOnlyProbe(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch {
    return false;
  }
  try {
    return !ofdLock(fd, 'shared');
  } finally {
    closeSync(fd);
  }
}

const NO_RECORD: TransferRecord = { id: null, update: () => undefined, close: () => undefined };

/**
 * Publish a running transfer under the lowest free ID. The record is built and locked under a
 * temporary name and then hard-linked to its ID (atomic, fails if the ID is taken), so no
 * reader ever sees an unlocked record of a live transfer. Best effort: without a writable /run
 * the transfer runs unlisted.
 */
export function openTransferRecord(info: Omit<TransferInfo, 'id' | 'pid' | 'progress' | 'started'>): TransferRecord {
  const dir = transferDir();
  let fd = -1;
  let temp = '';
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    temp = join(dir, `.new-${process.pid}-${Date.now().toString(36)}`);
    fd = openSync(temp, fsc.O_CREAT | fsc.O_EXCL | fsc.O_RDWR, 0o644);
    if (!ofdLock(fd, 'exclusive')) throw new Error('fresh record already locked');
    const body = JSON.stringify({ pid: process.pid, type: info.type, remote: info.remote, local: info.local, started: Date.now() * 1000 });
    writeSync(fd, `${progressField(null)}\n${body}\n`);
    let id = 1;
    for (;;) {
      const path = join(dir, String(id));
      try {
        linkSync(temp, path);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (recordIsLive(path)) id++;
      }
    }
    unlinkSync(temp);
    const heldFd = fd;
    const path = join(dir, String(id));
    let last = 0;
    let closed = false;
    return {
      id,
      update(bytes, total) {
        const now = Date.now();
        if (closed || now - last < 200) return; // a few writes a second are plenty
        last = now;
        writeSync(heldFd, progressField(total && total > 0 ? bytes / total : null), 0, 'latin1');
      },
      close() {
        if (closed) return;
        closed = true;
        try {
          unlinkSync(path);
        } catch {
          // removed by hand
        }
        closeSync(heldFd);
      },
    };
  } catch {
    if (fd >= 0) closeSync(fd);
    if (temp) {
      try {
        unlinkSync(temp);
      } catch {
        // never created
      }
    }
    return NO_RECORD;
  }
}

function readRecord(dir: string, name: string): TransferInfo | null {
  const path = join(dir, name);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  if (!recordIsLive(path)) return null;
  const nl = text.indexOf('\n');
  try {
    const p = text.slice(0, nl).trim();
    const body = JSON.parse(text.slice(nl + 1)) as Omit<TransferInfo, 'id' | 'progress'>;
    return { id: Number(name), pid: body.pid, type: body.type, remote: body.remote, local: body.local, started: body.started, progress: p === 'n/a' ? null : Number(p) };
  } catch {
    return null; // being written right now, or not ours
  }
}

/** Running transfers, by ID; leftovers of killed transfers are removed on the way. */
export function listTransfers(): TransferInfo[] {
  const dir = transferDir();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => /^[1-9][0-9]*$/.test(n))
    .map((n) => readRecord(dir, n))
    .filter((t): t is TransferInfo => t !== null)
    .sort((a, b) => a.id - b.id);
}

/**
 * Cancel transfer ID as importd does (SIGTERM + SIGCONT to the worker, which then cleans up
 * exactly as on Ctrl-C), and wait until it has finished cleaning up (its record is released).
 */
export async function cancelTransfer(id: number, options: { timeoutMs?: number } = {}): Promise<TransferInfo> {
  const dir = transferDir();
  const info = readRecord(dir, String(id));
  if (!info) throw new UserError(`no transfer ${id}`, { hint: 'see mctl list-transfers' });
  try {
    process.kill(info.pid, 'SIGTERM');
    process.kill(info.pid, 'SIGCONT');
  } catch (err) {
    throw new UserError(`cannot signal transfer ${id} (PID ${info.pid}): ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  while (recordIsLive(join(dir, String(id)))) {
    if (Date.now() > deadline) throw new UserError(`transfer ${id} (PID ${info.pid}) did not stop within ${Math.round((options.timeoutMs ?? 30_000) / 1000)} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return info;
}
