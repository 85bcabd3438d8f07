// Forwarding between our terminal and a PTY master fd handed out by the machine manager
// (OpenMachineLogin/OpenMachineShell): raw mode on our side, window size passed on, and
// Ctrl-] pressed three times within one second leaves (as machinectl does).
import tty from 'node:tty';
import { closeSync } from 'node:fs';

const ESCAPE = 0x1d; // Ctrl-]
const ESCAPE_WINDOW_MS = 1000;
const TIOCSWINSZ = 0x5414;

export interface ForwardResult {
  /** 'hangup': the other side closed the PTY; 'escape': the user pressed ^]^]^]. */
  reason: 'hangup' | 'escape';
}

export interface ForwardOptions {
  /** Called with every chunk from the PTY before it is written (used to spot exit markers). */
  filter?: (chunk: Buffer) => Buffer;
}

async function setWindowSize(fd: number): Promise<void> {
  const { columns, rows } = process.stdout;
  if (!process.stdout.isTTY || !columns || !rows) return;
  const { ioctlBuffer } = await import('../sys/libc.js');
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows, 0);
  ws.writeUInt16LE(columns, 2);
  try {
    ioctlBuffer(fd, TIOCSWINSZ, ws);
  } catch {
    // A size we cannot pass on only affects layout.
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

export async function forwardPty(masterFd: number, options: ForwardOptions = {}): Promise<ForwardResult> {
  await setWindowSize(masterFd);
  const master = new tty.ReadStream(masterFd);
  const stdin = process.stdin;
  const rawTty = stdin.isTTY === true;
  if (rawTty) stdin.setRawMode(true);
  const escaped = escapeDetector();

  return new Promise<ForwardResult>((resolve) => {
    let done = false;
    const finish = (reason: ForwardResult['reason']): void => {
      if (done) return;
      done = true;
      stdin.off('data', onInput);
      stdin.off('end', onInputEnd);
      process.off('SIGWINCH', onResize);
      if (rawTty) stdin.setRawMode(false);
      stdin.pause();
      master.removeAllListeners('data');
      master.destroy();
      try {
        closeSync(masterFd);
      } catch {
        // destroy() may already have closed it.
      }
      resolve({ reason });
    };
    const onInput = (chunk: Buffer): void => {
      if (rawTty && escaped(chunk)) {
        finish('escape');
        return;
      }
      master.write(chunk);
    };
    // Input ending (a pipe, not a terminal) does not end the session: the remote side does.
    const onInputEnd = (): void => undefined;
    const onResize = (): void => void setWindowSize(masterFd);
    master.on('data', (chunk: Buffer) => {
      const out = options.filter ? options.filter(chunk) : chunk;
      if (out.length > 0) process.stdout.write(out);
    });
    // EIO on read means the last slave fd was closed: the session ended.
    master.on('error', () => finish('hangup'));
    master.on('end', () => finish('hangup'));
    master.on('close', () => finish('hangup'));
    stdin.on('data', onInput);
    stdin.on('end', onInputEnd);
    process.on('SIGWINCH', onResize);
    stdin.resume();
  });
}
