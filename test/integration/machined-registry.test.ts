// mctl-machined against a private dbus-daemon with real leader processes: create/register,
// list/status, signals, terminate/kill, leader death, name and argument errors, access
// control, introspection against dbus-interfaces/, and stock busctl as a client.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import dbus from 'dbus-next';
import { call } from '../../src/dbus/bus.js';
import { createArgs, expectDBusError, MANAGER, MACHINED_BIN, recordSignals, setup, testScopes, waitFor, type Env } from './machined-harness.js';

const V = dbus.Variant;

function cgroupOf(pid: number): string {
  return readFileSync(`/proc/${pid}/cgroup`, 'utf8');
}

async function machineProps(env: Env, path: string): Promise<Record<string, unknown>> {
  const r = await call(env.client, { destination: MANAGER.destination, path, interface: 'org.freedesktop.DBus.Properties', member: 'GetAll', signature: 's', body: ['org.freedesktop.machine1.Machine'] });
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r.body[0] as Record<string, { value: unknown }>)) out[k] = v.value;
  return out;
}

describe('mctl-machined registry', () => {
  let env: Env;
  let signals: Awaited<ReturnType<typeof recordSignals>>;

  before(async () => {
    env = await setup();
    signals = await recordSignals(env.client);
  });
  after(async () => {
    await env?.close();
  });

  it('--version names the scope backend, bad options fail with one line', () => {
    const v = execFileSync(MACHINED_BIN, ['--version'], { env: env.env, encoding: 'utf8' });
    assert.match(v, /^mctl-machined \d+\.\d+\.\d+\nscope backend: cgroupfs \((hybrid|unified|legacy) layout/);
    const bad = spawnSync(MACHINED_BIN, ['--backend=nope'], { env: env.env, encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
    assert.match(bad.stderr, /unknown backend 'nope'/);
  });

  it('lists .host from the start', async () => {
    const r = await env.manager('ListMachines');
    assert.deepEqual(r.body[0], [['.host', 'host', '', '/org/freedesktop/machine1/machine/_2ehost']]);
  });

  it('CreateMachine puts the leader into machine.slice/machine-NAME.scope and announces it', async () => {
    const p = env.leader();
    const r = await env.manager('CreateMachine', 'sayssusa(sv)', [
      't-md-one',
      Buffer.from('00112233445566778899aabbccddeeff', 'hex'),
      'mctl-test',
      'container',
      p.pid,
      '/srv/one',
      [['Description', new V('s', 'ignored by cgroupfs')]],
    ]);
    assert.equal(r.body[0], '/org/freedesktop/machine1/machine/t_2dmd_2done');
    assert.match(cgroupOf(p.pid!), /^0::\/machine\.slice\/machine-t\\x2dmd\\x2done\.scope$/m);
    const props = await machineProps(env, r.body[0] as string);
    assert.equal(props['Name'], 't-md-one');
    assert.equal((props['Id'] as Buffer).toString('hex'), '00112233445566778899aabbccddeeff');
    assert.equal(props['Unit'], 'machine-t\\x2dmd\\x2done.scope');
    assert.equal(props['Scope'], props['Unit']);
    assert.equal(props['Leader'], p.pid);
    assert.equal(props['Class'], 'container');
    assert.equal(props['Service'], 'mctl-test');
    assert.equal(props['RootDirectory'], '/srv/one');
    assert.equal(props['State'], 'running');
    await waitFor(() => signals.some((s) => s.member === 'MachineNew' && s.name === 't-md-one'), 5000, 'MachineNew');
    // State file in systemd's format, written atomically.
    const state = readFileSync(join(env.stateDir, 't-md-one'), 'utf8');
    assert.match(state, /^NAME=t-md-one$/m);
    assert.match(state, /^LEADER=\d+$/m);
    assert.match(state, /^ID=00112233445566778899aabbccddeeff$/m);
    assert.ok(readdirSync(env.stateDir).includes('unit:machine-t\\x2dmd\\x2done.scope'));
    // Lookups: by name, by leader PID and by another PID in its scope.
    assert.equal((await env.manager('GetMachine', 's', ['t-md-one'])).body[0], r.body[0]);
    assert.equal((await env.manager('GetMachineByPID', 'u', [p.pid])).body[0], r.body[0]);
  });

  it('RegisterMachine adopts the leader where it is, with network interfaces', async () => {
    const p = env.leader();
    const before = cgroupOf(p.pid!);
    const r = await env.manager('RegisterMachineWithNetwork', 'sayssusai', ['t-md-reg', Buffer.alloc(0), 'svc', 'vm', p.pid, '', [3, 7]]);
    assert.equal(cgroupOf(p.pid!), before, 'RegisterMachine must not move the leader');
    const props = await machineProps(env, r.body[0] as string);
    assert.equal(props['Class'], 'vm');
    assert.deepEqual(props['NetworkInterfaces'], [3, 7]);
    const list = (await env.manager('ListMachines')).body[0] as string[][];
    assert.deepEqual(list.map((row) => row[0]).sort(), ['.host', 't-md-one', 't-md-reg']);
  });

  it('rejects bad input with systemd error names', async () => {
    const p = env.leader();
    const INVALID = 'org.freedesktop.DBus.Error.InvalidArgs';
    for (const name of ['a_b', '..', 'x'.repeat(65), '', '-a', 'a..b']) {
      await expectDBusError(env.manager('CreateMachine', 'sayssusa(sv)', createArgs(name, p.pid!)), INVALID);
    }
    await expectDBusError(env.manager('RegisterMachine', 'sayssus', ['t-md-bad', Buffer.alloc(5), '', '', p.pid, '']), INVALID);
    await expectDBusError(env.manager('RegisterMachine', 'sayssus', ['t-md-bad', Buffer.alloc(0), '', 'toaster', p.pid, '']), INVALID);
    await expectDBusError(env.manager('RegisterMachine', 'sayssus', ['t-md-bad', Buffer.alloc(0), '', '', 1, '']), INVALID);
    await expectDBusError(env.manager('RegisterMachine', 'sayssus', ['t-md-bad', Buffer.alloc(0), '', '', p.pid, 'rel/path']), INVALID);
    await expectDBusError(env.manager('RegisterMachine', 'sayssus', ['t-md-bad', Buffer.alloc(0), '', '', 4194000, '']), 'System.Error.ESRCH');
    await expectDBusError(env.manager('CreateMachine', 'sayssusa(sv)', createArgs('t-md-one', p.pid!)), 'org.freedesktop.machine1.MachineExists');
    await expectDBusError(env.manager('GetMachine', 's', ['t-md-nope']), 'org.freedesktop.machine1.NoSuchMachine');
    await expectDBusError(env.manager('TerminateMachine', 's', ['t-md-nope']), 'org.freedesktop.machine1.NoSuchMachine');
    await expectDBusError(env.manager('GetMachineByPID', 'u', [p.pid]), 'org.freedesktop.machine1.NoMachineForPID');
    await expectDBusError(env.manager('GetImage', 's', ['t-md-noimage']), 'org.freedesktop.machine1.NoSuchImage');
    await expectDBusError(env.manager('GetMachine', 'u', [5]), INVALID);
    // Nothing was registered or created by the failures.
    assert.equal(((await env.manager('ListMachines')).body[0] as unknown[]).length, 3);
    assert.deepEqual(testScopes().filter((s) => s.includes('bad')), []);
  });

  it('KillMachine signals the leader; leader death collects the machine and removes its scope', async () => {
    const p = env.leader();
    await env.manager('CreateMachine', 'sayssusa(sv)', createArgs('t-md-kill', p.pid!));
    const scopeDir = '/sys/fs/cgroup/unified/machine.slice/machine-t\\x2dmd\\x2dkill.scope';
    assert.ok(existsSync(scopeDir));
    await expectDBusError(env.manager('KillMachine', 'ssi', ['t-md-kill', 'nobody', 15]), 'org.freedesktop.DBus.Error.InvalidArgs');
    await env.manager('KillMachine', 'ssi', ['t-md-kill', 'leader', 9]);
    await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === 't-md-kill'), 5000, 'MachineRemoved');
    await expectDBusError(env.manager('GetMachine', 's', ['t-md-kill']), 'org.freedesktop.machine1.NoSuchMachine');
    await waitFor(() => !existsSync(scopeDir), 5000, 'scope removal');
    assert.ok(!existsSync(join(env.stateDir, 't-md-kill')));
    assert.ok(!readdirSync(env.stateDir).some((f) => f.includes('kill')));
  });

  it('TerminateMachine stops every process of the scope', async () => {
    const p = env.leader();
    const r = await env.manager('CreateMachine', 'sayssusa(sv)', createArgs('t-md-term', p.pid!));
    // A second process inside the scope: terminate must reach it too.
    const q = env.leader();
    execFileSync('sh', ['-c', `echo ${q.pid} > '/sys/fs/cgroup/unified/machine.slice/machine-t\\x2dmd\\x2dterm.scope/cgroup.procs'; echo ${q.pid} > '/sys/fs/cgroup/systemd/machine.slice/machine-t\\x2dmd\\x2dterm.scope/cgroup.procs'`]);
    assert.equal((await env.manager('GetMachineByPID', 'u', [q.pid])).body[0], r.body[0]);
    const qExit = new Promise((res) => q.once('exit', res));
    await call(env.client, { destination: MANAGER.destination, path: r.body[0] as string, interface: 'org.freedesktop.machine1.Machine', member: 'Terminate' });
    await qExit;
    await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === 't-md-term'), 5000, 'MachineRemoved');
    assert.deepEqual(testScopes().filter((s) => s.includes('term')), []);
  });

  it('UnregisterMachine forgets the machine but leaves its processes alone', async () => {
    const p = env.leader();
    await env.manager('RegisterMachine', 'sayssus', ['t-md-unreg', Buffer.alloc(0), '', '', p.pid, '']);
    await env.manager('UnregisterMachine', 's', ['t-md-unreg']);
    await expectDBusError(env.manager('GetMachine', 's', ['t-md-unreg']), 'org.freedesktop.machine1.NoSuchMachine');
    assert.equal(p.exitCode, null);
    process.kill(p.pid!, 0);
  });

  it('a scope we created and then unregistered is removed once its processes are gone (as systemd collects it)', async () => {
    const p = env.leader();
    await env.manager('CreateMachine', 'sayssusa(sv)', createArgs('t-md-unreg2', p.pid!));
    await env.manager('UnregisterMachine', 's', ['t-md-unreg2']);
    const mine = () => testScopes().filter((s) => s.includes('t\\x2dmd\\x2dunreg2'));
    assert.ok(mine().length > 0, 'the scope stays while its leader lives');
    p.kill('SIGKILL');
    await waitFor(() => mine().length === 0, 5000, 'the emptied scope removed');
  });

  it('serves properties, Peer and an introspection that matches dbus-interfaces/', async () => {
    const pool = await call(env.client, { destination: MANAGER.destination, path: MANAGER.path, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: ['org.freedesktop.machine1.Manager', 'PoolPath'] });
    assert.equal((pool.body[0] as { value: string }).value, env.env['MCTL_POOL']);
    await expectDBusError(
      call(env.client, { destination: MANAGER.destination, path: MANAGER.path, interface: 'org.freedesktop.DBus.Properties', member: 'Set', signature: 'ssv', body: ['org.freedesktop.machine1.Manager', 'PoolPath', new V('s', '/x')] }),
      'org.freedesktop.DBus.Error.PropertyReadOnly',
    );
    await call(env.client, { destination: MANAGER.destination, path: MANAGER.path, interface: 'org.freedesktop.DBus.Peer', member: 'Ping' });
    const introspect = async (path: string): Promise<string> =>
      (await call(env.client, { destination: MANAGER.destination, path, interface: 'org.freedesktop.DBus.Introspectable', member: 'Introspect' })).body[0] as string;
    const extract = (xml: string, iface: string): string => {
      const start = xml.indexOf(` <interface name="${iface}">`);
      assert.ok(start >= 0, `${iface} is not exported`);
      return xml.slice(start, xml.indexOf(' </interface>', start) + ' </interface>'.length);
    };
    const expected = (iface: string): string => extract(readFileSync(new URL(`../../dbus-interfaces/${iface}.xml`, import.meta.url), 'utf8'), iface);
    assert.equal(extract(await introspect(MANAGER.path), 'org.freedesktop.machine1.Manager'), expected('org.freedesktop.machine1.Manager'));
    assert.equal(extract(await introspect('/org/freedesktop/machine1/machine/t_2dmd_2done'), 'org.freedesktop.machine1.Machine'), expected('org.freedesktop.machine1.Machine'));
    // Every *.xml in dbus-interfaces/ must be served somewhere (Image is checked via an image object).
    const files = readdirSync(new URL('../../dbus-interfaces/', import.meta.url)).filter((f) => f.endsWith('.xml'));
    assert.deepEqual(files.sort(), ['org.freedesktop.machine1.Image.xml', 'org.freedesktop.machine1.Machine.xml', 'org.freedesktop.machine1.Manager.xml']);
    execFileSync('mkdir', ['-p', join(env.env['MCTL_POOL'] as string, 't-md-img')]);
    const imgPath = (await env.manager('GetImage', 's', ['t-md-img'])).body[0] as string;
    assert.equal(imgPath, '/org/freedesktop/machine1/image/t_2dmd_2dimg');
    assert.equal(extract(await introspect(imgPath), 'org.freedesktop.machine1.Image'), expected('org.freedesktop.machine1.Image'));
    const images = (await env.manager('ListImages')).body[0] as unknown[][];
    assert.ok(images.some((row) => row[0] === 't-md-img' && row[1] === 'directory' && row[6] === imgPath));
    // Child nodes list the machines.
    assert.match(await introspect('/org/freedesktop/machine1/machine'), /<node name="t_2dmd_2done"\/>/);
  });

  it('…/machine/self and GetMachineByPID(0) resolve to the caller\'s own machine', async () => {
    const scope = 'machine.slice/machine-t\\x2dmd\\x2done.scope';
    const enter = ['unified', 'systemd'].map((h) => `echo $$ > '/sys/fs/cgroup/${h}/${scope}/cgroup.procs'`).join('; ');
    const inside = (cmd: string): string => execFileSync('sh', ['-c', `${enter}; exec ${cmd}`], { env: env.env, encoding: 'utf8' }).trim();
    assert.equal(inside('busctl --system get-property org.freedesktop.machine1 /org/freedesktop/machine1/machine/self org.freedesktop.machine1.Machine Name'), 's "t-md-one"');
    assert.equal(inside('busctl --system call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager GetMachineByPID u 0'), 'o "/org/freedesktop/machine1/machine/t_2dmd_2done"');
    // From outside any machine there is no "self".
    await expectDBusError(
      call(env.client, { destination: MANAGER.destination, path: '/org/freedesktop/machine1/machine/self', interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: ['org.freedesktop.machine1.Machine', 'Name'] }),
      'org.freedesktop.DBus.Error.UnknownObject',
    );
  });

  it('stock busctl talks to it', () => {
    const out = execFileSync('busctl', ['--system', 'call', 'org.freedesktop.machine1', '/org/freedesktop/machine1', 'org.freedesktop.machine1.Manager', 'GetMachine', 's', 't-md-one'], { env: env.env, encoding: 'utf8' });
    assert.equal(out.trim(), 'o "/org/freedesktop/machine1/machine/t_2dmd_2done"');
    const prop = execFileSync('busctl', ['--system', 'get-property', 'org.freedesktop.machine1', '/org/freedesktop/machine1/machine/t_2dmd_2done', 'org.freedesktop.machine1.Machine', 'State'], { env: env.env, encoding: 'utf8' });
    assert.equal(prop.trim(), 's "running"');
    const tree = execFileSync('busctl', ['--system', 'tree', 'org.freedesktop.machine1'], { env: env.env, encoding: 'utf8' });
    assert.match(tree, /\/org\/freedesktop\/machine1\/machine\/t_2dmd_2done/);
  });

  it('unprivileged callers may read but get AccessDenied on mutating calls', () => {
    // The private bus lives in a 0700 temp dir; let uid 65534 reach its socket.
    chmodSync(dirname(env.bus.socketPath), 0o755);
    const busctl = (...args: string[]) =>
      spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', 'busctl', '--system', 'call', 'org.freedesktop.machine1', '/org/freedesktop/machine1', 'org.freedesktop.machine1.Manager', ...args], {
        env: env.env,
        encoding: 'utf8',
      });
    const list = busctl('ListMachines');
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout, /t-md-one/);
    assert.equal(busctl('GetMachine', 's', 't-md-one').status, 0);
    for (const args of [
      ['TerminateMachine', 's', 't-md-one'],
      ['KillMachine', 'ssi', 't-md-one', 'all', '9'],
      ['UnregisterMachine', 's', 't-md-one'],
      ['RegisterMachine', 'sayssus', 't-md-evil', '0', '', '', '0', ''],
      ['OpenMachinePTY', 's', 't-md-one'],
    ]) {
      const r = busctl(...args);
      assert.notEqual(r.status, 0, `${args[0]} succeeded for uid 65534`);
      assert.match(r.stderr, /Access denied/i, `${args[0]}: ${r.stderr}`);
    }
    // Still there and untouched.
    const again = busctl('GetMachine', 's', 't-md-one');
    assert.equal(again.status, 0);
  });
});
