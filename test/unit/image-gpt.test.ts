// GPT/MBR parsing, Discoverable Partitions selection and file-system probing, on disk images
// generated here with sfdisk, mkfs.ext4 and mksquashfs on sparse files (no root needed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeSync, mkdirSync, writeFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32, guidToBytes, guidToString, readPartitionTable, CorruptPartitionTableError } from '../../src/image/gpt.js';
import { discoverPartitions, expectedVarUuid, compareVersions, DPS_TYPE, rootTypeFor, usrTypeFor, GPT_FLAG } from '../../src/image/dps.js';
import { dissectImage, probeFilesystem } from '../../src/image/dissect.js';
import { DiskImageError } from '../../src/image/errors.js';

const ROOT_X64 = rootTypeFor('x64');
const MiB = 1024 * 1024;
let dir = '';
let n = 0;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mctl-image-unit-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A sparse disk image of `sizeMiB` partitioned by an sfdisk script. */
function disk(script: string, sizeMiB = 64): string {
  const path = join(dir, `disk-${n++}.raw`);
  closeSync(openSync(path, 'w'));
  truncateSync(path, sizeMiB * MiB);
  execFileSync('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', path], { input: script, stdio: ['pipe', 'ignore', 'pipe'] });
  return path;
}

/** mkfs.ext4 of a small tree, written into the image at byte `offset`. */
function putExt4(image: string, offset: number, sizeMiB: number, files: Record<string, string> = {}): void {
  const tree = mkdtempSync(join(dir, 'tree-'));
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(tree, p, '..'), { recursive: true });
    writeFileSync(join(tree, p), content);
  }
  const fs = join(dir, `fs-${n++}.ext4`);
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, fs, `${sizeMiB}M`], { stdio: ['ignore', 'ignore', 'pipe'] });
  const data = readFileSync(fs);
  const fd = openSync(image, 'r+');
  writeSync(fd, data, 0, data.length, offset);
  closeSync(fd);
}

function corrupt(path: string, offset: number): void {
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, offset);
  b[0] = (b[0] as number) ^ 0xff;
  writeSync(fd, b, 0, 1, offset);
  closeSync(fd);
}

test('crc32 matches the IEEE check value', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.equal(crc32(Buffer.alloc(0)), 0);
  // Every length around the 8-byte steps, and a GPT-sized array, agree with zlib's.
  const data = Buffer.from(Array.from({ length: 16384 + 7 }, (_v, i) => (i * 131 + (i >> 3)) & 0xff));
  for (const n of [1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 16384, 16391]) assert.equal(crc32(data.subarray(0, n)), zlibCrc32(data.subarray(0, n)), `length ${n}`);
});

test('GUIDs round-trip through their mixed-endian on-disk form', () => {
  const b = guidToBytes(ROOT_X64);
  assert.equal(b.subarray(0, 4).toString('hex'), 'e3bc684f');
  assert.equal(guidToString(b), ROOT_X64);
});

test('GPT with DPS root, home and ESP: types, offsets, labels, discovery', () => {
  const img = disk(
    `label: gpt\n` +
      `start=2048, size=8192, type=${DPS_TYPE.esp}, name="esp"\n` +
      `size=40960, type=${ROOT_X64}, name="root-x86-64"\n` +
      `size=16384, type=${DPS_TYPE.home}, name="home"\n`,
  );
  const table = readPartitionTable(img);
  assert.ok(table);
  assert.equal(table.scheme, 'gpt');
  assert.equal(table.usedBackup, false);
  assert.deepEqual(
    table.partitions.map((p) => [p.number, p.type, p.label, p.offset, p.size]),
    [
      [1, DPS_TYPE.esp, 'esp', 2048 * 512, 8192 * 512],
      [2, ROOT_X64, 'root-x86-64', 10240 * 512, 40960 * 512],
      [3, DPS_TYPE.home, 'home', 51200 * 512, 16384 * 512],
    ],
  );
  const d = discoverPartitions(table, { arch: 'x64' });
  assert.equal(d.partitions.root?.number, 2);
  assert.equal(d.partitions.home?.number, 3);
  assert.equal(d.partitions.esp?.number, 1);
  // The same disk has no root for arm64.
  assert.equal(discoverPartitions(table, { arch: 'arm64' }).partitions.root, undefined);
  // Partition UUIDs agree with sfdisk's own view.
  const dump = execFileSync('sfdisk', ['--dump', img], { encoding: 'utf8' });
  for (const p of table.partitions) assert.match(dump, new RegExp(`uuid=${p.uuid}`, 'i'));
});

test('a damaged primary header falls back to the backup header', () => {
  const img = disk(`label: gpt\nstart=2048, size=4096, type=${ROOT_X64}\n`, 8);
  corrupt(img, 512 + 40); // inside the primary header (first usable LBA): CRC mismatch
  const table = readPartitionTable(img);
  assert.ok(table);
  assert.equal(table.usedBackup, true);
  assert.equal(table.partitions[0]?.type, ROOT_X64);
});

test('a damaged primary entry array falls back to the backup array', () => {
  const img = disk(`label: gpt\nstart=2048, size=4096, type=${ROOT_X64}\n`, 8);
  corrupt(img, 1024 + 10); // first entry in the primary array
  const table = readPartitionTable(img);
  assert.equal(table?.usedBackup, true);
  assert.equal(table?.partitions[0]?.type, ROOT_X64);
});

test('both GPT headers damaged: typed "corrupt GPT" error', () => {
  const img = disk(`label: gpt\nstart=2048, size=4096, type=${ROOT_X64}\n`, 8);
  corrupt(img, 512 + 40);
  corrupt(img, 8 * MiB - 512 + 40);
  assert.throws(() => readPartitionTable(img), (e: unknown) => e instanceof CorruptPartitionTableError && /^corrupt GPT: /.test(e.message));
  assert.throws(() => dissectImage(img), (e: unknown) => e instanceof DiskImageError && !e.message.includes('\n'));
});

test('protective MBR without any GPT header is a corrupt GPT', () => {
  const img = disk(`label: gpt\nstart=2048, size=4096, type=${ROOT_X64}\n`, 8);
  const fd = openSync(img, 'r+');
  writeSync(fd, Buffer.alloc(512), 0, 512, 512); // wipe primary header
  writeSync(fd, Buffer.alloc(512), 0, 512, 8 * MiB - 512); // and the backup
  closeSync(fd);
  assert.throws(() => readPartitionTable(img), /corrupt GPT: /);
});

test('truncated image: partition beyond the end is reported', () => {
  const img = disk(`label: gpt\nstart=2048, size=32768, type=${ROOT_X64}\n`, 32);
  truncateSync(img, 4 * MiB);
  assert.throws(() => dissectImage(img), (e: unknown) => e instanceof DiskImageError && /truncated/.test(e.message));
});

test('tiny and empty files are one-line errors', () => {
  const empty = join(dir, 'empty.raw');
  writeFileSync(empty, '');
  assert.throws(() => dissectImage(empty), /image is empty/);
  const small = join(dir, 'small.raw');
  writeFileSync(small, Buffer.alloc(1000, 7));
  assert.throws(() => dissectImage(small), /truncated/);
  assert.throws(() => dissectImage(join(dir, 'missing.raw')), /cannot open image \(ENOENT\)/);
});

test('GPT without a root partition is refused', () => {
  const img = disk(`label: gpt\nstart=2048, size=4096, type=${DPS_TYPE.home}\nsize=4096, type=${DPS_TYPE.swap}\n`, 8);
  assert.throws(() => dissectImage(img), (e: unknown) => e instanceof DiskImageError && /has no root partition/.test(e.message));
});

test('a /usr-only GPT (usr partition, no root) dissects as usr-only; a usr without a file system is refused', () => {
  const img = disk(`label: gpt\nstart=2048, size=16384, type=${usrTypeFor('x64')}, name="usr-x86-64"\nsize=4096, type=${DPS_TYPE.home}\n`, 16);
  putExt4(img, 2048 * 512, 8, { 'lib/os-release': 'ID=x\n' });
  const d = dissectImage(img, { arch: 'x64' });
  assert.equal(d.usrOnly, true);
  assert.deepEqual(d.partitions.map((p) => [p.designator, p.mountPoint, p.fstype]), [['usr', '/usr', 'ext4']]);
  const empty = disk(`label: gpt\nstart=2048, size=4096, type=${usrTypeFor('x64')}\n`, 8);
  assert.throws(() => dissectImage(empty, { arch: 'x64' }), /usr partition 1 holds no known file system/);
  // With a root partition next to it, usr is an ordinary partition below the root.
  const both = disk(`label: gpt\nstart=2048, size=8192, type=${ROOT_X64}\nsize=8192, type=${usrTypeFor('x64')}\n`, 16);
  putExt4(both, 2048 * 512, 4, { 'etc/os-release': 'ID=x\n' });
  putExt4(both, 10240 * 512, 4, { 'lib/os-release': 'ID=x\n' });
  const b = dissectImage(both, { arch: 'x64' });
  assert.equal(b.usrOnly, false);
  assert.deepEqual(b.partitions.map((p) => p.designator), ['root', 'usr']);
});

test('a single generic Linux partition is the root; two are ambiguous', () => {
  const one = disk(`label: gpt\nstart=2048, size=16384, type=${DPS_TYPE.linuxGeneric}\n`, 16);
  putExt4(one, 2048 * 512, 8, { 'etc/os-release': 'ID=x\n' });
  const d = dissectImage(one, { arch: 'x64' });
  assert.equal(d.layout, 'gpt');
  assert.deepEqual(d.partitions.map((p) => [p.designator, p.number, p.fstype]), [['root', 1, 'ext4']]);
  const two = disk(`label: gpt\nstart=2048, size=4096, type=${DPS_TYPE.linuxGeneric}\nsize=4096, type=${DPS_TYPE.linuxGeneric}\n`, 8);
  assert.throws(() => dissectImage(two, { arch: 'x64' }), /2 generic Linux partitions/);
});

test('root partition without a file system is refused', () => {
  const img = disk(`label: gpt\nstart=2048, size=4096, type=${ROOT_X64}\n`, 8);
  assert.throws(() => dissectImage(img, { arch: 'x64' }), /root partition 1 holds no known file system/);
});

test('MBR disk with one Linux partition', () => {
  const img = disk(`label: dos\nstart=2048, size=16384, type=83, bootable\n`, 16);
  putExt4(img, 2048 * 512, 8);
  const d = dissectImage(img);
  assert.equal(d.layout, 'mbr');
  assert.deepEqual(d.partitions.map((p) => [p.designator, p.offset, p.size, p.fstype]), [['root', 2048 * 512, 16384 * 512, 'ext4']]);
});

test('bare file systems: ext4 and squashfs (read-only)', () => {
  const ext4 = join(dir, 'bare.ext4');
  execFileSync('mkfs.ext4', ['-q', '-F', ext4, '8M'], { stdio: 'ignore' });
  const d = dissectImage(ext4);
  assert.equal(d.layout, 'filesystem');
  assert.deepEqual(d.partitions.map((p) => [p.designator, p.fstype, p.readOnly, p.offset]), [['root', 'ext4', false, 0]]);

  const tree = mkdtempSync(join(dir, 'sq-'));
  writeFileSync(join(tree, 'hello'), 'hi');
  const sq = join(dir, 'bare.squashfs');
  const r = spawnSync('mksquashfs', [tree, sq, '-quiet', '-noappend', '-no-progress'], { stdio: 'ignore' });
  assert.equal(r.status, 0);
  const s = dissectImage(sq);
  assert.deepEqual(s.partitions.map((p) => [p.fstype, p.readOnly]), [['squashfs', true]]);
});

test('random data is neither a partition table nor a file system', () => {
  const junk = join(dir, 'junk.raw');
  writeFileSync(junk, Buffer.alloc(256 * 1024, 0x5a));
  assert.throws(() => dissectImage(junk), /no partition table and no file system/);
});

test('newest root label version wins; no-auto partitions are skipped', () => {
  const img = disk(
    `label: gpt\n` +
      `start=2048, size=4096, type=${ROOT_X64}, name="os_1.9"\n` +
      `size=4096, type=${ROOT_X64}, name="os_1.10"\n` +
      `size=4096, type=${DPS_TYPE.srv}, attrs="GUID:63"\n`,
    16,
  );
  const table = readPartitionTable(img);
  assert.ok(table);
  assert.equal((table.partitions[2]?.flags ?? 0n) & GPT_FLAG.NO_AUTO, GPT_FLAG.NO_AUTO);
  const d = discoverPartitions(table, { arch: 'x64' });
  assert.equal(d.partitions.root?.label, 'os_1.10');
  assert.equal(d.partitions.srv, undefined);
  assert.ok(d.ignored.some((i) => i.number === 3 && /no-auto/.test(i.reason)));
  assert.ok(compareVersions('1.10', '1.9') > 0 && compareVersions('a', 'a') === 0);
});

test('var partition UUID is HMAC-SHA256(machine-id, var type), as systemd-id128 computes it', (t) => {
  const id = readFileSync('/etc/machine-id', 'utf8').trim();
  const r = spawnSync('systemd-id128', ['machine-id', `--app-specific=${DPS_TYPE.var}`], { encoding: 'utf8' });
  if (r.status !== 0 || !/^[0-9a-f]{32}$/.test(id)) {
    t.skip('systemd-id128 or /etc/machine-id unavailable');
    return;
  }
  const got = expectedVarUuid(Buffer.from(id, 'hex')).replace(/-/g, '');
  assert.equal(got, r.stdout.trim());
  // Discovery drops var whose UUID does not match.
  const img = disk(`label: gpt\nstart=2048, size=4096, type=${ROOT_X64}\nsize=4096, type=${DPS_TYPE.var}\n`, 8);
  const table = readPartitionTable(img);
  assert.ok(table);
  assert.equal(discoverPartitions(table, { arch: 'x64', machineId: Buffer.from(id, 'hex') }).partitions.var, undefined);
});

test('superblock probing: xfs, btrfs, erofs, vfat and swap magics at their offsets', () => {
  const at = (size: number, writes: Array<[number, Buffer]>): ((o: number, n: number) => Buffer) => {
    const img = Buffer.alloc(size);
    for (const [o, b] of writes) b.copy(img, o);
    return (o, n) => img.subarray(o, o + n);
  };
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
  };
  const fat = Buffer.alloc(512);
  fat.write('FAT32   ', 82, 'latin1');
  fat[510] = 0x55;
  fat[511] = 0xaa;
  const cases: Array<[string, number, Array<[number, Buffer]>]> = [
    ['xfs', 8192, [[0, Buffer.from('XFSB')]]],
    ['btrfs', 131072, [[65536 + 64, Buffer.from('_BHRfS_M')]]],
    ['erofs', 8192, [[1024, u32(0xe0f5e1e2)]]],
    ['vfat', 8192, [[0, fat]]],
    ['swap', 8192, [[4086, Buffer.from('SWAPSPACE2')]]],
  ];
  for (const [want, size, writes] of cases) assert.equal(probeFilesystem(at(size, writes), 0, size), want, want);
  // A btrfs magic past the end of a small partition does not count.
  assert.equal(probeFilesystem(at(131072, [[65536 + 64, Buffer.from('_BHRfS_M')]]), 0, 65536), undefined);
  // Bare erofs and xfs images dissect as read-only / writable roots.
  const erofs = join(dir, 'bare.erofs');
  const img = Buffer.alloc(8192);
  u32(0xe0f5e1e2).copy(img, 1024);
  writeFileSync(erofs, img);
  assert.deepEqual(dissectImage(erofs).partitions.map((p) => [p.fstype, p.readOnly]), [['erofs', true]]);
});

test('GPT with 4096-byte sectors (built by hand: sfdisk here cannot)', () => {
  const ss = 4096;
  const totalSectors = 2048; // 8 MiB
  const img = Buffer.alloc(totalSectors * ss);
  // Protective MBR.
  img[446 + 4] = 0xee;
  img.writeUInt32LE(1, 446 + 8);
  img.writeUInt32LE(totalSectors - 1, 446 + 12);
  img[510] = 0x55;
  img[511] = 0xaa;
  const entries = Buffer.alloc(128 * 128);
  guidToBytes(ROOT_X64).copy(entries, 0);
  guidToBytes('11111111-2222-3333-4444-555555555555').copy(entries, 16);
  entries.writeBigUInt64LE(256n, 32);
  entries.writeBigUInt64LE(511n, 40);
  Buffer.from('root', 'utf16le').copy(entries, 56);
  const header = (current: bigint, backup: bigint, entriesLba: bigint): Buffer => {
    const h = Buffer.alloc(92);
    h.write('EFI PART', 0, 'latin1');
    h.writeUInt32LE(0x00010000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(current, 24);
    h.writeBigUInt64LE(backup, 32);
    h.writeBigUInt64LE(6n, 40);
    h.writeBigUInt64LE(BigInt(totalSectors - 6), 48);
    guidToBytes('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee').copy(h, 56);
    h.writeBigUInt64LE(entriesLba, 72);
    h.writeUInt32LE(128, 80);
    h.writeUInt32LE(128, 84);
    h.writeUInt32LE(crc32(entries), 88);
    h.writeUInt32LE(crc32(h), 16);
    return h;
  };
  const last = BigInt(totalSectors - 1);
  header(1n, last, 2n).copy(img, ss);
  entries.copy(img, 2 * ss);
  entries.copy(img, (totalSectors - 5) * ss);
  header(last, 1n, BigInt(totalSectors - 5)).copy(img, (totalSectors - 1) * ss);
  const path = join(dir, 'gpt4k.raw');
  writeFileSync(path, img);
  const table = readPartitionTable(path);
  assert.ok(table);
  assert.equal(table.sectorSize, 4096);
  assert.equal(table.diskUuid, 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee');
  assert.deepEqual(table.partitions.map((p) => [p.type, p.uuid, p.label, p.offset, p.size]), [
    [ROOT_X64, '11111111-2222-3333-4444-555555555555', 'root', 256 * ss, 256 * ss],
  ]);
  // Damage the primary header: the backup at the last 4 KiB sector is used.
  img[ss + 30] = (img[ss + 30] as number) ^ 0xff;
  writeFileSync(path, img);
  assert.equal(readPartitionTable(path)?.usedBackup, true);
});
