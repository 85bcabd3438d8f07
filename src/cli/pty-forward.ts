// Forwarding between our terminal and a PTY master fd handed out by the machine manager
// (OpenMachineLogin/OpenMachineShell): raw mode on our side, window size passed on, and
// Ctrl-] pressed three times within one second leaves (as machinectl does).
//
// The master is read non-blocking with poll() in a worker (libc.pollReadable), not through a
// libuv tty stream: reading a master whose slave is not open (yet, or again) fails with EIO,
// and a login must survive that — the getty opens the slave after we get the fd, calls
// vhangup() at start, and is restarted after each logout. A libuv stream would be destroyed
// (and the fd closed) by the first EIO.
import { closeSync, readSync, writeSync } from 'node:fs';

const ESCAPE = 0x1d; // Ctrl-]
const ESCAPE_WINDOW_MS = 1000;
const TIOCSWINSZ = 0x5414;
const O_NONBLOCK = 0o4000;
const POLL_MS = 200;
const TCGETS = 0x5401;
const TCSETS = 0x5402;
const OPOST = 0x1;

export interface ForwardResult {
  /** 'hangup': the other side closed the PTY; 'escape': the user pressed ^]^]^]. */
  reason: 'hangup' | 'escape';
}

export interface ForwardOptions {
  /**
   * 'always' (login): a hangup never ends the session, only ^]^]^] does — the getty comes back.
   * 'initial' (shell): hangups before the first output are ignored (the slave is not open yet).
   */
  ignoreHangup: 'always' | 'initial';
  /** Called with every chunk from the PTY before it is written (used to spot exit markers). */
  filter?: (chunk: Buffer) => Buffer;
  /** Checked after each chunk: true ends the session at once (we close the master). */
  finished?: () => boolean;
}

type Libc = typeof import('../sys/libc.js');

function setWindowSize(libc: Libc, fd: number): void {
  const { columns, rows } = process.stdout;
  if (!process.stdout.isTTY || !columns || !rows) return;
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows, 0);
  ws.writeUInt16LE(columns, 2);
  try {
    libc.ioctlBuffer(fd, TIOCSWINSZ, ws);
  } catch {
    // A size we cannot pass on only affects layout.
  }
}

/**
 * libuv's raw mode keeps output post-processing (ONLCR), which would turn the container's
 * "\r\n" into "\r\r\n"; clear OPOST as cfmakeraw() does. Returns the settings to restore.
 */
function rawOutput(libc: Libc, fd: number): Buffer | undefined {
  const saved = Buffer.alloc(60);
  try {
    libc.ioctlBuffer(fd, TCGETS, saved);
    const raw = Buffer.from(saved);
    raw.writeUInt32LE(raw.readUInt32LE(4) & ~OPOST, 4);
    libc.ioctlBuffer(fd, TCSETS, raw);
    return saved;
  } catch {
    return undefined;
  }
}

/** Count ^] presses; true when the third arrives within the window. */
export function escapeDetector(now: () => number = Date.now): (chunk: Buffer) => boolean {
  const presses: number[] = [];
  return (chunk) => {
    for (const byte of chunk) {
      if (byte !== ESCAPE) {
        presses.length = 0;
        continue;
      }
      const t = now();
      presses.push(t);
      while (presses.length > 0 && t - (presses[0] as number) > ESCAPE_WINDOW_MS) presses.shift();
      if (presses.length >= 3) return true;
    }
    return false;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

export async function forwardPty(masterFd: number, options: ForwardOptions): Promise<ForwardResult> {
  const libc = await import('../sys/libc.js');
  libc.fcntl(masterFd, libc.F.SETFL, libc.fcntl(masterFd, libc.F.GETFL) | O_NONBLOCK);
  setWindowSize(libc, masterFd);
  const stdin = process.stdin;
  const rawTty = stdin.isTTY === true;
  if (rawTty) stdin.setRawMode(true);
  const savedOutput = rawTty && process.stdout.isTTY ? rawOutput(libc, 1) : undefined;
  const escaped = escapeDetector();
  let done: ForwardResult['reason'] | undefined;
  let wake: (() => void) | undefined;

  // Our input → master. Writes are queued so a full PTY buffer (EAGAIN) does not lose bytes.
  const queue: Buffer[] = [];
  let writing = false;
  const flush = async (): Promise<void> => {
    if (writing) return;
    writing = true;
    while (queue.length > 0 && !done) {
      const chunk = queue[0] as Buffer;
      try {
        const n = writeSync(masterFd, chunk);
        if (n < chunk.length) queue[0] = chunk.subarray(n);
        else queue.shift();
      } catch (err) {
        if (errnoCode(err) === 'EAGAIN' || errnoCode(err) === 'EIO') await sleep(20);
        else queue.length = 0;
      }
    }
    writing = false;
  };
  const onInput = (chunk: Buffer): void => {
    if (rawTty && escaped(chunk)) {
      done = 'escape';
      wake?.();
      return;
    }
    queue.push(chunk);
    void flush();
  };
  // Piped input ending: pass an EOF (^D) to the program on the PTY, as a terminal would.
  const onInputEnd = (): void => {
    queue.push(Buffer.from([0x04]));
    void flush();
  };
  const onResize = (): void => setWindowSize(libc, masterFd);
  stdin.on('data', onInput);
  stdin.on('end', onInputEnd);
  process.on('SIGWINCH', onResize);
  stdin.resume();

  const buf = Buffer.alloc(65536);
  let gotOutput = false;
  try {
    while (!done) {
      let n: number;
      try {
        n = readSync(masterFd, buf, 0, buf.length, null);
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'EAGAIN') {
          await Promise.race([libc.pollReadable([masterFd], POLL_MS), new Promise<void>((r) => (wake = r))]);
          continue;
        }
        if (code !== 'EIO') throw err;
        n = 0;
      }
      if (n === 0) {
        // EIO: no slave open right now.
        if (options.ignoreHangup === 'always' || (options.ignoreHangup === 'initial' && !gotOutput)) {
          await Promise.race([sleep(50), new Promise<void>((r) => (wake = r))]);
          continue;
        }
        done = 'hangup';
        break;
      }
      gotOutput = true;
      const out = options.filter ? options.filter(buf.subarray(0, n)) : Buffer.from(buf.subarray(0, n));
      if (out.length > 0 && !process.stdout.write(out)) await new Promise((r) => process.stdout.once('drain', r));
      if (options.finished?.()) done = 'hangup';
    }
  } finally {
    stdin.off('data', onInput);
    stdin.off('end', onInputEnd);
    process.off('SIGWINCH', onResize);
    if (savedOutput) libc.ioctlBuffer(1, TCSETS, savedOutput);
    if (rawTty) stdin.setRawMode(false);
    stdin.pause();
    try {
      closeSync(masterFd);
    } catch {
      // Already closed.
    }
  }
  return { reason: done ?? 'hangup' };
}
