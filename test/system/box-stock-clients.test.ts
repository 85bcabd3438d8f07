// Stock clients against our machine1 service: in one box with mctl-machined installed as the unit
// (systemd-machined masked), an unmodified systemd-nspawn boots Debian and registers, and an
// unmodified machinectl drives it — status/show, shell and login on a terminal, reboot, poweroff,
// kill, terminate — the way an administrator would. Nothing of mctl runs on the client side.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BoxTerminal, installMctl, parseProps, useBox, waitFor, waitSystemRunning, type Box } from '../helpers/box.js';
import { debianTree } from '../helpers/images.js';

const held = useBox({ machines: { debian: debianTree() } }, (box) => installMctl(box, { machined: true }));
const ROOT = '/var/lib/machines/debian';
/** The long-lived machine most tests share; kill and terminate get machines of their own. */
const X = 't-stock-x';

/** Escaped scope name machined gives machine NAME (unit_name_escape: '-' → \x2d). */
const scopeOf = (name: string): string => `machine-${name.replace(/-/g, '\\x2d')}.scope`;
const reEscape = (s: string): string => s.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');

/** `systemd-nspawn -b -D ROOT -M NAME`, as a transient service of the box's systemd. */
async function bootStock(box: Box, name: string): Promise<void> {
  await box.runOk(['systemd-run', `--unit=${name}`, '--', 'systemd-nspawn', '-b', '-D', ROOT, '-M', name]);
  await waitFor(async () => (await box.run(['machinectl', 'show', name])).status === 0, 20_000, `${name} registered`);
}

async function stopStock(box: Box, name: string): Promise<void> {
  await box.run(['systemctl', 'stop', `${name}.service`]);
  await box.run(['systemctl', 'reset-failed', `${name}.service`]);
}

async function show(box: Box, name: string): Promise<Record<string, string>> {
  return parseProps(await box.runOk(['machinectl', 'show', name]));
}

async function gone(box: Box, name: string): Promise<void> {
  await waitFor(async () => (await box.run(['machinectl', 'show', name])).status !== 0, 20_000, `${name} unregistered`);
  await waitFor(async () => (await box.run(['systemctl', 'is-active', `${name}.service`])).stdout.trim() !== 'active', 10_000, `${name} launcher exited`);
  assert.equal((await box.runOk(['systemctl', 'show', scopeOf(name), '-p', 'ActiveState', '--value'])).trim(), 'inactive', 'scope gone');
}

test('stock nspawn -b -D -M registers with mctl-machined: list shows a container, its scope is under machine.slice, its systemd answers', async () => {
  const { box } = held;
  assert.equal(parseProps(await box.runOk(['busctl', 'status', '--no-pager', 'org.freedesktop.machine1'])).Unit, 'mctl-machined.service');
  assert.equal((await box.run(['systemctl', 'is-enabled', 'systemd-machined.service'])).stdout.trim(), 'masked');
  await bootStock(box, X);
  assert.match(await box.runOk(['machinectl', 'list', '--no-legend']), new RegExp(`^${X}\\s+container\\s+systemd-nspawn\\s+debian\\s+12`, 'm'));
  const m = await show(box, X);
  assert.equal(m.Class, 'container');
  assert.equal(m.Service, 'systemd-nspawn');
  assert.equal(m.Unit, scopeOf(X));
  const scope = parseProps(await box.runOk(['systemctl', 'show', scopeOf(X), '-p', 'Slice', '-p', 'ActiveState', '-p', 'ControlGroup']));
  assert.equal(scope.Slice, 'machine.slice');
  assert.equal(scope.ActiveState, 'active');
  assert.equal(scope.ControlGroup, `/machine.slice/${scopeOf(X)}`);
  assert.match(await box.runOk(['cat', `/proc/${m.Leader}/cgroup`]), new RegExp(`^0::${reEscape(`/machine.slice/${scopeOf(X)}/`)}`, 'm'));
  // The nested system boots to the end, and answers over its own bus via `-M`.
  assert.match(await waitSystemRunning(box, X), /^(running|degraded)$/);
  assert.match((await box.run(['systemctl', '-M', X, 'is-system-running'])).stdout.trim(), /^(running|degraded)$/);
});

test('stock machinectl status and show describe it', async () => {
  const { box } = held;
  const m = await show(box, X);
  assert.equal(m.Name, X);
  assert.equal(m.State, 'running');
  assert.equal(m.RootDirectory, ROOT);
  assert.match(m.Id ?? '', /^[0-9a-f]{32}$/);
  const status = await box.runOk(['machinectl', 'status', X, '--no-pager']);
  assert.match(status, new RegExp(`^${X}\\(${m.Id}\\)$`, 'm'));
  assert.match(status, new RegExp(`Leader: ${m.Leader} \\(systemd\\)`));
  assert.match(status, /Service: systemd-nspawn; class container/);
  assert.match(status, new RegExp(`Root: ${ROOT}`));
  assert.match(status, /OS: Debian GNU\/Linux 12 \(bookworm\)/);
  assert.match(status, new RegExp(`Unit: ${reEscape(scopeOf(X))}`));
  assert.match(status, /init\.scope/, 'the scope\'s process tree');
});

test('stock machinectl shell runs a command in it (on a terminal)', async () => {
  const { box } = held;
  const id = (await show(box, X)).Id;
  const term = new BoxTerminal(box, `machinectl shell ${X} /bin/sh -c 'echo hi from $(cat /etc/machine-id)'`);
  try {
    await term.expect(new RegExp(`hi from ${id}`));
    await term.expect(/Connection to machine .* terminated/);
    assert.equal(await term.exited, 0, term.output);
  } finally {
    await term.close();
  }
  // Without a command: root's login shell, interactive on the same kind of terminal.
  const interactive = new BoxTerminal(box, `machinectl shell ${X}`);
  try {
    await interactive.expect(/# $/m);
    interactive.type('echo in-shell-$((6*7)) $(id -un); exit\r');
    await interactive.expect(/in-shell-42 root/);
    await interactive.expect(/Connection to machine .* terminated/);
    assert.equal(await interactive.exited, 0, interactive.output);
  } finally {
    await interactive.close();
  }
});

test('stock machinectl login reaches the getty prompt, logs in, and ^]^]^] leaves', async () => {
  const { box } = held;
  const term = new BoxTerminal(box, `machinectl login ${X}`);
  try {
    await term.expect(/Connected to machine/);
    await term.expect(/login: $/m);
    term.type('root\r');
    await term.expect(/Password: ?/);
    term.type('mctl\r');
    await term.expect(/# /);
    term.type('echo logged-in-$((6*7)); exit\r');
    await term.expect(/logged-in-42/);
    // The container's getty is restarted after logout: a new prompt on the same terminal.
    await term.expect(/login: $/m);
    term.type('\x1d\x1d\x1d');
    await term.expect(/Connection to machine .* terminated/);
    assert.equal(await term.exited, 0, term.output);
  } finally {
    await term.close();
  }
});

test('stock machinectl reboot: the same launcher boots it again, a new leader registers', async () => {
  const { box } = held;
  const before = await show(box, X);
  const launcher = (await box.runOk(['systemctl', 'show', `${X}.service`, '-p', 'MainPID', '--value'])).trim();
  await box.runOk(['machinectl', 'reboot', X]);
  let after: Record<string, string> = {};
  await waitFor(
    async () => {
      const r = await box.run(['machinectl', 'show', X]);
      after = parseProps(r.stdout);
      return r.status === 0 && after.Leader !== before.Leader && after.State === 'running';
    },
    30_000,
    `${X} registered again with a new leader`,
  );
  assert.notEqual(after.Leader, before.Leader);
  assert.equal(after.Unit, scopeOf(X));
  assert.equal((await box.runOk(['systemctl', 'show', `${X}.service`, '-p', 'MainPID', '--value'])).trim(), launcher, 'nspawn itself kept running');
  assert.match(await box.runOk(['cat', `/proc/${after.Leader}/cgroup`]), new RegExp(`^0::${reEscape(`/machine.slice/${scopeOf(X)}/`)}`, 'm'));
  assert.match(await waitSystemRunning(box, X), /^(running|degraded)$/);
  const news = (await box.runOk(['journalctl', '-u', 'mctl-machined.service', '--no-pager', '-o', 'cat'])).split('\n').filter((l) => l === `New machine ${X}.`);
  assert.equal(news.length, 2, 'registered once per boot');
});

test('stock machinectl poweroff: an orderly shutdown, the machine is gone and nspawn exits 0', async () => {
  const { box } = held;
  await box.runOk(['machinectl', 'poweroff', X]);
  try {
    await gone(box, X);
    assert.equal((await box.runOk(['systemctl', 'show', `${X}.service`, '-p', 'ExecMainStatus', '--value'])).trim(), '0');
    assert.equal((await box.runOk(['machinectl', 'list', '--no-legend'])).trim(), '');
  } finally {
    await stopStock(box, X);
  }
});

test('stock machinectl kill: SIGTERM reaches every process of the machine; kill --kill-whom=leader -s KILL ends it', async () => {
  const { box } = held;
  const name = 't-stock-k';
  await bootStock(box, name);
  try {
    assert.match(await waitSystemRunning(box, name), /^(running|degraded)$/);
    // A bystander inside the container: a service whose process only a signal to "all" reaches.
    await box.runOk(['systemd-run', '-M', name, '--unit=t-stock-victim', '/bin/sleep', '1000']);
    const victimProcs = `/sys/fs/cgroup/machine.slice/${scopeOf(name)}/payload/system.slice/t-stock-victim.service/cgroup.procs`;
    const victim = (await box.runOk(['cat', victimProcs])).trim();
    assert.match(victim, /^\d+$/);
    const leader = (await show(box, name)).Leader;

    await box.runOk(['machinectl', 'kill', name]);
    // Dead or a zombie: PID 1 of the container re-executes on SIGTERM and may reap it late.
    const dead = async (): Promise<boolean> => !/^\d+ \(.*\) [^Z]/.test((await box.run(['cat', `/proc/${victim}/stat`])).stdout);
    await waitFor(dead, 10_000, 'the bystander got SIGTERM');
    // PID 1 of the container survives SIGTERM (systemd re-executes itself), so the machine stays.
    assert.equal((await show(box, name)).Leader, leader);

    await box.runOk(['machinectl', 'kill', '--kill-whom=leader', '--signal=SIGKILL', name]);
    await gone(box, name);
    assert.notEqual((await box.runOk(['systemctl', 'show', `${name}.service`, '-p', 'ExecMainStatus', '--value'])).trim(), '0', 'nspawn reports the killed container');
  } finally {
    await stopStock(box, name);
  }
});

test('stock machinectl terminate ends a machine at once', async () => {
  const { box } = held;
  const name = 't-stock-t';
  await bootStock(box, name);
  try {
    // Not before its systemd is up: a PID 1 without handlers ignores the scope's SIGTERM, and the
    // stop then waits for the scope's timeout (stock systemd-machined behaves the same).
    assert.match(await waitSystemRunning(box, name), /^(running|degraded)$/);
    await box.runOk(['machinectl', 'terminate', name]);
    await gone(box, name);
    assert.equal((await box.runOk(['machinectl', 'list', '--no-legend'])).trim(), '');
    assert.equal((await box.runOk(['ls', '/run/systemd/machines'])).split('\n').filter((f) => f.includes(name)).length, 0, 'state files removed');
  } finally {
    await stopStock(box, name);
  }
});
