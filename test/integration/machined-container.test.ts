// mctl-machined against a REAL container: a copy of the Debian test tree booted by stock
// systemd-nspawn (--register=no --keep-unit, run inside a unit-named cgroup as
// systemd-nspawn@.service would be), registered by the test with RegisterMachine. Exercises
// OS release, addresses from the container's netns, PTY/login/shell through the container's
// own systemd, bind mount, copies, root directory, UID shift and termination.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { debianTree } from '../helpers/images.js';
import { call } from '../../src/dbus/bus.js';
import { expectDBusError, MANAGER, recordSignals, setup, waitFor, type Env } from './machined-harness.js';

const NAME = 't-md-ct';

/**
 * Read from a PTY master until `pattern` shows up (or fail after timeoutMs). A master reads EIO
 * while no slave is open, so the test holds one open itself (as a terminal emulator's child would).
 * A `cat` child reads the master: a tty.ReadStream on it, destroyed mid-read, tripped a libuv
 * assertion in this process at exit (uv__finish_close, SIGABRT) in about one run in four.
 */
function readUntil(fd: number, slavePath: string, pattern: RegExp, timeoutMs = 20_000): Promise<string> {
  const slave = openSync(slavePath, constants.O_RDWR | constants.O_NOCTTY);
  const reader = spawn('cat', [], { stdio: [fd, 'pipe', 'ignore'] });
  return new Promise<string>((resolve, reject) => {
    let text = '';
    let settled = false;
    const done = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reader.kill('SIGKILL');
      closeSync(slave);
      closeSync(fd);
      if (err) reject(err);
      else resolve(text);
    };
    const timer = setTimeout(() => done(new Error(`no ${pattern} on the pty within ${timeoutMs} ms; got: ${JSON.stringify(text.slice(-300))}`)), timeoutMs);
    reader.stdout.on('data', (d: Buffer) => {
      text += d.toString();
      if (pattern.test(text)) done();
    });
    // cat ends on EIO (the other side hung up)
    reader.on('close', () => done(pattern.test(text) ? undefined : new Error(`pty closed before ${pattern}: ${JSON.stringify(text.slice(-300))}`)));
  });
}

describe('mctl-machined with a booted systemd container', { timeout: 180_000 }, () => {
  let env: Env;
  let root = '';
  let work = '';
  let nspawn: ChildProcess | undefined;
  let leader = 0;
  const unit = `t-md-ct-${process.pid}.service`;
  const unitDirs = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd'].filter((d) => existsSync(join(d, 'cgroup.procs'))).map((d) => join(d, 'machine.slice', unit));
  let signals: Awaited<ReturnType<typeof recordSignals>>;

  before(async () => {
    env = await setup({ extraEnv: { MCTL_MACHINED_STOP_TIMEOUT_SEC: '15' } });
    signals = await recordSignals(env.client);
    work = mkdtempSync(join(tmpdir(), 'mctl-machined-ct-'));
    root = join(work, 'root');
    mkdirSync(root);
    execFileSync('cp', ['-a', '--reflink=auto', `${debianTree()}/.`, root]);
    for (const d of unitDirs) mkdirSync(d, { recursive: true });
    const procs = unitDirs.map((d) => `echo $$ > '${d}/cgroup.procs'`).join('; ');
    nspawn = spawn('sh', ['-c', `${procs}; exec systemd-nspawn --quiet --register=no --keep-unit --private-network -b -D '${root}' -M ${NAME}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    await waitFor(() => {
      const kids = spawnSync('pgrep', ['-P', String(nspawn!.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
      leader = Number(kids[0] ?? 0);
      return leader > 0 && existsSync(`/proc/${leader}/root/run/dbus/system_bus_socket`);
    }, 60_000, 'container boot (system bus)');
    const state = spawnSync('nsenter', ['-t', String(leader), '-a', 'systemctl', 'is-system-running', '--wait'], { encoding: 'utf8', timeout: 60_000 });
    assert.match(state.stdout, /running|degraded/, `container state: ${state.stdout} ${state.stderr}`);
    const id = readFileSync(join(root, 'etc/machine-id'), 'utf8').trim();
    await env.manager('RegisterMachine', 'sayssus', [NAME, /^[0-9a-f]{32}$/.test(id) ? Buffer.from(id, 'hex') : Buffer.alloc(0), 'systemd-nspawn', 'container', leader, root]);
  });

  after(async () => {
    if (nspawn && nspawn.exitCode === null && nspawn.signalCode === null) {
      const exited = new Promise((r) => nspawn!.once('exit', r));
      nspawn.kill('SIGKILL');
      await exited;
    }
    // Anything left of the container (it was SIGKILLed only if the test failed).
    for (const d of unitDirs) {
      const procs = existsSync(join(d, 'cgroup.procs')) ? spawnSync('find', [d, '-name', 'cgroup.procs', '-exec', 'cat', '{}', ';'], { encoding: 'utf8' }).stdout : '';
      for (const pid of procs.split('\n').filter(Boolean)) spawnSync('kill', ['-9', pid]);
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const d of unitDirs) spawnSync('find', [d, '-depth', '-type', 'd', '-exec', 'rmdir', '{}', ';']);
    await env?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('adopts the unit the container runs in and finds it by any of its PIDs', async () => {
    const path = (await env.manager('GetMachine', 's', [NAME])).body[0] as string;
    const unitProp = await call(env.client, { destination: MANAGER.destination, path, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: ['org.freedesktop.machine1.Machine', 'Unit'] });
    assert.equal((unitProp.body[0] as { value: string }).value, unit);
    // A process deep inside the container (its journald) belongs to the machine too.
    const journald = spawnSync('pgrep', ['-f', 'systemd-journald'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number).find((p) => readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(unit));
    assert.ok(journald, 'no journald in the container');
    assert.equal((await env.manager('GetMachineByPID', 'u', [journald])).body[0], path);
  });

  it('GetMachineOSRelease and GetMachineUIDShift read the container', async () => {
    const os = (await env.manager('GetMachineOSRelease', 's', [NAME])).body[0] as Record<string, string>;
    assert.equal(os['ID'], 'debian');
    assert.equal(os['VERSION_CODENAME'], 'bookworm');
    assert.equal((await env.manager('GetMachineUIDShift', 's', [NAME])).body[0], 0);
  });

  it('GetMachineAddresses reads the container network namespace', async () => {
    execFileSync('nsenter', ['-t', String(leader), '-n', 'sh', '-c', 'ip link add t-md0 type veth peer name t-md1 && ip addr add 192.0.2.7/24 dev t-md0 && ip -6 addr add 2001:db8::7/64 dev t-md0 nodad && ip link set t-md0 up']);
    const addrs = (await env.manager('GetMachineAddresses', 's', [NAME])).body[0] as Array<[number, Buffer]>;
    const text = addrs.map(([f, b]) => `${f}:${Buffer.from(b).toString('hex')}`);
    assert.ok(text.includes('2:c0000207'), JSON.stringify(text));
    assert.ok(text.includes('10:20010db8000000000000000000000007'), JSON.stringify(text));
    assert.ok(!text.includes('2:7f000001'), 'loopback must not be listed');
    const host = (await env.manager('GetMachineAddresses', 's', ['.host'])).body[0] as Array<[number, Buffer]>;
    assert.ok(!host.some(([f, b]) => f === 2 && Buffer.from(b).toString('hex') === 'c0000207'), 'host shows the container address');
  });

  it('OpenMachinePTY allocates the pty in the container devpts', async () => {
    const r = await env.manager('OpenMachinePTY', 's', [NAME]);
    const [fd, path] = r.body as [number, string];
    assert.match(path, /^\/dev\/pts\/\d+$/);
    assert.ok(existsSync(`/proc/${leader}/root${path}`), `${path} does not exist inside the container`);
    closeSync(fd);
  });

  it('OpenMachineLogin starts container-getty@N.service and a login prompt appears', async () => {
    const r = await env.manager('OpenMachineLogin', 's', [NAME]);
    const [fd, path] = r.body as [number, string];
    const n = path.replace('/dev/pts/', '');
    const text = await readUntil(fd, `/proc/${leader}/root${path}`, /login: ?$/m);
    assert.match(text, /login:/);
    // The getty ends (and its unit is unloaded) when we hang up; the container's journal keeps
    // the record that its systemd started it.
    await waitFor(() => {
      const j = spawnSync('nsenter', ['-t', String(leader), '-a', 'journalctl', '-o', 'cat', '-u', `container-getty@${n}.service`], { encoding: 'utf8' });
      return /Started container-getty@/.test(j.stdout);
    }, 10_000, `journal record of container-getty@${n}.service`);
  });

  it('OpenMachineShell runs a command as a transient unit on the pty', async () => {
    const r = await env.manager('OpenMachineShell', 'sssasas', [NAME, 'root', '/bin/sh', ['sh', '-c', 'echo "md-shell:$(id -u):$MD_VAR:$(tty)"; sleep 2'], ['MD_VAR=hello']]);
    const [fd, path] = r.body as [number, string];
    const text = await readUntil(fd, `/proc/${leader}/root${path}`, /md-shell:\d+:hello:\/dev\/pts\/\d+/);
    assert.match(text, new RegExp(`md-shell:0:hello:${path}`));
    await expectDBusError(env.manager('OpenMachineShell', 'sssasas', [NAME, 'root', 'relative', [], []]), 'org.freedesktop.DBus.Error.InvalidArgs');
  });

  it('BindMountMachine mounts a host directory into the running container', async () => {
    const src = join(work, 'bind-src');
    mkdirSync(src);
    writeFileSync(join(src, 'hello'), 'from host\n');
    await env.manager('BindMountMachine', 'sssbb', [NAME, src, '/mnt/t-md-bind', true, true]);
    const seen = spawnSync('nsenter', ['-t', String(leader), '-m', 'cat', '/mnt/t-md-bind/hello'], { encoding: 'utf8' });
    assert.equal(seen.stdout, 'from host\n');
    const write = spawnSync('nsenter', ['-t', String(leader), '-m', 'touch', '/mnt/t-md-bind/x'], { encoding: 'utf8' });
    assert.notEqual(write.status, 0, 'read-only bind mount was writable');
    // Not visible on the host side of the tree: the mount lives in the container's namespace.
    assert.ok(!existsSync(join(root, 'mnt/t-md-bind/hello')));
  });

  it('CopyToMachine / CopyFromMachine copy files, refusing to overwrite without the flag', async () => {
    const src = join(work, 'copy-src');
    writeFileSync(src, 'copy me\n');
    await env.manager('CopyToMachine', 'sss', [NAME, src, '/root/t-md-copied']);
    assert.equal(readFileSync(join(root, 'root/t-md-copied'), 'utf8'), 'copy me\n');
    await expectDBusError(env.manager('CopyToMachine', 'sss', [NAME, src, '/root/t-md-copied']), 'org.freedesktop.DBus.Error.FileExists');
    writeFileSync(src, 'replaced\n');
    await env.manager('CopyToMachineWithFlags', 'ssst', [NAME, src, '/root/t-md-copied', 1n]);
    assert.equal(readFileSync(join(root, 'root/t-md-copied'), 'utf8'), 'replaced\n');
    const dst = join(work, 'os-release-copy');
    await env.manager('CopyFromMachine', 'sss', [NAME, '/etc/os-release', dst]);
    assert.match(readFileSync(dst, 'utf8'), /bookworm/);
    // An absolute symlink inside the container resolves inside it, never on the host.
    execFileSync('ln', ['-sf', '/etc/hostname', join(root, 'root/t-md-link')]);
    writeFileSync(join(root, 'etc/hostname'), 'inside-container\n');
    const dst2 = join(work, 'link-copy');
    await env.manager('CopyFromMachine', 'sss', [NAME, '/root/t-md-link', dst2]);
    assert.equal(readFileSync(dst2, 'utf8'), 'inside-container\n');
  });

  it('OpenMachineRootDirectory hands out the container root', async () => {
    const [fd] = (await env.manager('OpenMachineRootDirectory', 's', [NAME])).body as [number];
    assert.ok(readdirSync(`/proc/self/fd/${fd}/root`).includes('t-md-copied'));
    closeSync(fd);
  });

  it('TerminateMachine stops the container and the machine goes away', async () => {
    const exited = new Promise((r) => nspawn!.once('exit', r));
    const t0 = Date.now();
    await env.manager('TerminateMachine', 's', [NAME]);
    await exited;
    // the launcher in the unit got the signal and halted its container cleanly (no SIGKILL after the 15 s stop timeout)
    assert.equal(nspawn!.exitCode, 0, `systemd-nspawn exited with ${nspawn!.exitCode ?? nspawn!.signalCode}`);
    assert.ok(Date.now() - t0 < 10_000, `the stop took ${Date.now() - t0} ms`);
    await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === NAME), 20_000, 'MachineRemoved');
    await expectDBusError(env.manager('GetMachine', 's', [NAME]), 'org.freedesktop.machine1.NoSuchMachine');
    assert.ok(!existsSync(join(env.stateDir, NAME)));
  });
});
