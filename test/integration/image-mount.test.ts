// Disk images attached and mounted for real (root): the recipe's Debian tree as bare ext4, GPT
// (DPS root), MBR and squashfs images; bad images fail with one line and leave no loop device
// and no mount behind; a mounted image boots under stock systemd-nspawn -D.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { mountImage } from '../../src/image/mount.js';
import { readOSRelease } from '../../src/image/metadata.js';
import { DiskImageError } from '../../src/image/errors.js';
import { rootTypeFor, usrTypeFor, hostDpsArch } from '../../src/image/dps.js';
import { lockImage } from '../../src/image/lock.js';
import { prepareImageRoot } from '../../src/nspawn/image.js';
import { debianImage, copyImage, type RawImageKind, imageResidue, settledResidue, type ImageResidue } from '../helpers/raw-images.js';

const MiB = 1024 * 1024;
let dir = '';

before(() => {
  dir = mkdtempSync('/tmp/mctl-image-');
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const residue = (): ImageResidue => imageResidue(dir);

async function assertClean(before: ImageResidue): Promise<void> {
  assert.deepEqual(await settledResidue(dir, before), before);
}

function disk(name: string, script: string, sizeMiB: number): string {
  const path = join(dir, name);
  closeSync(openSync(path, 'w'));
  truncateSync(path, sizeMiB * MiB);
  execFileSync('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', path], { input: script, stdio: ['pipe', 'ignore', 'pipe'] });
  return path;
}

function writeAt(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, data, 0, data.length, offset);
  closeSync(fd);
}

function ext4Bytes(sizeMiB: number): Buffer {
  const fs = join(dir, `fs-${sizeMiB}-${Date.now()}.ext4`);
  execFileSync('mkfs.ext4', ['-q', '-F', fs, `${sizeMiB}M`], { stdio: 'ignore' });
  const data = readFileSync(fs);
  rmSync(fs);
  return data;
}

const expected: Record<RawImageKind, { layout: string; fstype: string; readOnly: boolean }> = {
  ext4: { layout: 'filesystem', fstype: 'ext4', readOnly: false },
  gpt: { layout: 'gpt', fstype: 'ext4', readOnly: false },
  mbr: { layout: 'mbr', fstype: 'ext4', readOnly: false },
  squashfs: { layout: 'filesystem', fstype: 'squashfs', readOnly: true },
};

for (const kind of ['ext4', 'gpt', 'mbr', 'squashfs'] as const) {
  test(`${kind} image of the Debian tree mounts read-only and leaves nothing behind`, async () => {
    const image = debianImage(kind);
    const clean = residue();
    const m = mountImage(image, { readOnly: true });
    try {
      assert.equal(m.dissected.layout, expected[kind].layout);
      assert.deepEqual(m.mounted.map((p) => [p.designator, p.fstype]), [['root', expected[kind].fstype]]);
      assert.equal(readOSRelease(m.rootDir)['ID'], 'debian');
      const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === m.rootDir);
      assert.ok(line && / ro[ ,]/.test(line), `root mounted read-only: ${line}`);
      const dev = m.mounted[0]?.device ?? '';
      const back = readFileSync(`/sys/block/${dev.replace('/dev/', '')}/loop/backing_file`, 'utf8').trim();
      assert.equal(back, image);
      assert.equal(readFileSync(`/sys/block/${dev.replace('/dev/', '')}/loop/autoclear`, 'utf8').trim(), '1');
    } finally {
      m.release();
    }
    await assertClean(clean);
  });
}

test('GPT partition is its own loop device at the partition offset and size', async () => {
  const image = debianImage('gpt');
  const m = mountImage(image, { readOnly: true });
  try {
    const dev = (m.mounted[0]?.device ?? '').replace('/dev/', '');
    assert.equal(Number(readFileSync(`/sys/block/${dev}/loop/offset`, 'utf8')), MiB);
    assert.equal(Number(readFileSync(`/sys/block/${dev}/loop/sizelimit`, 'utf8')), m.mounted[0]?.size);
  } finally {
    m.release();
  }
});

test('stock systemd-nspawn -D boots the mounted GPT image to running', async () => {
  const image = copyImage(debianImage('gpt'), join(dir, 't-img-stock.raw'));
  const clean = residue();
  const m = mountImage(image);
  const nspawn = spawn('systemd-nspawn', ['-q', '--register=no', '--keep-unit', '-M', 't-img-stock', '-b', '-D', m.rootDir], { stdio: 'ignore' });
  try {
    let state = '';
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && state !== 'running' && state !== 'degraded') {
      await new Promise((r) => setTimeout(r, 200));
      const leader = spawnSync('pgrep', ['-P', String(nspawn.pid)], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
      if (!leader) continue;
      state = spawnSync('nsenter', ['-t', leader, '-m', '-p', '--', 'systemctl', 'is-system-running'], { encoding: 'utf8' }).stdout.trim();
    }
    assert.equal(state, 'running');
  } finally {
    const exited = new Promise((r) => nspawn.once('exit', r));
    nspawn.kill('SIGTERM');
    await exited;
    m.release();
  }
  await assertClean(clean);
});

test('corrupt GPT: one-line error, nothing attached or mounted', async () => {
  const img = disk('corrupt.raw', `label: gpt\nstart=2048, size=16384, type=${rootTypeFor(hostDpsArch())}\n`, 16);
  writeAt(img, 2048 * 512, ext4Bytes(8));
  writeAt(img, 512 + 24, Buffer.from('garbage!'));
  writeAt(img, 16 * MiB - 512 + 24, Buffer.from('garbage!'));
  const clean = residue();
  assert.throws(() => mountImage(img), (e: unknown) => e instanceof DiskImageError && /corrupt GPT/.test(e.message) && !e.message.includes('\n'));
  await assertClean(clean);
});

test('GPT without a root partition: one-line error, nothing left', async () => {
  const img = disk('noroot.raw', `label: gpt\nstart=2048, size=16384, type=933ac7e1-2eb4-4f13-b844-0e14e2aef915\n`, 16);
  writeAt(img, 2048 * 512, ext4Bytes(8));
  const clean = residue();
  assert.throws(() => mountImage(img), /has no root partition/);
  await assertClean(clean);
});

test('truncated image: one-line error, nothing left', async () => {
  const img = copyImage(debianImage('gpt'), join(dir, 'truncated.raw'));
  truncateSync(img, 100 * MiB);
  const clean = residue();
  assert.throws(() => mountImage(img), /image is truncated/);
  await assertClean(clean);
});

test('a partition that fails to mount after the root undoes the root mount and all loops', async () => {
  const arch = hostDpsArch();
  const img = disk('badusr.raw', `label: gpt\nstart=2048, size=16384, type=${rootTypeFor(arch)}\nsize=16384, type=${usrTypeFor(arch)}\n`, 32);
  writeAt(img, 2048 * 512, ext4Bytes(8));
  // usr: an ext4 magic and nothing else, so probing says ext4 and the kernel refuses to mount it.
  const sb = Buffer.alloc(4096);
  sb.writeUInt16LE(0xef53, 1080);
  writeAt(img, 18432 * 512, sb);
  const clean = residue();
  assert.throws(() => mountImage(img), (e: unknown) => e instanceof DiskImageError && /cannot mount usr partition 2 \(ext4\)/.test(e.message));
  await assertClean(clean);
});

test('losetup fallback attaches with autoclear too', async () => {
  const image = debianImage('ext4');
  const clean = residue();
  process.env['MCTL_LOOP_LOSETUP'] = '1';
  try {
    const m = mountImage(image, { readOnly: true });
    try {
      const dev = (m.mounted[0]?.device ?? '').replace('/dev/', '');
      assert.equal(readFileSync(`/sys/block/${dev}/loop/autoclear`, 'utf8').trim(), '1');
      assert.equal(readOSRelease(m.rootDir)['ID'], 'debian');
    } finally {
      m.release();
    }
  } finally {
    delete process.env['MCTL_LOOP_LOSETUP'];
  }
  await assertClean(clean);
});

test('an image locked by a running machine cannot be used for writing', async () => {
  const image = copyImage(debianImage('ext4'), join(dir, 't-img-locked.raw'));
  const held = lockImage(image);
  const clean = residue();
  try {
    assert.throws(() => prepareImageRoot(image, { readOnly: false, ephemeral: false }), /is in use/);
  } finally {
    held.release();
  }
  await assertClean(clean);
  // Free again: it works, and release leaves nothing.
  const root = prepareImageRoot(image, { readOnly: false, ephemeral: false });
  assert.equal(readOSRelease(root.root)['ID'], 'debian');
  root.release();
  await assertClean(clean);
});

test('bare btrfs, xfs and erofs images mount (erofs read-only) and release cleanly', async () => {
  const tree = mkdtempSync(join(dir, 'tree-'));
  execFileSync('mkdir', ['-p', join(tree, 'etc')]);
  execFileSync('sh', ['-c', `echo ID=t-img-fs > ${join(tree, 'etc/os-release')}`]);
  const make: Record<string, (img: string) => void> = {
    btrfs: (img) => {
      truncateSync(img, 128 * MiB);
      execFileSync('mkfs.btrfs', ['-q', '--rootdir', tree, img], { stdio: 'ignore' });
    },
    xfs: (img) => {
      truncateSync(img, 320 * MiB);
      execFileSync('mkfs.xfs', ['-q', img], { stdio: 'ignore' });
    },
    erofs: (img) => execFileSync('mkfs.erofs', ['--quiet', img, tree], { stdio: 'ignore' }),
  };
  const clean = residue();
  for (const [fs, build] of Object.entries(make)) {
    const img = join(dir, `bare.${fs}`);
    closeSync(openSync(img, 'w'));
    build(img);
    if (fs === 'xfs') {
      // mkfs.xfs cannot populate from a tree: write through a writable mount of our own.
      const w = mountImage(img);
      execFileSync('cp', ['-a', `${tree}/.`, w.rootDir]);
      w.release();
    }
    const m = mountImage(img);
    try {
      assert.deepEqual(m.mounted.map((p) => [p.fstype, p.readOnly]), [[fs, fs === 'erofs']]);
      assert.equal(readOSRelease(m.rootDir)['ID'], 't-img-fs');
    } finally {
      m.release();
    }
  }
  await assertClean(clean);
});
