// mctl against a real booted Debian container (stock systemd-nspawn, registered with our
// mctl-machined through RegisterMachine) on a private bus: list/status/show, shell with exit
// status and separate streams, copy-to/copy-from, kill, login through a real PTY, poweroff.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { debianTree } from '../helpers/images.js';
import { startService, bootRegistered, mctl, ptySpawn, MCTL, type Service, type TestMachine } from './cli-container.js';

const NAME = 't-cli-m1';
let svc: Service;
let machine: TestMachine;
const scratch = mkdtempSync('/tmp/mctl-cli-test-');

before(async () => {
  svc = await startService();
  machine = await bootRegistered(svc, NAME, debianTree());
}, { timeout: 120_000 });

after(async () => {
  await machine?.stop();
  await svc?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

test('list shows the machine with its OS, as a table and as JSON', () => {
  const r = mctl(svc, ['list']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^${NAME}\\s+container\\s+systemd-nspawn\\s+debian\\s+12\\s+-$`, 'm'));
  assert.match(r.stdout, /\n1 machine listed\.\n$/);
  assert.deepEqual(JSON.parse(mctl(svc, ['list', '-o', 'json']).stdout), [
    { machine: NAME, class: 'container', service: 'systemd-nspawn', os: 'debian', version: '12', addresses: [] },
  ]);
  const pretty = mctl(svc, ['list', '-o', 'json-pretty']).stdout;
  assert.match(pretty, /^\[\n {2}\{\n {4}"machine": /);
});

test('status: leader, OS, UID shift and the process tree of its control group', () => {
  const r = mctl(svc, ['status', NAME]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^${NAME}\\([0-9a-f]{32}\\)\n`));
  assert.match(r.stdout, new RegExp(`^\\s+Leader: ${machine.leader} \\(systemd\\)$`, 'm'));
  assert.match(r.stdout, /^\s+OS: Debian GNU\/Linux 12 \(bookworm\)$/m);
  assert.match(r.stdout, /^\s*UID Shift: 0$/m);
  assert.match(r.stdout, /^\s+State: running$/m);
  assert.match(r.stdout, /[├└]─\d+ \/lib\/systemd\/systemd-journald/, 'tree lists the journald process');
  assert.match(r.stdout, new RegExp(`[├└]─${machine.leader} /usr/lib/systemd/systemd`));
  assert.doesNotMatch(r.stdout, /\x1b\[/, 'no colour when not on a tty');
  const j = JSON.parse(mctl(svc, ['status', NAME, '-o', 'json']).stdout) as Record<string, unknown>;
  assert.equal(j['name'], NAME);
  assert.equal(j['leader'], machine.leader);
  assert.equal(j['class'], 'container');
  assert.equal(j['uidShift'], 0);
  assert.equal((j['os'] as Record<string, string>)['ID'], 'debian');
  assert.equal(typeof j['since'], 'number');
  assert.ok(Math.abs((j['since'] as number) / 1000 - Date.now()) < 600_000);
});

test('show: properties, -p, --value, JSON', () => {
  const r = mctl(svc, ['show', NAME]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^Name=${NAME}$`, 'm'));
  assert.match(r.stdout, /^Id=[0-9a-f]{32}$/m);
  assert.match(r.stdout, /^Timestamp=\w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/m);
  assert.equal(mctl(svc, ['show', NAME, '-p', 'Leader', '--value']).stdout, `${machine.leader}\n`);
  assert.equal(mctl(svc, ['show', NAME, '-p', 'Leader', '-p', 'Class']).stdout, `Class=container\nLeader=${machine.leader}\n`);
  assert.equal(JSON.parse(mctl(svc, ['show', NAME, '-o', 'json']).stdout).Leader, machine.leader);
});

test('shell NAME CMD: the exit status comes back, stdout and stderr stay apart', () => {
  const r = mctl(svc, ['shell', NAME, '/bin/sh', '-c', 'echo out; echo err >&2; exit 7']);
  assert.equal(r.status, 7, r.stderr);
  assert.equal(r.stdout, 'out\n');
  assert.equal(r.stderr, 'err\n');
  assert.equal(mctl(svc, ['shell', NAME, 'true']).status, 0, 'relative commands use the container PATH');
  assert.equal(mctl(svc, ['shell', NAME, 'false']).status, 1);
  assert.equal(mctl(svc, ['shell', NAME, '/bin/sh', '-c', 'kill -TERM $$']).status, 143, 'killed by SIGTERM: 128+15');
  assert.equal(mctl(svc, ['shell', NAME, '/no/such/program']).status, 127, 'not found: 127, as in a shell');
});

test('shell: input is passed through, -E sets variables, USER@ and --uid pick the user', () => {
  assert.equal(mctl(svc, ['shell', NAME, '/bin/cat'], { input: 'piped input\n' }).stdout, 'piped input\n');
  assert.equal(mctl(svc, ['shell', '-E', 'GREETING=hello world', NAME, '/bin/sh', '-c', 'echo "$GREETING"']).stdout, 'hello world\n');
  assert.equal(mctl(svc, ['shell', NAME, '/bin/echo', '$HOME', '$$', '${X}']).stdout, '$HOME $$ ${X}\n', 'arguments reach the command verbatim');
  assert.equal(mctl(svc, ['shell', 'nobody@' + NAME, '/usr/bin/id', '-un']).stdout, 'nobody\n');
  assert.equal(mctl(svc, ['shell', '--uid=daemon', NAME, '/usr/bin/id', '-u']).stdout, '1\n');
  // The command runs inside the container, as a unit of the container's systemd.
  assert.match(mctl(svc, ['shell', NAME, '/bin/cat', '/proc/self/cgroup']).stdout, /^0::\/system\.slice\/run-.*\.service$/m);
  assert.equal(mctl(svc, ['shell', NAME, '/bin/sh', '-c', 'cat /proc/1/comm']).stdout, 'systemd\n');
});

test('shell into a container without systemd (the nsenter route): the working directory is the container\'s root, never the host\'s', async () => {
  // A command container registered by our launcher: no /run/systemd/system inside, so shell
  // runs the command straight under nsenter. With and without a user namespace.
  for (const extra of [[], ['-U']]) {
    const name = `t-cli-m2${extra.length ? 'u' : ''}`;
    const ct = spawn(join(MCTL, '..', 'mctl-nspawn'), ['-q', '--register=yes', '--read-only', '--console=pipe', '-D', debianTree(), '-M', name, ...extra, '/bin/sleep', '300'], { env: svc.env, stdio: 'ignore' });
    try {
      for (let i = 0; mctl(svc, ['status', name]).status !== 0; i++) {
        assert.ok(i < 200 && ct.exitCode === null, `${name} did not register`);
        await new Promise((res) => setTimeout(res, 50));
      }
      const r = mctl(svc, ['shell', name, '/bin/sh', '-c', 'if [ . -ef / ]; then echo root; else echo elsewhere; fi; ls']);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '', 'no getcwd() complaint');
      const [where, ...listing] = r.stdout.trim().split('\n');
      assert.equal(where, 'root', `${extra.join(' ')}: cwd is the container's /`);
      assert.deepEqual(listing.sort(), readdirSync(debianTree()).filter((n) => !n.startsWith('.')).sort(), 'relative paths name the container\'s files');
    } finally {
      ct.kill('SIGTERM');
      await new Promise((res) => (ct.exitCode !== null || ct.signalCode !== null ? res(null) : ct.once('exit', res)));
    }
  }
});

test('shell NAME CMD on a terminal: the command gets a PTY of its own and its status comes back', async () => {
  const s = ptySpawn([process.execPath, MCTL, 'shell', NAME, '/bin/sh', '-c', 'tty; test -t 0 && echo ON-A-TTY; exit 4'], svc.env);
  try {
    assert.equal(await s.exit, 4, s.output());
    assert.match(s.output(), /\/dev\/pts\/\d+\r?\n/);
    assert.match(s.output(), /ON-A-TTY/);
  } finally {
    s.kill();
  }
});

test('copy-to and copy-from move files in and out', () => {
  const src = join(scratch, 'in.txt');
  writeFileSync(src, 'payload from the host\n');
  const to = mctl(svc, ['copy-to', NAME, src, '/root/in.txt']);
  assert.equal(to.status, 0, to.stderr);
  assert.equal(mctl(svc, ['shell', NAME, '/bin/cat', '/root/in.txt']).stdout, 'payload from the host\n');
  const from = mctl(svc, ['copy-from', NAME, '/etc/debian_version', join(scratch, 'dv')]);
  assert.equal(from.status, 0, from.stderr);
  assert.equal(readFileSync(join(scratch, 'dv'), 'utf8'), readFileSync(join(debianTree(), 'etc/debian_version'), 'utf8'));
  const again = mctl(svc, ['copy-to', NAME, src, '/root/in.txt']);
  assert.equal(again.status, 1, 'an existing destination needs --force');
  assert.equal(again.stderr.split('\n').filter(Boolean).length, 1);
  assert.equal(mctl(svc, ['copy-to', '--force', NAME, src, '/root/in.txt']).status, 0);
});

test('kill delivers a signal to the leader', () => {
  // SIGUSR2 makes systemd (the leader) log its state; harmless, and the machine stays up.
  const r = mctl(svc, ['kill', '--kill-whom=leader', '-s', 'USR2', NAME]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(mctl(svc, ['show', NAME, '-p', 'State', '--value']).stdout, 'running\n');
});

test('login through a real PTY: log in as root, run a command, log out, leave with ^]^]^]', async () => {
  const s = ptySpawn([process.execPath, MCTL, 'login', NAME], svc.env);
  try {
    await s.waitFor(/Press \^\] three times within 1s/);
    await s.waitFor(/login: $/m);
    s.send('root\r');
    await s.waitFor(/Password: ?$/m);
    s.send('mctl\r');
    await s.waitFor(/[#$] $/m);
    s.send('echo LOGIN-OK-$((6*7)) $(cat /proc/1/comm)\r');
    await s.waitFor(/LOGIN-OK-42 systemd/);
    s.send('exit\r');
    // The getty comes back after a logout; only the escape leaves.
    await s.waitFor(/login: $/m);
    s.send('\x1d\x1d\x1d');
    assert.equal(await s.exit, 0);
    assert.match(s.output(), /Connection to machine .* terminated by user\./);
    // Our side is raw (no ONLCR): the container's "\r\n" arrives unchanged.
    assert.match(s.output(), /permitted by applicable law\.\r\n/);
  } finally {
    s.kill();
  }
});

test('poweroff: the machine shuts down cleanly and leaves the list', async () => {
  const r = mctl(svc, ['poweroff', NAME]);
  assert.equal(r.status, 0, r.stderr);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const rows = JSON.parse(mctl(svc, ['list', '-o', 'json']).stdout) as unknown[];
    if (rows.length === 0) break;
    assert.ok(Date.now() < deadline, 'machine still listed 30 s after poweroff');
    await new Promise((res) => setTimeout(res, 200));
  }
  // A clean shutdown: the container's systemd powered off, and nspawn exited with status 0.
  while (machine.exitStatus() === undefined) {
    assert.ok(Date.now() < deadline, 'nspawn still running 30 s after poweroff');
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(machine.exitStatus(), 0);
  assert.equal(spawnSync('kill', ['-0', String(machine.leader)]).status, 1, 'leader gone');
});
