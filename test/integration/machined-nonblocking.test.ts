// mctl-machined never blocks its event loop: reading a raw image's identity files needs the
// image staging lock (a blocking wait) and loop devices, so it runs in a child process; while a
// stuck process holds that lock, every other call is still answered at once. Runs the BUILT
// bin/mctl-machined on a private bus.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { call } from '../../src/dbus/bus.js';
import { ofdLock } from '../../src/sys/libc.js';
import { expectDBusError, MANAGER, setup, type Env } from './machined-harness.js';

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
