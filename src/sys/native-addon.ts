// Our own small Node-API addon (dist/native/mctl-exec.node, loads in ~0.2 ms): the launcher's
// start-path calls, with slower pure-Node fallbacks for a tsc-only build (koffi for execve, ~12 ms
// to load; process.std*.isTTY for isatty, ~4 ms: Node builds the stream objects to answer it;
// node:child_process for running the helper, ~5 ms to load), and lock files + FD_CLOEXEC for
// everyone (src/net/lockfile.ts, image locks), which have no fallback: npm run build makes it.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SysError } from './errno.js';

/** A file of dist/native, from dist/<part>/*.js or (tests via tsx) src/<part>/*.ts. */
export function nativeFile(name: string): string | undefined {
  for (const base of ['../native/', '../../dist/native/']) {
    const p = fileURLToPath(new URL(base + name, import.meta.url));
    if (existsSync(p)) return p;
  }
  return undefined;
}

interface ExecAddon {
  execve?: (path: string, argv: string[], envp: string[]) => void;
  isatty?: (fd: number) => boolean;
  spawnReport?: (path: string, argv: string[], envp: string[]) => [number, string];
  lock?: (fd: number, kind: number, op: number, wait: number) => number;
  clearCloexec?: (fd: number) => number;
}

let addon: ExecAddon | null | undefined;

function loadAddon(): ExecAddon | null {
  if (addon === undefined) {
    const file = nativeFile('mctl-exec.node');
    const mod = { exports: {} as ExecAddon };
    if (file) process.dlopen(mod, file);
    addon = file ? mod.exports : null;
  }
  return addon;
}

/** An environment as execve() takes it. */
function envp(env: Record<string, string>): string[] {
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

export type Execve = (path: string, argv: string[], env: Record<string, string>) => never;

/** execve() replacing this process; throws when it fails. */
export async function loadExecve(): Promise<Execve> {
  const fn = loadAddon()?.execve;
  if (fn) {
    return (path, argv, env) => {
      fn(path, argv, envp(env));
      throw new Error(`execve ${path} returned`);
    };
  }
  const { execve } = await import('./libc.js');
  return (path, argv, env) => execve(path, argv, env);
}

/** Whether standard input and output are both terminals. */
export function stdioIsTerminal(): boolean {
  const isatty = loadAddon()?.isatty;
  if (isatty) return isatty(0) && isatty(1);
  return process.stdin.isTTY === true && process.stdout.isTTY === true;
}

/** Exit status (128 + signal when killed) and what it wrote to its fd 3 (a pipe). */
export interface ReportedRun {
  status: number;
  report: string;
}

/** Run PATH with our stdio and a pipe as fd 3, read it to its end and wait for PATH. */
export async function spawnWithReport(path: string, argv: string[], env: Record<string, string>): Promise<ReportedRun> {
  const fn = loadAddon()?.spawnReport;
  if (fn) {
    const [status, report] = fn(path, argv, envp(env));
    return { status, report };
  }
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(path, argv.slice(1), { argv0: argv[0], env, stdio: ['inherit', 'inherit', 'inherit', 'pipe'] });
  return { status: r.status ?? 128, report: r.output?.[3]?.toString() ?? '' };
}

function required<K extends 'lock' | 'clearCloexec'>(name: K): NonNullable<ExecAddon[K]> {
  const fn = loadAddon()?.[name];
  if (!fn) throw new Error('the native addon mctl-exec.node is missing (run npm run build)');
  return fn as NonNullable<ExecAddon[K]>;
}

export type LockOp = 'shared' | 'exclusive' | 'unlock';
const OPS: Record<LockOp, number> = { shared: 0, exclusive: 1, unlock: 2 };

function lock(call: string, fd: number, kind: number, op: LockOp, wait: boolean): boolean {
  const r = required('lock')(fd, kind, OPS[op], wait ? 1 : 0);
  if (r < 0) throw new SysError(call, -r, `fd ${fd}`);
  return r === 1;
}

/**
 * Whole-file OFD lock (systemd's "UNPOSIX" lock): belongs to the open file description, so it
 * survives fd inheritance and is dropped when the last fd to it closes. Returns false when a
 * non-blocking request conflicts; other failures throw.
 */
export function ofdLock(fd: number, op: LockOp, wait = false): boolean {
  return lock('fcntl(F_OFD_SETLK)', fd, 0, op, wait);
}

/** BSD flock(2) on the whole file (the lock util-linux flock(1) waits for, unlike OFD locks). */
export function flock(fd: number, op: LockOp, wait = false): boolean {
  return lock('flock', fd, 1, op, wait);
}

/** Clear FD_CLOEXEC (Node sets it on every fd it opens, 0-2 included), so an exec'd program keeps the fd. */
export function clearCloexec(fd: number): void {
  const r = required('clearCloexec')(fd);
  if (r < 0) throw new SysError('fcntl(F_SETFD)', -r, `fd ${fd}`);
}
