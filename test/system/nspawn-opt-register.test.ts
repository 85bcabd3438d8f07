// mctl-nspawn's registration against the real thing: inside the systemd host in a box, with
// stock systemd-machined (bus-activated) and systemd as PID 1.
//   default (--register=auto)  → CreateMachine: machine-NAME.scope in machine.slice, machinectl sees it
//   --register=no              → our own transient NAME.scope via StartTransientUnit, not registered
//   --keep-unit                → RegisterMachine: the machine is the service unit we run in
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkoutRoot, parseProps, useBox, waitFor, waitSystemRunning } from '../helpers/box.js';
import { debianTree } from '../helpers/images.js';

const held = useBox({ machines: { debian: debianTree() } });
const NSPAWN = `${checkoutRoot}/bin/mctl-nspawn`;
const ROOT = '/var/lib/machines/debian';

/** Start the launcher in the background from a shell in the box (its status lands in /tmp/NAME.rc). */
async function startLauncher(name: string, args: string[]): Promise<void> {
  const quoted = args.map((a) => `'${a}'`).join(' ');
  await held.box.runOk(['sh', '-c', `(node ${NSPAWN} ${quoted} >/tmp/${name}.log 2>&1; echo $? >/tmp/${name}.rc) >/dev/null 2>&1 &`]);
}

async function launcherStatus(name: string): Promise<string> {
  await waitFor(async () => (await held.box.run(['test', '-s', `/tmp/${name}.rc`])).status === 0, 30_000, `${name} launcher exit`);
  return (await held.box.runOk(['cat', `/tmp/${name}.rc`])).trim();
}

async function unitGone(unit: string): Promise<void> {
  const { box } = held;
  await waitFor(async () => (await box.run(['systemctl', 'is-active', unit])).stdout.trim() !== 'active', 30_000, `${unit} stopped`);
  await box.run(['systemctl', 'reset-failed', unit]);
}

test('default registration: stock machinectl lists the machine, its scope is in machine.slice, terminate stops it', async () => {
  const { box } = held;
  const name = 't-nsp-opt-a';
  // As a service, the way a unit would run it.
  await box.runOk(['systemd-run', `--unit=${name}-launcher`, '-p', 'Delegate=yes', '--', 'node', NSPAWN, '-q', '-b', `--machine=${name}`, `--directory=${ROOT}`]);
  try {
    await waitFor(async () => (await box.run(['machinectl', 'show', name])).status === 0, 20_000, 'machine registered');
    assert.equal(await waitSystemRunning(box, name), 'running');
    const list = await box.runOk(['machinectl', 'list', '--no-legend']);
    assert.match(list, new RegExp(`^${name}\\s+container\\s+mctl-nspawn\\s`, 'm'));
    const props = parseProps(await box.runOk(['machinectl', 'show', name, '-p', 'Unit', '-p', 'Leader', '-p', 'Class', '-p', 'Service']));
    assert.equal(props.Unit, 'machine-t\\x2dnsp\\x2dopt\\x2da.scope');
    const cgroup = await box.runOk(['cat', `/proc/${props.Leader}/cgroup`]);
    assert.match(cgroup, /^0::\/machine\.slice\/machine-t\\x2dnsp\\x2dopt\\x2da\.scope(\/|$)/m);
    const scope = parseProps(await box.runOk(['systemctl', 'show', props.Unit!, '-p', 'Slice', '-p', 'DevicePolicy', '-p', 'KillSignal', '-p', 'KillMode', '-p', 'Controller']));
    // As systemd-nspawn: the supervisor is the scope's controller, so a stop request reaches it
    // (Scope.RequestStop) instead of systemd killing the delegated cgroup tree.
    assert.match(scope.Controller ?? '', /^:1\.\d+$/, 'the supervisor\'s bus name is the scope\'s controller');
    delete scope.Controller;
    assert.deepEqual(scope, { Slice: 'machine.slice', DevicePolicy: 'closed', KillSignal: '37', KillMode: 'mixed' });
    // A service inside that records how it was stopped: by the guest's own manager (SIGTERM in an
    // orderly shutdown), not by a SIGKILL from outside.
    await box.runOk(['nsenter', '-t', props.Leader!, '-a', 'systemd-run', '--unit=t-probe', '/bin/sh', '-c',
      'trap "echo got-TERM > /var/tmp/probe; exit 0" TERM; echo up > /var/tmp/probe; while :; do sleep 0.2; done']);
    await waitFor(async () => (await box.run(['cat', `${ROOT}/var/tmp/probe`])).stdout.trim() === 'up', 10_000, 'probe service up');
    // terminate → RequestStop → the supervisor sends SIGRTMIN+3 to PID 1: a clean poweroff.
    await box.runOk(['machinectl', 'terminate', name]);
    await waitFor(async () => (await box.run(['systemctl', 'is-active', `${name}-launcher.service`])).stdout.trim() !== 'active', 30_000, 'launcher stopped');
    const result = parseProps(await box.runOk(['systemctl', 'show', `${name}-launcher.service`, '-p', 'ExecMainStatus', '-p', 'Result']));
    assert.deepEqual(result, { ExecMainStatus: '0', Result: 'success' }, 'a clean poweroff: the launcher exits 0');
    assert.equal((await box.runOk(['cat', `${ROOT}/var/tmp/probe`])).trim(), 'got-TERM', 'the guest stopped its services itself');
    assert.match(await box.runOk(['journalctl', '-u', `${name}-launcher.service`, '--no-pager', '-o', 'cat']), /Halting system\./, 'the guest halted (SIGRTMIN+3), not killed');
    await waitFor(async () => (await box.run(['machinectl', 'show', name])).status !== 0, 20_000, 'machine gone');
  } finally {
    await box.run(['systemctl', 'kill', '--signal=KILL', `${name}-launcher.service`]);
    await box.run(['systemctl', 'reset-failed', `${name}-launcher.service`]);
  }
});

test('--register=no: a transient NAME.scope of our own, unknown to machined', async () => {
  const { box } = held;
  const name = 't-nsp-opt-b';
  await startLauncher(name, ['-q', '--pipe', '--register=no', '--slice=custom.slice', `--machine=${name}`, `--directory=${ROOT}`, '/bin/sleep', '300']);
  try {
    await waitFor(async () => (await box.run(['systemctl', 'is-active', `${name}.scope`])).stdout.trim() === 'active', 20_000, 'scope active');
    const scope = parseProps(await box.runOk(['systemctl', 'show', `${name}.scope`, '-p', 'Slice', '-p', 'Delegate', '-p', 'Description', '-p', 'CollectMode']));
    assert.deepEqual(scope, { Slice: 'custom.slice', Delegate: 'yes', Description: `Container ${name}`, CollectMode: 'inactive-or-failed' });
    assert.notEqual((await box.run(['machinectl', 'show', name])).status, 0, 'not registered');
    const pids = (await box.runOk(['systemctl', 'show', `${name}.scope`, '-p', 'ControlGroup', '--value'])).trim();
    assert.match(pids, /^\/custom\.slice\/t-nsp-opt-b\.scope$/);
  } finally {
    // Stopping the scope stops the container (SIGKILL to its PID 1 for a command container).
    await box.run(['systemctl', 'stop', `${name}.scope`]);
  }
  assert.notEqual(await launcherStatus(name), '', 'the launcher ended');
  await waitFor(async () => (await box.run(['systemctl', 'is-active', `${name}.scope`])).stdout.trim() !== 'active', 20_000, 'scope collected');
});

test('--keep-unit: RegisterMachine adopts the service unit we run in', async () => {
  const { box } = held;
  const name = 't-nsp-opt-c';
  // The launcher runs in a unit of its own (a transient scope here), which machined adopts.
  await box.runOk(['sh', '-c', `(systemd-run --scope -p Delegate=yes -p Slice=machine.slice --unit=${name}-launcher -- node ${NSPAWN} -q --pipe --keep-unit --register=yes --machine=${name} --directory=${ROOT} /bin/sleep 300 >/tmp/${name}.log 2>&1 &) >/dev/null 2>&1`]);
  try {
    await waitFor(async () => (await box.run(['machinectl', 'show', name])).status === 0, 20_000, 'machine registered');
    const props = parseProps(await box.runOk(['machinectl', 'show', name, '-p', 'Unit', '-p', 'Service']));
    assert.deepEqual(props, { Unit: `${name}-launcher.scope`, Service: 'mctl-nspawn' });
  } finally {
    await box.run(['systemctl', 'stop', `${name}-launcher.scope`]);
    await unitGone(`${name}-launcher.scope`);
  }
  await waitFor(async () => (await box.run(['machinectl', 'show', name])).status !== 0, 20_000, 'machine gone');
});


test('--register=no -b: stopping the scope during boot halts the container cleanly (RequestStop to the supervisor)', async () => {
  const { box } = held;
  const name = 't-nsp-opt-d';
  await startLauncher(name, ['--register=no', '--console=passive', '-b', `--machine=${name}`, `--directory=${ROOT}`]);
  await waitFor(async () => (await box.run(['systemctl', 'is-active', `${name}.scope`])).stdout.trim() === 'active', 20_000, 'scope active');
  const scope = parseProps(await box.runOk(['systemctl', 'show', `${name}.scope`, '-p', 'KillMode', '-p', 'Controller']));
  assert.equal(scope.KillMode, 'mixed');
  assert.match(scope.Controller ?? '', /^:1\.\d+$/);
  // At once, while the guest is still booting: the request is held until PID 1 can take it.
  await box.runOk(['systemctl', 'stop', `${name}.scope`]);
  assert.equal(await launcherStatus(name), '0', `a clean halt; launcher log:\n${(await box.run(['cat', `/tmp/${name}.log`])).stdout}`);
  await unitGone(`${name}.scope`);
});
