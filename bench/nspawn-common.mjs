// Shared pieces of the nspawn benchmarks (no default export: bench/run.mjs skips this file).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const OURS = fileURLToPath(new URL('../bin/mctl-nspawn', import.meta.url));

/** The cached Debian test tree (built by the project's recipe on first use). Used read-only. */
export function debianTree() {
  const script = fileURLToPath(new URL('../images/build.sh', import.meta.url));
  return execFileSync('bash', [script, 'debian'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function children(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function comm(pid) {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** The container's init among the launcher's descendants (nspawn has an intermediate child). */
export async function findInit(launcher, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const queue = [launcher];
    while (queue.length) {
      const p = queue.shift();
      for (const c of children(p)) {
        if (comm(c) === 'systemd') return c;
        queue.push(c);
      }
    }
    await sleep(2);
  }
  throw new Error('no init appeared');
}

/** `systemctl is-system-running --wait` inside, retried while PID 1 has no bus socket yet. */
export async function waitRunning(leader) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const r = spawnSync('nsenter', ['-t', String(leader), '-a', 'systemctl', 'is-system-running', '--wait'], { encoding: 'utf8' });
    const s = r.stdout.trim();
    if (s === 'running' || s === 'degraded') return s; // 'offline' until PID 1 has its bus socket
    await sleep(5);
  }
  throw new Error('container did not finish booting');
}

/** Start a booting container; returns { child, exited }. */
export function bootContainer(argv) {
  const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited };
}

/** Stop a container started by bootContainer: SIGTERM (the kill signal), then SIGKILL after 20 s. */
export async function stopContainer({ child, exited }) {
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await exited;
  clearTimeout(t);
  return code;
}

/** Both launchers boot the same tree with a throw-away tmpfs overlay on top (the tree is never written). */
export function bootArgv(tree, name) {
  return {
    ours: [OURS, '-q', '--register=no', '--volatile=overlay', '-b', '-M', name, '-D', tree],
    reference: ['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--volatile=overlay', '-b', '-M', name, '-D', tree],
  };
}

/** VmRSS in KiB. */
export function rssKiB(pid) {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** Host processes of a container that are not the container: the launcher and any helper between it and init. */
export function hostSideProcesses(launcher, init) {
  const out = [];
  const walk = (p) => {
    if (p === init) return;
    out.push(p);
    for (const c of children(p)) walk(c);
  };
  walk(launcher);
  return out;
}
