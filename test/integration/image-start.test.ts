// `mctl start NAME` where the pool holds NAME.raw (a GPT disk image), on a host without systemd:
// the detached launcher must boot the image with --image (not try it as a --directory), register
// with mctl-machined, and leave no loop device or mount behind once it is terminated.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startService, mctl, launcherPids, type Service } from './cli-container.js';
import { debianImage, copyImage, imageResidue, type ImageResidue } from '../helpers/raw-images.js';

const NAME = 't-img-start';
let svc: Service;
let clean: ImageResidue;

before(async () => {
  svc = await startService();
  clean = imageResidue(svc.pool);
  copyImage(debianImage('gpt'), join(svc.pool, `${NAME}.raw`));
}, { timeout: 600_000 });

after(async () => {
  mctl(svc, ['terminate', NAME]);
  for (let i = 0; i < 100 && launcherPids(NAME).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  await svc?.stop();
  rmSync(`/run/mctl/log/${NAME}.log`, { force: true });
});

test('start NAME boots NAME.raw with --image, detached, to a registered running machine', () => {
  const r = mctl(svc, ['start', NAME], { timeoutMs: 150_000 });
  assert.equal(r.status, 0, r.stderr);
  const cmdline = readFileSync(`/proc/${launcherPids(NAME)[0]}/cmdline`, 'utf8').split('\0');
  assert.ok(cmdline.includes(`--image=${join(svc.pool, `${NAME}.raw`)}`), cmdline.join(' '));
  assert.ok(!cmdline.some((a) => a.startsWith('--directory')), cmdline.join(' '));
  const state = mctl(svc, ['shell', NAME, '/bin/systemctl', 'is-system-running']);
  assert.equal(state.stdout, 'running\n', state.stderr);
  // The root is the image's partition, through its own loop device.
  const root = mctl(svc, ['shell', NAME, '/bin/findmnt', '-n', '-o', 'SOURCE,FSTYPE', '/']);
  assert.match(root.stdout, /^\/dev\/loop\d+ +ext4\s*$/);
});

test('terminate: the machine goes, and with it every loop device and mount of the image', async () => {
  const r = mctl(svc, ['terminate', NAME]);
  assert.equal(r.status, 0, r.stderr);
  const deadline = Date.now() + 20_000;
  while (launcherPids(NAME).length > 0 || JSON.stringify(imageResidue(svc.pool)) !== JSON.stringify(clean)) {
    assert.ok(Date.now() < deadline, `left after terminate: ${JSON.stringify({ launchers: launcherPids(NAME), ...imageResidue(svc.pool) })}`);
    await new Promise((res) => setTimeout(res, 100));
  }
});
