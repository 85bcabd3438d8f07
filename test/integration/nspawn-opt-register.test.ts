// --register / --keep-unit against our mctl-machined on a private bus: the container is known
// to the service before its payload runs, with the right leader, class, service and root, and
// disappears when it exits; --register=yes without a service fails cleanly; auto skips.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MessageBus } from 'dbus-next';
import { overlayTree, type TestTree } from './nspawn-opt-tree.js';
import { startPrivateBus, type PrivateBus } from '../helpers/dbus-daemon.js';
import { startMachinedProcess, type MachinedProcess } from '../helpers/machined-process.js';
import { connectBus, call } from '../../src/dbus/bus.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const NSPAWN = join(repo, 'bin/mctl-nspawn');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let work: string;
let tree: string;
let treeMount: TestTree | undefined;
let bus: PrivateBus;
let client: MessageBus;
let machined: MachinedProcess | null = null;
let stateDir: string;

const manager = { destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager' };

async function startMachined(): Promise<void> {
  machined = await startMachinedProcess(client, bus.env, stateDir);
}

async function stopMachined(): Promise<void> {
  const m = machined;
  machined = null;
  await m?.stop();
}

async function machineNames(): Promise<string[]> {
  const r = await call(client, { ...manager, member: 'ListMachines' });
  return (r.body[0] as Array<[string, string, string, string]>).map((m) => m[0]);
}

async function machineProps(name: string): Promise<Record<string, unknown>> {
  const p = await call(client, { ...manager, member: 'GetMachine', signature: 's', body: [name] });
  const r = await call(client, {
    destination: 'org.freedesktop.machine1', path: p.body[0] as string, interface: 'org.freedesktop.DBus.Properties',
    member: 'GetAll', signature: 's', body: ['org.freedesktop.machine1.Machine'],
  });
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r.body[0] as Record<string, { value: unknown }>)) out[k] = v.value;
  return out;
}

/** Start a container whose payload prints "started" and then sleeps; resolves once it printed. */
async function startContainer(args: string[]): Promise<{ child: ChildProcess; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [NSPAWN, '-q', '--pipe', '-D', tree, ...args, '/bin/sh', '-c', 'echo started; exec sleep 60'], { env: bus.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`container did not start: ${err}`)), 20_000);
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('started')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', () => reject(new Error(`container exited early: ${err}`)));
  });
  return { child, exited };
}

before(async () => {
  work = mkdtempSync('/tmp/mctl-nspawn-opt-reg-');
  stateDir = join(work, 'state');
  tree = join(work, 'tree');
  treeMount = overlayTree(work);
  tree = treeMount.path;
  bus = await startPrivateBus();
  client = connectBus(bus.env['DBUS_SYSTEM_BUS_ADDRESS']);
});

after(async () => {
  client?.disconnect();
  await stopMachined();
  await bus?.stop();
  treeMount?.release();
  rmSync(work, { recursive: true, force: true });
});

test('CreateMachine: registered before the payload runs, with leader, class, service and root', async () => {
  await startMachined();
  const { child, exited } = await startContainer(['-M', 't-nsp-opt-reg1', '--register=yes']);
  try {
    // No polling: the payload only runs after registration succeeded.
    assert.ok((await machineNames()).includes('t-nsp-opt-reg1'));
    const p = await machineProps('t-nsp-opt-reg1');
    assert.equal(p['Class'], 'container');
    assert.equal(p['Service'], 'mctl-nspawn');
    assert.equal(p['RootDirectory'], tree);
    assert.equal(p['Unit'], 'machine-t\\x2dnsp\\x2dopt\\x2dreg1.scope');
    const leader = Number(p['Leader']);
    assert.notEqual(readlinkSync(`/proc/${leader}/ns/pid`), readlinkSync('/proc/self/ns/pid'), 'leader is in the container');
    assert.match(readFileSync(`/proc/${leader}/cmdline`, 'utf8'), /^(sleep|\/bin\/sh)/);
    // The service's TerminateMachine stops the container and the launcher exits.
    await call(client, { ...manager, member: 'TerminateMachine', signature: 's', body: ['t-nsp-opt-reg1'] });
    const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout')]);
    assert.notEqual(code, 'timeout');
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  for (let i = 0; i < 50 && (await machineNames()).includes('t-nsp-opt-reg1'); i++) await sleep(100);
  assert.ok(!(await machineNames()).includes('t-nsp-opt-reg1'), 'gone after exit');
});

test('--keep-unit uses RegisterMachine (the machine adopts our own cgroup)', async () => {
  const { child, exited } = await startContainer(['-M', 't-nsp-opt-reg2', '--keep-unit', '--register=auto']);
  try {
    assert.ok((await machineNames()).includes('t-nsp-opt-reg2'));
    const p = await machineProps('t-nsp-opt-reg2');
    assert.equal(p['Service'], 'mctl-nspawn');
    assert.doesNotMatch(String(p['Unit']), /^machine-t/, 'no machine scope is created under --keep-unit');
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
});

test('--register=no does not register', async () => {
  const { child, exited } = await startContainer(['-M', 't-nsp-opt-reg3', '--register=no']);
  try {
    assert.ok(!(await machineNames()).includes('t-nsp-opt-reg3'));
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
});

test('without a machine service: auto runs unregistered, yes fails with one line and leaves nothing', async () => {
  await stopMachined();
  const mountsBefore = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(work));
  const auto = spawnSync(process.execPath, [NSPAWN, '-q', '--pipe', '-D', tree, '-M', 't-nsp-opt-reg4', '/bin/echo', 'ran'], { env: bus.env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(auto.status, 0, auto.stderr);
  assert.equal(auto.stdout, 'ran\n');
  const yes = spawnSync(process.execPath, [NSPAWN, '-q', '--pipe', '-D', tree, '-M', 't-nsp-opt-reg4', '--register=yes', '/bin/echo', 'ran'], { env: bus.env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(yes.status, 1);
  assert.equal(yes.stdout, '', 'the payload never ran');
  assert.match(yes.stderr, /^mctl-nspawn: failed to register machine 't-nsp-opt-reg4': org\.freedesktop\.machine1 is not on the bus.*\n$/);
  const noBus = spawnSync(process.execPath, [NSPAWN, '-q', '--pipe', '-D', tree, '--register=yes', '/bin/true'], { env: { ...bus.env, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${join(work, 'nosocket')}` }, encoding: 'utf8' });
  assert.equal(noBus.status, 1);
  assert.match(noBus.stderr, /^mctl-nspawn: cannot register machine: no system bus at .*nosocket\n$/);
  assert.equal(spawnSync('pgrep', ['-f', 'mctl-nsexec.*t-nsp-opt-reg4']).status, 1, 'no supervisor left');
  assert.deepEqual(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(work)), mountsBefore);
});

test('SIGKILL of the launcher while it waits for the service: the half-started container goes, nothing is left', async () => {
  await stopMachined();
  // A fake machine1 that takes CreateMachine and never answers: the launcher hangs in its
  // afterNamespaces hook, with the container created but its payload not yet running.
  const fake = connectBus(bus.env['DBUS_SYSTEM_BUS_ADDRESS']);
  let leader = 0;
  const called = new Promise<void>((resolve) => {
    fake.addMethodHandler((msg) => {
      if (msg.member === 'CreateMachineWithNetwork') {
        leader = msg.body[4] as number;
        resolve();
        return true; // handled: no reply, ever
      }
      return false;
    });
  });
  await fake.requestName('org.freedesktop.machine1', 0);
  const mountsBefore = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(work));
  const child = spawn(process.execPath, [NSPAWN, '-q', '--pipe', '-D', tree, '-x', '-M', 't-nsp-opt-hang', '--register=yes', '/bin/sh', '-c', 'echo PAYLOAD-RAN'], { env: bus.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  try {
    await Promise.race([called, sleep(20_000).then(() => { throw new Error('CreateMachine never arrived'); })]);
    assert.ok(leader > 1);
    child.kill('SIGKILL');
    await exited;
    for (let i = 0; i < 50; i++) {
      try {
        process.kill(leader, 0);
      } catch {
        break;
      }
      await sleep(100);
    }
    assert.throws(() => process.kill(leader, 0), /ESRCH/, 'the half-started container is gone');
    assert.equal(out, '', 'the payload never ran');
    assert.deepEqual(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(work)), mountsBefore);
    assert.equal(spawnSync('pgrep', ['-f', 't-nsp-opt-hang']).status, 1, 'no process of it left');
  } finally {
    child.kill('SIGKILL');
    fake.disconnect();
  }
});
