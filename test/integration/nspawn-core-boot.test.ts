// Booting the cached Debian tree (through a throw-away overlay, -x) with the built launcher:
// it reaches `running`, its cgroup is a fresh sub-cgroup it can write, sd_notify READY=1 is
// passed on, SIGTERM halts it cleanly with exit 0, a reboot inside gives 133, nothing is left.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { debianTree } from '../helpers/images.js';
import { launcherHostState } from '../helpers/host-state.js';
import { waitSystemRunning } from '../helpers/machined-process.js';

const BIN = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
let tree = '';

before(() => {
  tree = debianTree();
});

/** What a failed or finished start must not leave: mounts and our cgroups. */
const hostState = (): string => launcherHostState(tree, 'nsc', 'mctl-nspawn-t-nsc');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves with 'timeout' after ms without keeping the test process alive. */
const timeout = (ms: number) => new Promise<string>((r) => setTimeout(() => r('timeout'), ms).unref());

/** The container's PID 1: the only child of the launcher (which became the native supervisor). */
async function leaderOf(launcher: number): Promise<number> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    try {
      const kids = readFileSync(`/proc/${launcher}/task/${launcher}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      for (const k of kids) if (readFileSync(`/proc/${k}/comm`, 'utf8').trim() === 'systemd') return Number(k);
    } catch {
      // not there yet
    }
    await sleep(20);
  }
  throw new Error('container leader did not appear');
}


function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

function boot(name: string, env: NodeJS.ProcessEnv = process.env): ChildProcess {
  return spawn(BIN, ['-q', '--register=no', '-x', '-b', '-M', name, '-D', tree], { stdio: 'ignore', env });
}

/** Hybrid cgroup layout (as on this VM): cgroup2 on /sys/fs/cgroup/unified plus v1 name=systemd. */
const hybridHost = existsSync('/sys/fs/cgroup/unified/cgroup.procs') && existsSync('/sys/fs/cgroup/systemd/cgroup.procs');

test('Debian boots to running; SIGTERM halts it, the launcher exits 0 and leaves nothing', async () => {
  const before = hostState();
  const marker = statSync(`${tree}/etc`).mtimeMs;
  const child = boot('t-nsc-boot');
  const exited = exitOf(child);
  try {
    const leader = await leaderOf(child.pid ?? 0);
    assert.equal(await waitSystemRunning(leader), 'running');
    // the container's cgroup: a fresh sub-cgroup, seen as / inside and writable there
    const hostView = readFileSync(`/proc/${leader}/cgroup`, 'utf8');
    assert.match(hostView, /^0::\/mctl-nspawn-t-nsc-boot\/init\.scope$/m);
    const inside = spawnSync('nsenter', ['-t', String(leader), '-a', 'sh', '-c', 'cat /proc/1/cgroup; mkdir /sys/fs/cgroup/unified/t-probe && rmdir /sys/fs/cgroup/unified/t-probe && echo writable'], { encoding: 'utf8' });
    assert.match(inside.stdout, /^0::\/init\.scope$/m);
    assert.match(inside.stdout, /^writable$/m);
    if (hybridHost) {
      // systemd as PID 1 gets its own name=systemd (v1) subtree too, writable
      assert.match(hostView, /^\d+:name=systemd:\/mctl-nspawn-t-nsc-boot\/init\.scope$/m);
      const v1 = spawnSync('nsenter', ['-t', String(leader), '-a', 'sh', '-c', 'mkdir /sys/fs/cgroup/systemd/t-probe && rmdir /sys/fs/cgroup/systemd/t-probe && echo writable'], { encoding: 'utf8' });
      assert.match(v1.stdout, /^writable$/m, v1.stderr);
    }
    child.kill('SIGTERM');
    assert.equal(await Promise.race([exited, timeout(20_000)]), 0);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  assert.equal(hostState(), before);
  assert.equal(statSync(`${tree}/etc`).mtimeMs, marker, 'the cached tree is not modified');
});

test('a reboot inside the container ends the launcher with 133', async () => {
  const child = boot('t-nsc-reboot');
  const exited = exitOf(child);
  try {
    const leader = await leaderOf(child.pid ?? 0);
    assert.equal(await waitSystemRunning(leader), 'running');
    const r = spawnSync('nsenter', ['-t', String(leader), '-a', 'systemctl', 'reboot'], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(await Promise.race([exited, timeout(20_000)]), 133);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
});

test('READY=1 reaches $NOTIFY_SOCKET of the launcher (Type=notify units)', async (t) => {
  if (spawnSync('sh', ['-c', 'command -v python3'], { stdio: 'ignore' }).status !== 0) {
    t.skip('python3 (for a datagram listener) is not installed');
    return;
  }
  const dir = mkdtempSync('/tmp/mctl-nsc-notify-');
  const sock = `${dir}/notify`;
  const listener = spawn('python3', ['-c', `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(${JSON.stringify(sock)})
print("listening", flush=True)
s.settimeout(60)
print(s.recv(4096).decode().replace("\\n", " "), flush=True)
`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  listener.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const listenDeadline = Date.now() + 5000;
  while (!out.includes('listening') && Date.now() < listenDeadline) await sleep(20);
  const child = boot('t-nsc-notify', { ...process.env, NOTIFY_SOCKET: sock });
  const exited = exitOf(child);
  try {
    const leader = await leaderOf(child.pid ?? 0);
    const deadline = Date.now() + 20_000;
    while (!out.includes('READY=1') && Date.now() < deadline) await sleep(50);
    assert.match(out, /READY=1/);
    assert.match(out, new RegExp(`X_NSPAWN_LEADER_PID=${leader}`));
    // a kill signal sent before systemd has its handlers is lost (PID 1 ignores unhandled signals)
    assert.equal(await waitSystemRunning(leader), 'running');
    child.kill('SIGTERM');
    assert.equal(await Promise.race([exited, timeout(20_000)]), 0);
  } finally {
    child.kill('SIGKILL');
    listener.kill();
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

