// Scope stop semantics, as systemd-nspawn: the launcher's supervisor is the scope's
// Controller=, so stopping the machine through the service (TerminateMachine; systemctl stop
// under systemd) makes the supervisor send the kill signal to the container's PID 1 alone and a
// booted Debian shuts down cleanly — its services are stopped by their own manager (SIGTERM),
// not killed by a signal sent to every process. Against our mctl-machined on a private bus
// (its cgroupfs backend sends Scope.RequestStop to the controller as systemd does); a
// RequestStop from anyone else is ignored. Stock systemd-nspawn, the reference controller,
// is stopped the same way by mctl-machined.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import dbus, { type MessageBus } from 'dbus-next';
import { debianTree } from '../helpers/images.js';
import { startPrivateBus, type PrivateBus } from '../helpers/dbus-daemon.js';
import { startMachinedProcess, waitSystemRunning, type MachinedProcess } from '../helpers/machined-process.js';
import { connectBus, call } from '../../src/dbus/bus.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const NSPAWN = join(repo, 'bin/mctl-nspawn');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const timeout = (ms: number) => new Promise<string>((r) => setTimeout(() => r('timeout'), ms).unref());
const manager = { destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager' };

let work = '';
let tree = '';
let bus: PrivateBus;
let client: MessageBus;
let machined: MachinedProcess | null = null;

async function startMachined(): Promise<void> {
  machined = await startMachinedProcess(client, bus.env, join(work, 'state'));
}

async function stopMachined(): Promise<void> {
  const m = machined;
  machined = null;
  await m?.stop();
}

before(async () => {
  tree = debianTree();
  work = mkdtempSync('/tmp/mctl-nspawn-stop-');
  bus = await startPrivateBus();
  client = connectBus(bus.env['DBUS_SYSTEM_BUS_ADDRESS']);
  await startMachined();
});

after(async () => {
  client?.disconnect();
  await stopMachined();
  await bus?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function leaderOf(name: string): Promise<number> {
  const p = await call(client, { ...manager, member: 'GetMachine', signature: 's', body: [name] });
  const r = await call(client, {
    destination: 'org.freedesktop.machine1', path: p.body[0] as string, interface: 'org.freedesktop.DBus.Properties',
    member: 'Get', signature: 'ss', body: ['org.freedesktop.machine1.Machine', 'Leader'],
  });
  return Number((r.body[0] as { value: number }).value);
}


interface Booted {
  child: ChildProcess;
  exited: Promise<number | null>;
  stderr: () => string;
}

/** Boot the cached tree (throw-away overlay) registered with the service; resolves once registered. */
async function boot(name: string, extra: string[] = []): Promise<Booted> {
  const child = spawn(NSPAWN, ['--register=yes', '--console=passive', '-x', '-b', '-M', name, '-D', tree, ...extra], { env: bus.env, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  for (let i = 0; ; i++) {
    const r = await call(client, { ...manager, member: 'ListMachines' });
    if ((r.body[0] as Array<[string]>).some((m) => m[0] === name)) break;
    if (i > 300 || child.exitCode !== null) throw new Error(`not registered: ${err}`);
    await sleep(50);
  }
  return { child, exited, stderr: () => err };
}

test('TerminateMachine shuts a booted Debian down cleanly: its services get SIGTERM from their own manager', async () => {
  const out = join(work, 'out1');
  mkdirSync(out);
  const c = await boot('t-nsp-stop1', [`--bind=${out}:/out`]);
  try {
    const leader = await leaderOf('t-nsp-stop1');
    assert.equal(await waitSystemRunning(leader), 'running');
    // A service that records the signal its manager stops it with. A signal sent to every
    // process of the container (KillMode=control-group) would kill the shell without a trace.
    const probe = spawnSync('nsenter', ['-t', String(leader), '-a', 'systemd-run', '--unit=t-probe', '/bin/sh', '-c',
      'trap "echo got-TERM >> /out/log; exit 0" TERM; echo up >> /out/log; while :; do sleep 0.2; done'], { encoding: 'utf8' });
    assert.equal(probe.status, 0, probe.stderr);
    for (let i = 0; i < 100 && !existsSync(join(out, 'log')); i++) await sleep(50);
    await call(client, { ...manager, member: 'TerminateMachine', signature: 's', body: ['t-nsp-stop1'] });
    assert.equal(await Promise.race([c.exited, timeout(30_000)]), 0, c.stderr());
    assert.deepEqual(readFileSync(join(out, 'log'), 'utf8').split('\n'), ['up', 'got-TERM', '']);
    assert.match(c.stderr(), /Container termination requested/);
  } finally {
    c.child.kill('SIGKILL');
    await c.exited;
  }
  for (let i = 0; i < 50; i++) {
    const r = await call(client, { ...manager, member: 'ListMachines' });
    if (!(r.body[0] as Array<[string]>).some((m) => m[0] === 't-nsp-stop1')) return;
    await sleep(100);
  }
  assert.fail('the machine is still registered after its exit');
});

test('a stop request while the guest is still booting is held until its init can take it; the launcher exits 0', async () => {
  const c = await boot('t-nsp-stop2');
  try {
    // right after registration: the guest's systemd may not handle SIGRTMIN+3 yet
    await call(client, { ...manager, member: 'TerminateMachine', signature: 's', body: ['t-nsp-stop2'] });
    assert.equal(await Promise.race([c.exited, timeout(30_000)]), 0, c.stderr());
  } finally {
    c.child.kill('SIGKILL');
    await c.exited;
  }
});

test('RequestStop from a connection that is neither systemd nor the machine service is ignored', async () => {
  const c = await boot('t-nsp-stop3');
  try {
    const leader = await leaderOf('t-nsp-stop3');
    assert.equal(await waitSystemRunning(leader), 'running');
    // Send it to every connection on the bus: the supervisor's is among them.
    const names = (await call(client, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'ListNames' })).body[0] as string[];
    for (const n of names.filter((x) => x.startsWith(':'))) {
      client.send(new dbus.Message({ type: dbus.MessageType.SIGNAL, destination: n, path: '/org/freedesktop/systemd1/unit/machine_2dt_5cx2dnsp_5cx2dstop3_2escope', interface: 'org.freedesktop.systemd1.Scope', member: 'RequestStop' }));
    }
    assert.equal(await Promise.race([c.exited, timeout(3000)]), 'timeout', 'still running');
    assert.equal(spawnSync('nsenter', ['-t', String(leader), '-a', 'systemctl', 'is-system-running'], { encoding: 'utf8' }).stdout.trim(), 'running');
    await call(client, { ...manager, member: 'TerminateMachine', signature: 's', body: ['t-nsp-stop3'] });
    assert.equal(await Promise.race([c.exited, timeout(30_000)]), 0, c.stderr());
  } finally {
    c.child.kill('SIGKILL');
    await c.exited;
  }
});

test('stock systemd-nspawn registered with mctl-machined is asked to stop the same way (its own RequestStop handler)', { skip: !existsSync('/usr/bin/systemd-nspawn') && 'systemd-nspawn is not installed' }, async () => {
  // --volatile=overlay: the cached tree is never written
  const child = spawn('/usr/bin/systemd-nspawn', ['--volatile=overlay', '--console=passive', '-b', '-M', 't-nsp-stop4', '-D', tree], { env: bus.env, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  try {
    for (let i = 0; ; i++) {
      const r = await call(client, { ...manager, member: 'ListMachines' });
      if ((r.body[0] as Array<[string]>).some((m) => m[0] === 't-nsp-stop4')) break;
      if (i > 300 || child.exitCode !== null) throw new Error(`not registered: ${err}`);
      await sleep(50);
    }
    assert.equal(await waitSystemRunning(await leaderOf('t-nsp-stop4')), 'running');
    await call(client, { ...manager, member: 'TerminateMachine', signature: 's', body: ['t-nsp-stop4'] });
    assert.equal(await Promise.race([exited, timeout(30_000)]), 0, err);
    assert.match(err, /Container termination requested/);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
});

test('after a restart of mctl-machined, TerminateMachine still halts the container cleanly (new service owner followed)', async () => {
  const c = await boot('t-nsp-stop5');
  try {
    assert.equal(await waitSystemRunning(await leaderOf('t-nsp-stop5')), 'running');
    await stopMachined();
    await startMachined();
    // the restarted service reloads the machine from its state directory
    for (let i = 0; ; i++) {
      const r = await call(client, { ...manager, member: 'ListMachines' });
      if ((r.body[0] as Array<[string]>).some((m) => m[0] === 't-nsp-stop5')) break;
      if (i > 100) throw new Error('the machine was not reloaded');
      await sleep(50);
    }
    await call(client, { ...manager, member: 'TerminateMachine', signature: 's', body: ['t-nsp-stop5'] });
    assert.equal(await Promise.race([c.exited, timeout(30_000)]), 0, c.stderr());
    assert.match(c.stderr(), /Container termination requested/);
  } finally {
    c.child.kill('SIGKILL');
    await c.exited;
  }
});
