// Errors meant for users: one line, no stack trace, a distinct exit status.
import { SysError } from '../sys/errno.js';

export class UserError extends Error {
  readonly exitCode: number;
  readonly hint: string | undefined;
  constructor(message: string, options: { exitCode?: number; hint?: string } = {}) {
    super(message);
    this.name = 'UserError';
    this.exitCode = options.exitCode ?? 1;
    this.hint = options.hint;
  }
}

/** Render any thrown value as the single line a user sees. */
export function describeError(err: unknown): string {
  if (err instanceof UserError) return err.hint ? `${err.message} (${err.hint})` : err.message;
  if (err instanceof SysError) return err.message;
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const path = (err as NodeJS.ErrnoException).path;
    if (code && path) return `${path}: ${code}`;
    return err.message.split('\n')[0] ?? String(err);
  }
  return String(err);
}

/**
 * Run a program's main function: print failures as "PROGRAM: message" on one line and exit
 * non-zero. MCTL_DEBUG=1 prints the stack as well, for developers.
 */
export function runMain(program: string, main: () => Promise<number | void>): void {
  main().then(
    (code) => {
      if (typeof code === 'number') process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${program}: ${describeError(err)}\n`);
      if (process.env['MCTL_DEBUG'] && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
      process.exitCode = err instanceof UserError ? err.exitCode : 1;
    },
  );
}
