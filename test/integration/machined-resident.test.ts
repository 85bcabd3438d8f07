// mctl-machined as a resident service: it never blocks its event loop (reading a raw image's
// identity files needs the image staging lock, a blocking wait, and loop devices, so it runs in
// a child process; while a stuck process holds that lock every other call is still answered),
// and it runs with the memory-saving V8 flags, re-executing itself once under the same PID.
// Runs the BUILT bin/mctl-machined on a private bus.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { call } from '../../src/dbus/bus.js';
import { ofdLock } from '../../src/sys/native-addon.js';
import { createArgs, expectDBusError, MANAGER, setup, waitFor, type Env } from './machined-harness.js';

const STAGING_LOCK = '/run/mctl/images.lock'; // src/image/mount.ts
let e: Env;
let pool: string;

before(async () => {
  e = await setup();
  pool = e.env['MCTL_POOL'] as string;
  const tree = mkdtempSync('/tmp/mctl-machined-rawtree-');
  try {
    mkdirSync(join(tree, 'etc'));
    writeFileSync(join(tree, 'etc/os-release'), 'ID=rawgap\nPRETTY_NAME="Raw Gap 1"\n');
    writeFileSync(join(tree, 'etc/hostname'), 't-md-raw-host\n');
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, join(pool, 't-md-raw.raw'), '8M'], { stdio: 'ignore' });
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
  writeFileSync(join(pool, 't-md-junk.raw'), Buffer.alloc(1 << 20, 0x5a));
});

after(async () => {
  await e?.close();
});

test('raw image metadata is read off the event loop: a held staging lock does not stall other calls', { timeout: 60_000 }, async () => {
  const first = await e.manager('GetImageOSRelease', 's', ['t-md-raw']);
  assert.equal((first.body[0] as Record<string, string>)['PRETTY_NAME'], 'Raw Gap 1');

  mkdirSync('/run/mctl', { recursive: true });
  const fd = openSync(STAGING_LOCK, fsc.O_CREAT | fsc.O_RDWR, 0o600);
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    closeSync(fd);
  };
  try {
    assert.ok(ofdLock(fd, 'exclusive', true), 'took the staging lock');
    const pending = e.manager('GetImageHostname', 's', ['t-md-raw']);
    await new Promise((r) => setTimeout(r, 300)); // the service is now waiting for the lock
    const t0 = Date.now();
    await call(e.client, { ...MANAGER, member: 'ListMachines', timeoutMs: 3000 });
    await call(e.client, { ...MANAGER, member: 'ListImages', timeoutMs: 3000 });
    assert.ok(Date.now() - t0 < 3000);
    release();
    assert.equal((await pending).body[0], 't-md-raw-host');
  } finally {
    release();
  }
});

test('an unreadable raw image is an error reply, and the service lives on', async () => {
  const msg = await expectDBusError(e.manager('GetImageOSRelease', 's', ['t-md-junk']), 'org.freedesktop.DBus.Error.Failed');
  assert.ok(msg.length > 0);
  await expectDBusError(e.manager('GetImageOSRelease', 's', ['t-md-none']), 'org.freedesktop.machine1.NoSuchImage');
  const list = await e.manager('ListImages');
  assert.ok((list.body[0] as unknown[][]).some((row) => row[0] === 't-md-raw'));
});

function cmdline(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

test('the service runs with its V8 memory flags, under the PID it was started with', async () => {
  const args = cmdline(e.machined.proc.pid as number);
  for (const flag of ['--max-semi-space-size=2', '--v8-pool-size=1', '--optimize-for-size']) assert.ok(args.includes(flag), `${flag} in ${args.join(' ')}`);
  assert.equal(args.filter((a) => a === '--max-semi-space-size=2').length, 1, 'flags given once (no re-exec loop)');
  // MCTL_MACHINED_NODE_FLAGS replaces them; empty means none
  await e.machined.stop();
  e.env['MCTL_MACHINED_NODE_FLAGS'] = '--max-semi-space-size=4';
  try {
    e.machined = await e.startMachined();
    const custom = cmdline(e.machined.proc.pid as number);
    assert.ok(custom.includes('--max-semi-space-size=4') && !custom.includes('--optimize-for-size'), custom.join(' '));
    await e.machined.stop();
    e.env['MCTL_MACHINED_NODE_FLAGS'] = '';
    e.machined = await e.startMachined();
    assert.ok(!cmdline(e.machined.proc.pid as number).some((a) => a.startsWith('--max-semi-space-size')));
    await e.manager('ListMachines');
  } finally {
    delete e.env['MCTL_MACHINED_NODE_FLAGS'];
  }
});

test("ListMachines' reply, marshalled once per change of the machine set, follows every change", async () => {
  const names = async (): Promise<string[]> => ((await e.manager('ListMachines')).body[0] as string[][]).map((r) => r[0] as string).sort();
  assert.deepEqual(await names(), ['.host']);
  assert.deepEqual(await names(), ['.host']); // served from the cache
  const a = e.leader();
  const b = e.leader();
  await e.manager('CreateMachine', 'sayssusa(sv)', createArgs('t-md-cache-a', a.pid as number));
  assert.deepEqual(await names(), ['.host', 't-md-cache-a']);
  await e.manager('CreateMachine', 'sayssusa(sv)', createArgs('t-md-cache-b', b.pid as number));
  const rows = (await e.manager('ListMachines')).body[0] as string[][];
  assert.deepEqual(rows.find((r) => r[0] === 't-md-cache-b'), ['t-md-cache-b', 'container', 'mctl-test', '/org/freedesktop/machine1/machine/t_2dmd_2dcache_2db']);
  await e.manager('TerminateMachine', 's', ['t-md-cache-a']);
  await waitFor(async () => !(await names()).includes('t-md-cache-a'), 10_000, 't-md-cache-a to leave the list');
  assert.deepEqual(await names(), ['.host', 't-md-cache-b']);
  await e.manager('TerminateMachine', 's', ['t-md-cache-b']);
  await waitFor(async () => (await names()).length === 1, 10_000, 'the list to be back to .host');
});
