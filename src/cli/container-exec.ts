// Running a command in a container with its exit status and separate stdout/stderr — what
// `machinectl shell` cannot do (systemd #4215). Two routes:
//
//  - "direct" (root, machine's leader visible in our /proc): join the container's namespaces
//    with util-linux nsenter and let the container's own systemd run the command as a
//    transient service: `systemd-run --wait --pipe` (or `--pty` on a terminal) returns the
//    service's exit status, and with --pipe the service inherits our stdin/stdout/stderr
//    unchanged, so the streams stay apart. The command runs inside the container's cgroup,
//    as a unit, with User=/Environment= like machinectl's shell. Containers without systemd
//    get the command exec'd directly under nsenter.
//  - "bus" (not root, another host's bus, or MCTL_SHELL_VIA=bus): OpenMachineShell runs a
//    small /bin/sh wrapper that prints an invisible OSC marker with "$?" at the end; the PTY
//    stream is forwarded with the marker removed. stdout and stderr are one stream there.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { UserError } from '../common/errors.js';
import { forwardPty } from './pty-forward.js';
import type { Machine1 } from './machine1.js';

export interface ExecRequest {
  machine: string;
  leader: number;
  user: string;
  command: string[];
  env: string[];
}

/** Where the container's systemd-run lives, if it was booted with systemd. */
function containerSystemdRun(leader: number): string | undefined {
  const root = `/proc/${leader}/root`;
  if (!existsSync(`${root}/run/systemd/system`)) return undefined;
  for (const p of ['/usr/bin/systemd-run', '/bin/systemd-run']) if (existsSync(`${root}${p}`)) return p;
  return undefined;
}

/**
 * The environment nsenter starts with: none of ours (a host DBUS_SYSTEM_BUS_ADDRESS or
 * XDG_RUNTIME_DIR would send the container's systemd-run to the wrong bus), just a PATH.
 */
export function containerEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };
  if (process.env['TERM']) env['TERM'] = process.env['TERM'];
  return env;
}

export function canExecDirect(leader: number): boolean {
  return process.getuid?.() === 0 && leader > 1 && existsSync(`/proc/${leader}/ns/mnt`) && process.env['MCTL_SHELL_VIA'] !== 'bus';
}

function statusOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  // Like a shell: 128 + signal number.
  const signals: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGPIPE: 13, SIGABRT: 6, SIGSEGV: 11 };
  return 128 + (signal ? (signals[signal] ?? 0) : 0);
}

/** The direct route: nsenter + the container's systemd-run. Resolves to the command's status. */
export async function execDirect(req: ExecRequest): Promise<number> {
  const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const systemdRun = containerSystemdRun(req.leader);
  let inner: string[];
  if (systemdRun) {
    inner = [systemdRun, '--quiet', '--wait', '--collect', '--service-type=exec', interactive ? '--pty' : '--pipe', `--uid=${req.user}`, '-p', 'WorkingDirectory=-~', '-p', 'SendSIGHUP=yes'];
    if (interactive) inner.push(`--setenv=TERM=${process.env['TERM'] ?? 'vt220'}`);
    for (const e of req.env) inner.push(`--setenv=${e}`);
    // systemd-run --wait reports a death by signal only as its own status 2; a shell around the
    // command turns it into 128+N (and a missing program into 127), as users expect.
    // systemd expands $VAR and $$ in ExecStart= arguments at exec time (systemd-run 252 has no
    // --expand-environment=no), so every "$" is doubled to reach the command unchanged.
    const wrapped = ['/bin/sh', '-c', '"$@"; exit $?', 'sh', ...req.command].map((a) => a.replace(/\$/g, '$$$$'));
    inner.push('--', ...wrapped);
  } else {
    if (req.user !== 'root' && req.user !== '0') {
      throw new UserError(`cannot run as '${req.user}' in ${req.machine}: the container has no systemd`, { hint: 'omit --uid, or boot the container with systemd' });
    }
    inner = ['/usr/bin/env', '-i', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'USER=root', 'LOGNAME=root', ...req.env, ...req.command];
  }
  // --all joins every namespace of the leader, the user namespace included (uid 0 inside).
  // nsenter opens --wd's path before it enters anything: "/" would be the HOST's root, a working
  // directory outside the container's root (relative paths would reach host files). The
  // container's root, through the leader's /proc root link, is what "/" means inside.
  const child = spawn('nsenter', ['--target', String(req.leader), '--all', `--wd=/proc/${req.leader}/root`, '--', ...inner], { stdio: 'inherit', env: containerEnv() });
  // Signals for the foreground job reach nsenter too (same process group); don't die first.
  const ignore = (): void => undefined;
  process.on('SIGINT', ignore);
  process.on('SIGTERM', ignore);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', (err) => reject(new UserError(`cannot run nsenter: ${err.message}`, { hint: 'install util-linux' })));
      child.once('exit', (code, signal) => resolve(statusOf(code, signal)));
    });
  } finally {
    process.off('SIGINT', ignore);
    process.off('SIGTERM', ignore);
  }
}

const MARKER_PREFIX = '\x1b]7770;mctl-exit=';
const MARKER_END = '\x07';

/** Strips our exit marker from a PTY stream and remembers the status it carried. */
export class ExitMarkerFilter {
  status: number | undefined;
  private pending = '';

  filter(chunk: Buffer): Buffer {
    let text = this.pending + chunk.toString('latin1');
    this.pending = '';
    for (;;) {
      const i = text.indexOf(MARKER_PREFIX);
      if (i < 0) break;
      const j = text.indexOf(MARKER_END, i);
      if (j < 0) {
        this.pending = text.slice(i);
        text = text.slice(0, i);
        return Buffer.from(text, 'latin1');
      }
      this.status = Number(text.slice(i + MARKER_PREFIX.length, j));
      text = text.slice(0, i) + text.slice(j + 1);
    }
    // Keep a possible marker start split across chunks.
    for (let k = Math.min(MARKER_PREFIX.length - 1, text.length); k > 0; k--) {
      if (MARKER_PREFIX.startsWith(text.slice(text.length - k))) {
        this.pending = text.slice(text.length - k);
        text = text.slice(0, text.length - k);
        break;
      }
    }
    return Buffer.from(text, 'latin1');
  }
}

/** The bus route: OpenMachineShell with a status-reporting wrapper around the command. */
export async function execViaBus(machine1: Machine1, req: Omit<ExecRequest, 'leader'>): Promise<number> {
  // After the marker the wrapper waits on its terminal instead of exiting: output still queued
  // in the PTY can be lost when the last slave fd closes, so we close the master ourselves once
  // the marker is in, and the hangup ends the wrapper.
  const wrapper = `"$@"; s=$?; printf '${MARKER_PREFIX.replace('\x1b', '\\033')}%d\\007' "$s"; read -r _ 2>/dev/null; exit "$s"`;
  const args = ['/bin/sh', '-c', wrapper, 'sh', ...req.command];
  const { fd } = await machine1.openShell(req.machine, req.user, '/bin/sh', args, req.env);
  const marker = new ExitMarkerFilter();
  await forwardPty(fd, { ignoreHangup: 'initial', filter: (c) => marker.filter(c), finished: () => marker.status !== undefined });
  if (marker.status === undefined) throw new UserError(`shell in ${req.machine} ended without reporting the command's status`, { exitCode: 255 });
  return marker.status;
}
