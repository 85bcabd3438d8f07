// mctl-machined as the real org.freedesktop.machine1 service of a systemd host: installed from
// units/ into the box, systemd-machined masked. Stock clients (machinectl, systemd-nspawn's
// registration, busctl) talk to it over the box's real system bus, and the scopes it asks systemd
// for (StartTransientUnit) land under machine.slice with delegation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { installMctl, parseProps, useBox, waitFor, waitSystemRunning, type Box } from '../helpers/box.js';
import { debianTree } from '../helpers/images.js';

const held = useBox({ machines: { debian: debianTree() } }, (box) => installMctl(box, { machined: true }));
const ROOT = '/var/lib/machines/debian';

/** Escaped scope name machined gives machine NAME (unit_name_escape: '-' → \x2d). */
const scopeOf = (name: string): string => `machine-${name.replace(/-/g, '\\x2d')}.scope`;

/** Boot the Debian image with stock systemd-nspawn as a transient service; wait until it is up. */
async function bootNested(box: Box, name: string, extra: string[] = []): Promise<void> {
  await box.runOk(['systemd-run', `--unit=${name}`, '--', 'systemd-nspawn', '--quiet', '--boot', `--machine=${name}`, `--directory=${ROOT}`, '--volatile=overlay', ...extra]);
  await waitFor(async () => (await box.run(['machinectl', 'show', name])).status === 0, 20_000, `${name} registered`);
  assert.equal(await waitSystemRunning(box, name), 'running');
}

async function stopNested(box: Box, name: string): Promise<void> {
  await box.run(['systemctl', 'stop', `${name}.service`]);
  await box.run(['systemctl', 'reset-failed', `${name}.service`]);
}

test('mctl-machined runs as the unit and owns org.freedesktop.machine1; systemd-machined is masked', async () => {
  const { box } = held;
  assert.equal((await box.runOk(['systemctl', 'is-active', 'mctl-machined.service'])).trim(), 'active');
  assert.equal((await box.run(['systemctl', 'is-enabled', 'systemd-machined.service'])).stdout.trim(), 'masked');
  const owner = parseProps(await box.runOk(['busctl', 'status', '--no-pager', 'org.freedesktop.machine1']));
  assert.equal(owner.Unit, 'mctl-machined.service', 'the name belongs to our unit');
  assert.equal(owner.Comm, 'node');
  assert.equal((await box.runOk(['machinectl', 'list', '--no-legend'])).trim(), '');
  const pool = await box.runOk(['busctl', 'get-property', 'org.freedesktop.machine1', '/org/freedesktop/machine1', 'org.freedesktop.machine1.Manager', 'PoolPath']);
  assert.equal(pool.trim(), 's "/var/lib/machines"');
  assert.match(await box.runOk(['machinectl', 'list-images', '--no-legend']), /^debian\s+directory/m);
});

test('stock nspawn registers with ours: machinectl list/status, scope under machine.slice via StartTransientUnit', async () => {
  const { box } = held;
  const name = 't-box-m1';
  await bootNested(box, name);
  try {
    assert.match(await box.runOk(['machinectl', 'list', '--no-legend']), new RegExp(`^${name}\\s+container\\s+systemd-nspawn\\s+debian\\s+12`, 'm'));
    const status = await box.runOk(['machinectl', 'status', name, '--no-pager']);
    assert.match(status, /Service: systemd-nspawn; class container/);
    assert.match(status, /OS: Debian GNU\/Linux 12 \(bookworm\)/);
    assert.match(status, new RegExp(`Unit: ${scopeOf(name).replace(/\\/g, '\\\\')}`));

    const machine = parseProps(await box.runOk(['machinectl', 'show', name]));
    assert.equal(machine.Unit, scopeOf(name));
    assert.equal(machine.State, 'running');
    assert.equal(machine.RootDirectory, ROOT);
    const scope = parseProps(
      await box.runOk(['systemctl', 'show', scopeOf(name), '-p', 'Slice', '-p', 'Delegate', '-p', 'Transient', '-p', 'ActiveState', '-p', 'TasksMax', '-p', 'Description']),
    );
    assert.deepEqual(scope, {
      Slice: 'machine.slice',
      Delegate: 'yes',
      Transient: 'yes',
      ActiveState: 'active',
      TasksMax: '16384',
      Description: `Container ${name}`,
    });
    assert.match(await box.runOk(['cat', `/proc/${machine.Leader}/cgroup`]), new RegExp(`^0::/machine\\.slice/${scopeOf(name).replace(/\\/g, '\\\\')}/`, 'm'));
    // The nested systemd got a delegated subtree it could populate.
    const tree = await box.runOk(['ls', `/sys/fs/cgroup/machine.slice/${scopeOf(name)}/payload`]);
    assert.match(tree, /init\.scope/);
    assert.match(await box.runOk(['journalctl', '-u', 'mctl-machined.service', '--no-pager', '-o', 'cat']), new RegExp(`New machine ${name}\\.`));
  } finally {
    await stopNested(box, name);
  }
});

test('machines survive a restart of mctl-machined; terminate after it still works', async () => {
  const { box } = held;
  const name = 't-box-m2';
  await bootNested(box, name);
  try {
    const before = parseProps(await box.runOk(['machinectl', 'show', name, '-p', 'Leader', '-p', 'Unit', '-p', 'Id', '-p', 'Timestamp']));
    await box.runOk(['systemctl', 'restart', 'mctl-machined.service']);
    const after = parseProps(await box.runOk(['machinectl', 'show', name, '-p', 'Leader', '-p', 'Unit', '-p', 'Id', '-p', 'Timestamp']));
    assert.deepEqual(after, before);

    await box.runOk(['machinectl', 'terminate', name]);
    await waitFor(async () => (await box.run(['machinectl', 'show', name])).status !== 0, 20_000, `${name} gone`);
    await waitFor(async () => (await box.runOk(['systemctl', 'show', scopeOf(name), '-p', 'ActiveState', '--value'])).trim() === 'inactive', 10_000, 'scope gone');
    await waitFor(async () => (await box.run(['systemctl', 'is-active', `${name}.service`])).stdout.trim() !== 'active', 10_000, 'nspawn exited');
    assert.equal((await box.runOk(['ls', '/run/systemd/machines'])).split('\n').filter((f) => f.includes(name)).length, 0, 'state files removed');
  } finally {
    await stopNested(box, name);
  }
});

test('nspawn --keep-unit registers the service it runs in (RegisterMachine, no scope)', async () => {
  const { box } = held;
  const name = 't-box-m3';
  await bootNested(box, name, ['--keep-unit']);
  try {
    const machine = parseProps(await box.runOk(['machinectl', 'show', name, '-p', 'Unit', '-p', 'Leader']));
    assert.equal(machine.Unit, `${name}.service`);
    assert.equal((await box.runOk(['systemctl', 'show', scopeOf(name), '-p', 'LoadState', '--value'])).trim(), 'not-found');
    await box.runOk(['machinectl', 'poweroff', name]);
    await waitFor(async () => (await box.run(['machinectl', 'show', name])).status !== 0, 20_000, `${name} gone after poweroff`);
  } finally {
    await stopNested(box, name);
  }
});

test('unprivileged callers are refused, unknown machines get a clear error', async () => {
  const { box } = held;
  const name = 't-box-m4';
  await bootNested(box, name);
  try {
    const denied = await box.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'machinectl', 'terminate', name]);
    assert.notEqual(denied.status, 0);
    assert.match(denied.stderr, /Access denied|not allowed|permission/i);
    assert.equal((await box.runOk(['machinectl', 'show', name, '-p', 'State', '--value'])).trim(), 'running', 'still running after the refused call');
    // Reading is allowed for everyone, as with systemd-machined.
    const list = await box.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'machinectl', 'list', '--no-legend']);
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^${name}\\s`, 'm'));
  } finally {
    await stopNested(box, name);
  }
  const unknown = await box.run(['machinectl', 'status', 't-box-nonexistent']);
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /No machine 't-box-nonexistent' known/);
});
