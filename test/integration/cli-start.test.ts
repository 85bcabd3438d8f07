// `mctl start` on a host without systemd: mctl-nspawn runs detached, registers with our
// mctl-machined, boots; then shell, the bus route of shell, terminate, and a failed start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { debianTree } from '../helpers/images.js';
import { startService, mctl, overlayImage, makeTinyImage, ptySpawn, launcherPids, MCTL, type Service } from './cli-container.js';

const NAME = 't-cli-s1';
let svc: Service;
let image: { path: string; remove(): void } | undefined;

before(async () => {
  svc = await startService();
  image = overlayImage(svc.pool, NAME, debianTree());
  makeTinyImage(svc.pool, 't-cli-broken');
}, { timeout: 60_000 });

after(async () => {
  // If a test failed half-way, make sure the container is gone before the image goes.
  mctl(svc, ['terminate', NAME]);
  for (let i = 0; i < 50 && mctl(svc, ['show', NAME]).status === 0; i++) await new Promise((r) => setTimeout(r, 100));
  image?.remove();
  await svc?.stop();
  // The launcher logs are kept for users by design; the tests' own go.
  for (const n of [NAME, 't-cli-broken']) rmSync(`/run/mctl/log/${n}.log`, { force: true });
});

function listed(): { machine: string; service: string }[] {
  return JSON.parse(mctl(svc, ['list', '-o', 'json']).stdout) as { machine: string; service: string }[];
}

test('start runs mctl-nspawn detached, says so, and returns once the container has booted', () => {
  const r = mctl(svc, ['start', NAME], { timeoutMs: 150_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`^No systemd on this host: started mctl-nspawn detached for '${NAME}' \\(PID \\d+, log /run/mctl/log/${NAME}\\.log\\)\\.$`, 'm'));
  // This dev host has a hybrid cgroup layout: no delegated cgroup2 tree for a user namespace.
  if (!existsSync('/sys/fs/cgroup/cgroup.controllers')) assert.match(r.stderr, /^Note: started without -U \(a user namespace needs a delegated cgroup2 tree/m);
  assert.deepEqual(listed().map((m) => [m.machine, m.service]), [[NAME, 'mctl-nspawn']]);
  // Booted: the container's systemd says so, and the getty is up.
  const state = mctl(svc, ['shell', NAME, '/bin/systemctl', 'is-system-running']);
  assert.match(state.stdout, /^(running|degraded)\n$/);
  const status = mctl(svc, ['status', NAME]);
  assert.match(status.stdout, /^\s*Unit: machine-t\\x2dcli\\x2ds1\.scope$/m);
  assert.match(status.stdout, /[├└]─\d+ \/lib\/systemd\/systemd-journald/);
  const quiet = mctl(svc, ['-q', 'start', NAME]);
  assert.equal(quiet.status, 1);
  assert.equal(quiet.stderr, `mctl: machine '${NAME}' is already running (see mctl status ${NAME})\n`);
});

test('shell returns the exit status on both routes (direct and OpenMachineShell)', () => {
  const direct = mctl(svc, ['shell', NAME, '/bin/sh', '-c', 'echo out; echo err >&2; exit 7']);
  assert.deepEqual([direct.status, direct.stdout, direct.stderr], [7, 'out\n', 'err\n']);
  const bus = mctl(svc, ['shell', NAME, '/bin/sh', '-c', 'echo via-bus; exit 9'], { env: { MCTL_SHELL_VIA: 'bus' } });
  assert.equal(bus.status, 9, bus.stderr);
  assert.match(bus.stdout, /^via-bus\r?\n$/, 'marker removed from the PTY stream');
});

test('shell NAME without a command: an interactive login shell on a real PTY, ending with exit', async () => {
  const s = ptySpawn([process.execPath, MCTL, 'shell', NAME], svc.env);
  try {
    await s.waitFor(/Connected to machine t-cli-s1\. Press \^\] three times within 1s to exit session\./);
    await s.waitFor(/# $/m);
    s.send('echo SHELL-$((2*21)) $(id -un)\r');
    await s.waitFor(/SHELL-42 root/);
    s.send('exit\r');
    assert.equal(await s.exit, 0);
    assert.match(s.output(), /Connection to machine t-cli-s1 terminated\./);
  } finally {
    s.kill();
  }
});

test('bind mounts a host directory into the running container, read-only when asked', () => {
  const dir = mkdtempSync('/tmp/mctl-cli-bind-');
  try {
    writeFileSync(join(dir, 'hello'), 'from the host\n');
    const r = mctl(svc, ['bind', '--mkdir', '--read-only', NAME, dir, '/mnt/t-cli-bind']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(mctl(svc, ['shell', NAME, '/bin/cat', '/mnt/t-cli-bind/hello']).stdout, 'from the host\n');
    const write = mctl(svc, ['shell', NAME, '/bin/touch', '/mnt/t-cli-bind/x']);
    assert.equal(write.status, 1);
    assert.match(write.stderr, /Read-only file system/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('-M NAME talks to the manager inside the container; set-limit on a directory pool says why not', () => {
  const inner = mctl(svc, ['-M', NAME, 'list']);
  assert.equal(inner.status, 1);
  assert.equal(inner.stderr, 'mctl: the machine manager is not running (start mctl-machined or systemd-machined)\n');
  const limit = mctl(svc, ['set-limit', NAME, '1G']);
  assert.equal(limit.status, 1);
  assert.match(limit.stderr, /^mctl: set-limit t-cli-s1: .*btrfs.*\n$/);
});

test('reboot: the guest reboots and comes back (the detached launcher is restarted on 133, as RestartForceExitStatus=133 does)', async () => {
  const before = JSON.parse(mctl(svc, ['show', NAME, '-o', 'json']).stdout) as { Leader: number };
  const r = mctl(svc, ['reboot', NAME]);
  assert.equal(r.status, 0, r.stderr);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const now = mctl(svc, ['show', NAME, '-p', 'Leader', '--value']);
    if (now.status === 0 && Number(now.stdout) !== before.Leader) break;
    assert.ok(Date.now() < deadline, 'no new leader 60 s after reboot');
    await new Promise((res) => setTimeout(res, 200));
  }
  for (;;) {
    const state = mctl(svc, ['shell', NAME, '/bin/systemctl', 'is-system-running']).stdout.trim();
    if (state === 'running' || state === 'degraded') break;
    assert.ok(Date.now() < deadline, `not booted again 60 s after reboot (${state})`);
    await new Promise((res) => setTimeout(res, 200));
  }
});

test('terminate stops it: the machine and the launcher are gone', async () => {
  const r = mctl(svc, ['terminate', NAME]);
  assert.equal(r.status, 0, r.stderr);
  const deadline = Date.now() + 20_000;
  while (listed().length > 0) {
    assert.ok(Date.now() < deadline, 'still listed 20 s after terminate');
    await new Promise((res) => setTimeout(res, 100));
  }
  // The launcher and its restart loop exit too.
  while (launcherPids(NAME).length > 0) {
    assert.ok(Date.now() < deadline, `launcher processes left: ${launcherPids(NAME).join(' ')}`);
    await new Promise((res) => setTimeout(res, 100));
  }
  const launchers = readFileSync('/proc/self/mountinfo', 'utf8');
  assert.doesNotMatch(launchers, new RegExp(`${image?.path}/\\S`), 'no mounts left below the image');
});

test('a start that fails says why in one line and leaves no machine behind', () => {
  const r = mctl(svc, ['start', 't-cli-broken'], { timeoutMs: 90_000 });
  assert.equal(r.status, 1);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('mctl:'));
  assert.equal(errors.length, 1, r.stderr);
  assert.match(errors[0] as string, /^mctl: mctl-nspawn for 't-cli-broken' exited before the machine registered: .+ \(see \/run\/mctl\/log\/t-cli-broken\.log\)$/);
  assert.deepEqual(listed(), []);
  assert.ok(existsSync('/run/mctl/log/t-cli-broken.log'));
});
