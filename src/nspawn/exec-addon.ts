// The launcher's start-path native calls (dist/native/mctl-exec.node, loads in ~0.2 ms), with
// slower pure-Node fallbacks for a tsc-only build: koffi for execve (~12 ms to load),
// process.std*.isTTY for isatty (~4 ms: Node builds the stream objects to answer it) and
// node:child_process for running the helper's `prepare` (~5 ms to load).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** A file of dist/native, from dist/nspawn/*.js or (tests via tsx) src/nspawn/*.ts. */
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
  const { execve } = await import('../sys/libc.js');
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
