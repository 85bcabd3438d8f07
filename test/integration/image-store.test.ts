// The image store on a real file system (root): list, clone, rename, remove, read-only, clean
// and metadata over a temporary MCTL_POOL; the .nspawn file follows its image; an image that
// stock systemd-nspawn is running from cannot be removed or renamed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, linkSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import {
  listImages, findImage, getImage, cloneImage, renameImage, removeImage, markImageReadOnly, cleanPool, imageMetadata, setImageLimit,
} from '../../src/image/store.js';
import { ImageError } from '../../src/image/errors.js';
import { debianImage } from '../helpers/raw-images.js';

let pool = '';

before(() => {
  pool = mkdtempSync('/tmp/mctl-image-pool-');
  process.env['MCTL_POOL'] = pool;
});
after(() => {
  delete process.env['MCTL_POOL'];
  spawnSync('chattr', ['-R', '-i', pool], { stdio: 'ignore' });
  rmSync(pool, { recursive: true, force: true });
});

function tree(name: string): string {
  const root = join(pool, name);
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'usr'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), 'ID=t-img\nPRETTY_NAME="Test Image"\n');
  writeFileSync(join(root, 'etc/hostname'), `${name}\n`);
  writeFileSync(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  writeFileSync(join(root, 'etc/machine-info'), 'PRETTY_HOSTNAME="Test box"\nCHASSIS=container\n');
  writeFileSync(join(root, 'usr/file'), 'data');
  linkSync(join(root, 'usr/file'), join(root, 'usr/hardlink'));
  execFileSync('chown', ['1234:4321', join(root, 'usr/file')]);
  execFileSync('setfattr', ['-n', 'user.mctl', '-v', 'kept', join(root, 'usr/file')]);
  return root;
}

function rawFile(name: string, mib = 8): string {
  const p = join(pool, `${name}.raw`);
  writeFileSync(p, 'head');
  truncateSync(p, mib << 20);
  return p;
}

const immutable = (p: string): boolean => /^\S*i\S* /.test(execFileSync('lsattr', ['-d', p], { encoding: 'utf8' }));

test('list: directories, raw images, hidden images, .host; invalid entries skipped', () => {
  tree('t-img-dir');
  rawFile('t-img-raw');
  tree('.t-img-hidden');
  mkdirSync(join(pool, 'not_valid'));
  writeFileSync(join(pool, 'notes.txt'), 'x');
  const images = listImages();
  const byName = new Map(images.map((i) => [i.name, i]));
  assert.deepEqual([...byName.keys()].filter((n) => n.startsWith('t-img') || n.startsWith('.t-img')).sort(), ['.t-img-hidden', 't-img-dir', 't-img-raw']);
  assert.ok(byName.has('.host') && byName.get('.host')?.path === '/');
  assert.ok(!byName.has('not_valid') && !byName.has('notes.txt'));
  const raw = byName.get('t-img-raw');
  assert.equal(raw?.type, 'raw');
  assert.equal(raw?.limit, 8 << 20);
  assert.ok((raw?.usage ?? 0) < 1 << 20, 'sparse usage');
  assert.equal(byName.get('t-img-dir')?.type, 'directory');
  assert.equal(byName.get('.t-img-hidden')?.hidden, true);
  assert.ok((byName.get('t-img-dir')?.crtime ?? 0) > 0 && (byName.get('t-img-dir')?.mtime ?? 0) > 0);
  assert.equal(findImage('t-img-nothing'), undefined);
  assert.throws(() => getImage('t-img-nothing'), (e: unknown) => e instanceof ImageError && e.kind === 'no-such-image');
  assert.throws(() => findImage('bad_name'), (e: unknown) => e instanceof ImageError && e.kind === 'invalid');
});

test('clone of a directory keeps owners, xattrs and hard links; the .nspawn file follows', async () => {
  tree('t-img-src');
  writeFileSync(join(pool, 't-img-src.nspawn'), '[Exec]\nBoot=yes\n');
  const c = await cloneImage('t-img-src', 't-img-copy');
  assert.equal(c.path, join(pool, 't-img-copy'));
  const f = join(c.path, 'usr/file');
  assert.equal(`${statSync(f).uid}:${statSync(f).gid}`, '1234:4321');
  assert.equal(statSync(f).ino, statSync(join(c.path, 'usr/hardlink')).ino);
  assert.match(execFileSync('getfattr', ['-n', 'user.mctl', '--only-values', f], { encoding: 'utf8' }), /kept/);
  assert.equal(readFileSync(join(pool, 't-img-copy.nspawn'), 'utf8'), '[Exec]\nBoot=yes\n');
  assert.ok(!readdirSync(pool).some((e) => e.startsWith('.#')), 'no temporary entries left');
  await assert.rejects(cloneImage('t-img-src', 't-img-copy'), (e: unknown) => e instanceof ImageError && e.kind === 'exists');
  await assert.rejects(cloneImage('t-img-src', 'bad_name'), (e: unknown) => e instanceof ImageError && e.kind === 'invalid');
});

test('read-only clone: directory gets the immutable bit, raw image loses its write bits', async () => {
  tree('t-img-ro-src');
  const d = await cloneImage('t-img-ro-src', 't-img-ro-dir', { readOnly: true });
  assert.equal(d.readOnly, true);
  assert.ok(immutable(d.path));
  rawFile('t-img-ro-raw-src');
  const r = await cloneImage('t-img-ro-raw-src', 't-img-ro-raw', { readOnly: true });
  assert.equal(r.readOnly, true);
  assert.equal(statSync(r.path).mode & 0o222, 0);
  assert.ok(statSync(r.path).blocks * 512 < 1 << 20, 'clone stays sparse');
  // Back to writable.
  assert.equal((await markImageReadOnly('t-img-ro-dir', false)).readOnly, false);
  assert.ok(!immutable(d.path));
  assert.equal((await markImageReadOnly('t-img-ro-raw', false)).readOnly, false);
  assert.equal((await markImageReadOnly('t-img-ro-raw', true)).readOnly, true);
});

test('rename moves the image and its .nspawn file, keeps the immutable bit, refuses existing names', async () => {
  tree('t-img-old');
  writeFileSync(join(pool, 't-img-old.nspawn'), '[Exec]\n');
  await markImageReadOnly('t-img-old', true);
  const n = await renameImage('t-img-old', 't-img-new');
  assert.equal(n.path, join(pool, 't-img-new'));
  assert.ok(!existsSync(join(pool, 't-img-old')) && !existsSync(join(pool, 't-img-old.nspawn')));
  assert.ok(existsSync(join(pool, 't-img-new.nspawn')));
  assert.ok(immutable(n.path));
  rawFile('t-img-taken');
  await assert.rejects(renameImage('t-img-new', 't-img-taken'), (e: unknown) => e instanceof ImageError && e.kind === 'exists');
  rawFile('t-img-r1');
  writeFileSync(join(pool, 't-img-r1.roothash'), 'abc');
  await renameImage('t-img-r1', 't-img-r2');
  assert.ok(existsSync(join(pool, 't-img-r2.raw')) && existsSync(join(pool, 't-img-r2.roothash')));
});

test('remove deletes the image and its .nspawn file, also when read-only', async () => {
  tree('t-img-gone');
  writeFileSync(join(pool, 't-img-gone.nspawn'), '[Exec]\n');
  await markImageReadOnly('t-img-gone', true);
  await removeImage('t-img-gone');
  assert.ok(!existsSync(join(pool, 't-img-gone')) && !existsSync(join(pool, 't-img-gone.nspawn')));
  await assert.rejects(removeImage('t-img-gone'), (e: unknown) => e instanceof ImageError && e.kind === 'no-such-image');
  await assert.rejects(removeImage('.host'), (e: unknown) => e instanceof ImageError && e.kind === 'read-only');
});

test('an image stock systemd-nspawn runs from cannot be removed or renamed', async () => {
  const root = tree('t-img-busy');
  // Borrow the host's /usr so the payload exists; the image itself is what gets locked.
  for (const l of ['bin', 'lib', 'lib64']) if (existsSync(`/${l}`)) symlinkSync(`usr/${l}`, join(root, l));
  const nspawn = spawn('systemd-nspawn', ['-q', '--register=no', '--keep-unit', '-M', 't-img-busy', '--bind-ro=/usr', '-D', root, '/bin/sleep', '30'], { stdio: 'ignore' });
  const exited = new Promise((r) => nspawn.once('exit', r));
  try {
    const deadline = Date.now() + 5000;
    while (!existsSync(join(pool, '.#t-img-busy.lck')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(nspawn.exitCode, null, 'stock systemd-nspawn is running from the image');
    await assert.rejects(removeImage('t-img-busy'), /is in use/);
    await assert.rejects(renameImage('t-img-busy', 't-img-busy2'), /is in use/);
    assert.ok(existsSync(root));
  } finally {
    // SIGTERM: nspawn kills its payload, waits for it and releases its locks before exiting.
    nspawn.kill('SIGTERM');
    await exited;
  }
  // Once it is gone, the image can be removed.
  await removeImage('t-img-busy');
});

test('clean removes hidden images only (mode hidden), everything writable (mode all)', async () => {
  tree('.t-img-h1');
  rawFile('.t-img-h2');
  tree('t-img-keep');
  tree('t-img-keep-ro');
  await markImageReadOnly('t-img-keep-ro', true);
  const hidden = await cleanPool('hidden');
  assert.deepEqual(hidden.map((c) => c.name).filter((n) => /^\.t-img-h\d$/.test(n)).sort(), ['.t-img-h1', '.t-img-h2']);
  assert.ok(existsSync(join(pool, 't-img-keep')));
  const all = await cleanPool('all');
  assert.ok(all.some((c) => c.name === 't-img-keep'));
  assert.ok(!all.some((c) => c.name === 't-img-keep-ro'), 'read-only images are kept');
  assert.ok(existsSync(join(pool, 't-img-keep-ro')));
});

test('metadata of a directory image and of a GPT raw image (mounted read-only for the read)', async () => {
  tree('t-img-meta');
  const m = await imageMetadata('t-img-meta');
  assert.equal(m.hostname, 't-img-meta');
  assert.equal(m.machineId.toString('hex'), '0123456789abcdef0123456789abcdef');
  assert.equal(m.machineInfo['PRETTY_HOSTNAME'], 'Test box');
  assert.equal(m.osRelease['PRETTY_NAME'], 'Test Image');
  symlinkSync(debianImage('gpt'), join(pool, 't-img-debian.raw'));
  assert.equal(getImage('t-img-debian').type, 'raw');
  const d = await imageMetadata('t-img-debian');
  assert.equal(d.osRelease['ID'], 'debian');
  assert.equal(d.hostname, 'debian');
  assert.equal(d.machineId.length, 0, 'the recipe leaves machine-id empty');
  assert.ok(lstatSync(join(pool, 't-img-debian.raw')).isSymbolicLink());
  assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes('/run/mctl/images'), 'nothing stays mounted');
});

test('size limits need a btrfs subvolume', async () => {
  tree('t-img-limit');
  await assert.rejects(setImageLimit('t-img-limit', 1n << 30n), (e: unknown) => e instanceof ImageError && e.kind === 'not-supported');
});

test('btrfs pool: subvolumes are listed as such, cloned by snapshot, flagged read-only, limited by quota', async () => {
  const fsFile = join(pool, '.btrfs-backing');
  const mnt = mkdtempSync('/tmp/mctl-image-btrfs-');
  writeFileSync(fsFile, '');
  truncateSync(fsFile, 256 << 20);
  execFileSync('mkfs.btrfs', ['-q', fsFile], { stdio: 'ignore' });
  execFileSync('mount', ['-o', 'loop', fsFile, mnt]);
  const saved = process.env['MCTL_POOL'];
  process.env['MCTL_POOL'] = mnt;
  try {
    execFileSync('btrfs', ['-q', 'subvolume', 'create', join(mnt, 't-img-sv')]);
    writeFileSync(join(mnt, 't-img-sv/file'), 'x');
    writeFileSync(join(mnt, 't-img-sv.nspawn'), '[Exec]\n');
    assert.equal(getImage('t-img-sv').type, 'subvolume');
    const c = await cloneImage('t-img-sv', 't-img-snap');
    assert.equal(c.type, 'subvolume', 'the clone is a snapshot, not a copied directory');
    assert.equal(readFileSync(join(c.path, 'file'), 'utf8'), 'x');
    assert.ok(existsSync(join(mnt, 't-img-snap.nspawn')));
    assert.equal((await markImageReadOnly('t-img-snap', true)).readOnly, true);
    assert.match(execFileSync('btrfs', ['property', 'get', c.path, 'ro'], { encoding: 'utf8' }), /ro=true/);
    const ro = await cloneImage('t-img-sv', 't-img-snap-ro', { readOnly: true });
    assert.equal(ro.readOnly, true);
    execFileSync('btrfs', ['quota', 'enable', mnt]);
    await setImageLimit('t-img-sv', 64n << 20n);
    assert.match(execFileSync('btrfs', ['qgroup', 'show', '-r', '--raw', mnt], { encoding: 'utf8' }), /67108864/);
    await removeImage('t-img-snap');
    await removeImage('t-img-snap-ro');
    assert.ok(!existsSync(c.path) && !existsSync(ro.path));
  } finally {
    process.env['MCTL_POOL'] = saved;
    spawnSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});
