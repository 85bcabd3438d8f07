// The host programs a transfer runs (tar, xz, zstd, bzip2, gpgv, unshare, cp): spawned with
// their stderr collected, so a failure becomes one line naming the program and its complaint.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../common/errors.js';

const found = new Map<string, string | null>();

/** Absolute path of PROGRAM on $PATH, or null (cached). */
export function findProgram(program: string): string | null {
  if (found.has(program)) return found.get(program) ?? null;
  let hit: string | null = null;
  for (const dir of (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    try {
      accessSync(join(dir, program), constants.X_OK);
      hit = join(dir, program);
      break;
    } catch {
      // not here
    }
  }
  found.set(program, hit);
  return hit;
}

export interface Tool {
  child: ChildProcess;
  /** Resolves on exit 0; rejects with a one-line UserError otherwise. */
  finished: Promise<void>;
  /** Kill it (SIGKILL) unless it has already exited. */
  kill(): void;
  /** Collected stderr, trimmed (last 4 KiB). */
  stderr(): string;
}

export function runTool(program: string, args: readonly string[], options: { stdio?: StdioOptions; label?: string; env?: NodeJS.ProcessEnv } = {}): Tool {
  const label = options.label ?? program;
  // Own process group: Ctrl-C reaches only us, and we stop the children in order (a tar
  // killed by the terminal's SIGINT would otherwise race our cleanup with a misleading error).
  const child = spawn(program, args, { stdio: options.stdio ?? ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env, detached: true });
  let err = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    err = (err + s).slice(-4096);
  });
  let exited = false;
  const finished = new Promise<void>((resolve, reject) => {
    child.once('error', (e) => {
      exited = true;
      reject(new UserError(`cannot run ${program}: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    });
    child.once('close', (code, signal) => {
      exited = true;
      if (code === 0) return resolve();
      // the specific complaint, not tar's closing "Error is not recoverable: exiting now"
      const generic = /Error is not recoverable|Exiting with failure status|Child returned status/;
      const lines = err.trim().split('\n').filter(Boolean);
      const last = lines.filter((l) => !generic.test(l)).pop() ?? lines.pop();
      reject(new UserError(`${label} failed${signal ? ` (killed by ${signal})` : ` (exit status ${code})`}${last ? `: ${last}` : ''}`));
    });
  });
  // a rejection nobody awaited yet must not crash the process; callers await `finished`
  finished.catch(() => undefined);
  return {
    child,
    finished,
    kill: () => {
      if (!exited && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    stderr: () => err.trim(),
  };
}

/** Wait up to MS for P: 'ok', the Error it failed with, or 'timeout'. */
export function settle(p: Promise<void>, ms: number): Promise<'ok' | 'timeout' | Error> {
  return Promise.race([
    p.then(
      () => 'ok' as const,
      (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
    ),
    new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref()),
  ]);
}
