// `mctl start` on a host without systemd: run the launcher detached, the way container@.service
// would run it, and wait until the machine is registered with the machine manager and (when
// it boots systemd) its boot has finished. The launcher's output goes to a log file.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UserError } from '../common/errors.js';
import { containerEnv } from './container-exec.js';

/** systemd-nspawn@.service's launcher options (systemd 252), the target of container@.service. */
export const STOCK_NSPAWN_ARGS = ['--quiet', '--keep-unit', '--boot', '--link-journal=try-guest', '--network-veth', '-U', '--settings=override'] as const;

/**
 * Stock options container@.service leaves out, each with a "TRACKED, NOT DROPPED" comment in
 * the unit (none at the moment; a unit test keeps this list and the unit in agreement).
 */
export const WITHHELD_NSPAWN_ARGS: readonly string[] = [];

/** The launcher options of units/container@.service, in the same order (a unit test keeps them in sync). */
export const UNIT_NSPAWN_ARGS: readonly string[] = STOCK_NSPAWN_ARGS.filter((a) => !WITHHELD_NSPAWN_ARGS.includes(a));

export const LOG_DIR = '/run/mctl/log';

export function launcherPath(): string {
  return process.env['MCTL_NSPAWN'] || fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
}

/**
 * The unit's options that this launcher supports, by its --help text. --keep-unit is dropped:
 * without systemd there is no unit to keep. Options the launcher lacks are reported back.
 */
export function detachedArgs(helpText: string): { args: string[]; missing: string[] } {
  const args: string[] = [];
  const missing: string[] = [];
  for (const opt of UNIT_NSPAWN_ARGS) {
    if (opt === '--keep-unit') continue;
    const name = opt.split('=')[0] as string;
    const supported = name === '-U' ? /(^|[\s,])-U[\s,]/m.test(helpText) : helpText.includes(name);
    if (supported) args.push(opt);
    else missing.push(opt);
  }
  return { args, missing };
}

const RESTART_LOOP = [
  'n=0; t0=$(date +%s)',
  'while :; do',
  '  "$@"; s=$?',
  '  [ "$s" -eq 133 ] || exit "$s"',
  '  now=$(date +%s)',
  '  if [ $((now - t0)) -lt 10 ]; then n=$((n + 1)); [ "$n" -ge 5 ] && exit 133; else n=0; t0=$now; fi',
  'done',
].join('\n');

export interface DetachedStart {
  pid: number;
  log: string;
  missing: string[];
}

/** Spawn the launcher detached for image `name` at `root`. */
export function spawnDetached(name: string, root: string, extraEnv: NodeJS.ProcessEnv = {}): DetachedStart {
  const launcher = launcherPath();
  const help = spawnSync(launcher, ['--help'], { encoding: 'utf8', timeout: 15_000 });
  if (help.error || help.status !== 0) {
    throw new UserError(`cannot run the launcher ${launcher}: ${help.error?.message ?? (help.stderr || '').trim().split('\n')[0] ?? `exit ${help.status}`}`, { hint: 'build it with npm run build, or set MCTL_NSPAWN' });
  }
  // Without systemd there is no unit file to edit; MCTL_NSPAWN_OPTIONS replaces the unit's options.
  const override = process.env['MCTL_NSPAWN_OPTIONS'];
  const { args, missing } = override !== undefined ? { args: override.split(/\s+/).filter(Boolean), missing: [] } : detachedArgs(help.stdout);
  // A private user namespace needs a cgroup the launcher can hand to it: cgroup2 delegation.
  // On a legacy/hybrid host (no systemd, as here) the guest's systemd cannot create its
  // cgroups inside one, so -U is dropped there, and said so.
  if (override === undefined && !existsSync('/sys/fs/cgroup/cgroup.controllers') && args.includes('-U')) {
    args.splice(args.indexOf('-U'), 1);
    missing.push('-U');
  }
  mkdirSync(LOG_DIR, { recursive: true });
  const log = `${LOG_DIR}/${name}.log`;
  const fd = openSync(log, 'w', 0o640);
  try {
    // A small sh loop plays systemd's part of container@.service: RestartForceExitStatus=133
    // (the launcher's status when the guest reboots), with a start limit of 5 in 10 s.
    // A raw image (NAME.raw) or block device boots with --image, a directory tree with --directory.
    const rootOption = statSync(root, { throwIfNoEntry: false })?.isFile() || root.startsWith('/dev/') ? `--image=${root}` : `--directory=${root}`;
    const child = spawn('/bin/sh', ['-c', RESTART_LOOP, 'mctl-nspawn-restart', launcher, ...args, `--machine=${name}`, rootOption], {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...extraEnv },
    });
    child.unref();
    if (child.pid === undefined) throw new UserError(`cannot start the launcher ${launcher}`);
    return { pid: child.pid, log, missing };
  } finally {
    closeSync(fd);
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] ?? '').startsWith('Z');
  } catch {
    return false;
  }
}

export function logTail(log: string): string {
  try {
    const lines = readFileSync(log, 'utf8').trim().split('\n').filter((l) => l.length > 0);
    return lines[lines.length - 1] ?? '';
  } catch {
    return '';
  }
}

/**
 * Wait until the container's systemd reports its boot finished (running or degraded).
 * `is-system-running --wait` says "offline" until PID 1's bus is up, so it is retried.
 */
export function waitBooted(leader: number, timeoutSec: number): string | undefined {
  const root = `/proc/${leader}/root`;
  if (!existsSync(`${root}/usr/bin/systemctl`) && !existsSync(`${root}/bin/systemctl`)) return undefined;
  const deadline = Date.now() + timeoutSec * 1000;
  let said = '';
  while (Date.now() < deadline) {
    const r = spawnSync('nsenter', ['--target', String(leader), '--all', '--', 'systemctl', 'is-system-running', '--wait'], { env: containerEnv(), encoding: 'utf8', timeout: Math.max(1000, deadline - Date.now()) });
    said = (r.stdout ?? '').trim();
    if (['running', 'degraded', 'maintenance', 'stopping'].includes(said)) return said;
    if (!existsSync(`/proc/${leader}`)) return 'gone';
    spawnSync('sleep', ['0.05']);
  }
  return said || 'timeout';
}
