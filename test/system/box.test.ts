// The systemd host in a box itself: real systemd as PID 1 reaches `running`, stock
// systemd-machined answers stock machinectl, and stock systemd-nspawn inside the box boots the
// Debian image as a nested container registered under machine.slice with a delegated scope.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkoutRoot, parseProps, useBox, waitFor, waitSystemRunning } from '../helpers/box.js';
import { debianTree } from '../helpers/images.js';

const held = useBox({ machines: { debian: debianTree() } });
const NESTED = 't-box-deb';
const SCOPE = 'machine-t\\x2dbox\\x2ddeb.scope';

test('systemd in the box boots to running with no failed units', async () => {
  const { box } = held;
  assert.equal(box.bootState, 'running', `booted to ${box.bootState}; failed units:\n${await box.run(['systemctl', '--failed', '--no-legend']).then((r) => r.stdout)}`);
  assert.equal((await box.runOk(['systemctl', 'is-system-running'])).trim(), 'running');
  assert.equal((await box.runOk(['systemctl', 'list-units', '--failed', '--no-legend', '--plain'])).trim(), '');
  // Real PID 1 with a system bus, a pure cgroup2 tree, and the checkout + node bound in.
  assert.equal((await box.runOk(['cat', '/proc/1/comm'])).trim(), 'systemd');
  assert.equal((await box.runOk(['stat', '-f', '-c', '%T', '/sys/fs/cgroup'])).trim(), 'cgroup2fs');
  assert.equal((await box.runOk(['busctl', 'get-property', 'org.freedesktop.systemd1', '/org/freedesktop/systemd1', 'org.freedesktop.systemd1.Manager', 'Virtualization'])).trim(), 's "systemd-nspawn"');
  assert.match(await box.runOk(['node', '-e', 'console.log(process.version)']), /^v20\./);
  const touch = await box.run(['touch', `${checkoutRoot}/.box-write-probe`]);
  assert.notEqual(touch.status, 0, 'the checkout must be read-only inside the box');
});

test('stock machinectl lists machines through stock systemd-machined', async () => {
  const { box } = held;
  const list = await box.runOk(['machinectl', 'list', '--no-legend']);
  assert.equal(list.trim(), '', 'no machines before any container runs');
  assert.equal((await box.runOk(['systemctl', 'is-active', 'systemd-machined.service'])).trim(), 'active');
  const images = await box.runOk(['machinectl', 'list-images', '--no-legend']);
  assert.match(images, /^debian\s+directory/m, 'the Debian image is in the box pool');
});

test('a nested Debian container from stock nspawn registers with a delegated scope in machine.slice', async () => {
  const { box } = held;
  await box.runOk(['systemd-run', '--unit=t-box-nested', '--', 'systemd-nspawn', '--boot', `--machine=${NESTED}`, '--directory=/var/lib/machines/debian']);
  try {
    // Registration happens before the nested systemd starts; wait for the nested boot to finish too.
    await waitFor(async () => (await box.run(['machinectl', 'show', NESTED])).status === 0, 20_000, 'machine registered');
    assert.equal(await waitSystemRunning(box, NESTED), 'running');

    const list = await box.runOk(['machinectl', 'list', '--no-legend']);
    assert.match(list, new RegExp(`^${NESTED}\\s+container\\s+systemd-nspawn\\s+debian\\s+12`, 'm'));
    const props = parseProps(await box.runOk(['machinectl', 'show', NESTED, '-p', 'Unit', '-p', 'Leader', '-p', 'State', '-p', 'Class']));
    assert.equal(props.Unit, SCOPE);
    assert.equal(props.Class, 'container');
    assert.equal(props.State, 'running');

    const scope = parseProps(await box.runOk(['systemctl', 'show', SCOPE, '-p', 'Slice', '-p', 'Delegate', '-p', 'ActiveState', '-p', 'ControlGroup']));
    assert.deepEqual(
      { Slice: scope.Slice, Delegate: scope.Delegate, ActiveState: scope.ActiveState, ControlGroup: scope.ControlGroup },
      { Slice: 'machine.slice', Delegate: 'yes', ActiveState: 'active', ControlGroup: `/machine.slice/${SCOPE}` },
    );
    // The leader really lives in that cgroup (in the nested systemd's delegated payload subtree).
    const leaderCgroup = await box.runOk(['cat', `/proc/${props.Leader}/cgroup`]);
    assert.match(leaderCgroup, new RegExp(`^0::/machine\\.slice/${SCOPE.replace(/\\/g, '\\\\')}/`, 'm'));

    await box.runOk(['machinectl', 'poweroff', NESTED]);
    await waitFor(async () => (await box.run(['machinectl', 'show', NESTED])).status !== 0, 20_000, 'machine gone after poweroff');
    await waitFor(async () => (await box.runOk(['systemctl', 'show', SCOPE, '-p', 'ActiveState', '--value'])).trim() === 'inactive', 10_000, 'scope gone');
    const service = parseProps(await box.runOk(['systemctl', 'show', 't-box-nested.service', '-p', 'Result', '-p', 'ExecMainStatus']));
    assert.equal(service.ExecMainStatus, '0', 'nspawn exits 0 after an orderly poweroff');
  } finally {
    await box.run(['systemctl', 'stop', 't-box-nested.service']);
    await box.run(['systemctl', 'reset-failed', 't-box-nested.service']);
  }
});
