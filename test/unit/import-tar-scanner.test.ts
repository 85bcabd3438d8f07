// The tar safety scanner against a crafted corpus: every attack is refused with an error naming
// the entry, good archives pass byte-for-byte, and chunk boundaries do not matter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TarSafetyScanner, TarSafetyError, parseNumber, normaliseMemberPath, type TarEntry } from '../../src/import/tar-scanner.js';
import { archive, member, paxBody, type RawEntry } from '../fixtures/tar/builder.js';

async function scan(data: Buffer, chunkSize = 1 << 16, maxBytes?: number): Promise<{ out: Buffer; entries: TarEntry[] }> {
  const entries: TarEntry[] = [];
  const scanner = new TarSafetyScanner({ onEntry: (e) => entries.push(e), ...(maxBytes === undefined ? {} : { maxBytes }) });
  const parts: Buffer[] = [];
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunkSize) chunks.push(data.subarray(i, i + chunkSize));
  await pipeline(
    Readable.from(chunks, { objectMode: false }),
    scanner,
    new Writable({
      write(c: Buffer, _e, cb) {
        parts.push(c);
        cb();
      },
    }),
  );
  return { out: Buffer.concat(parts), entries };
}

async function refused(entries: RawEntry[] | Buffer, pattern: RegExp, entryName?: string): Promise<void> {
  const data = Buffer.isBuffer(entries) ? entries : archive(entries);
  await assert.rejects(scan(data), (err: unknown) => {
    assert.ok(err instanceof TarSafetyError, `expected TarSafetyError, got ${String(err)}`);
    assert.match(err.message, pattern);
    if (entryName !== undefined) assert.equal(err.entry, entryName);
    assert.equal(err.message.includes('\n'), false, 'one line');
    return true;
  });
}

test('numeric fields: octal with spaces/NUL, base-256, garbage', () => {
  assert.equal(parseNumber(Buffer.from('00000000644\0')), 0o644);
  assert.equal(parseNumber(Buffer.from('  644 \0\0\0\0\0\0')), 0o644);
  const b256 = Buffer.alloc(12);
  b256[0] = 0x80;
  b256.writeUInt32BE(0x12345678, 8);
  assert.equal(parseNumber(b256), 0x12345678);
  assert.equal(parseNumber(Buffer.from('12x4\0')), null);
  assert.equal(parseNumber(Buffer.from([0xff, 0, 0, 0])), null);
});

test('member paths: normalised, traversal and absolute refused', () => {
  assert.equal(normaliseMemberPath('./usr//bin/./ls'), 'usr/bin/ls');
  assert.equal(normaliseMemberPath('./'), '');
  assert.throws(() => normaliseMemberPath('usr/../../etc/passwd'), /contains '\.\.'/);
  assert.throws(() => normaliseMemberPath('/etc/passwd'), /absolute/);
  assert.throws(() => normaliseMemberPath('a'.repeat(5000)), /longer than/);
});

test('a GNU tar archive of a small tree passes unchanged, whatever the chunking', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mctl-import-scan-'));
  try {
    const root = join(dir, 'root');
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    writeFileSync(join(root, 'usr/bin/tool'), 'x'.repeat(1000));
    linkSync(join(root, 'usr/bin/tool'), join(root, 'usr/bin/tool-hard'));
    symlinkSync('/usr/bin/tool', join(root, 'abs-link'));
    symlinkSync('../../etc/x', join(root, 'usr/bin/rel-up'));
    const deep = join(root, 'd'.repeat(90), 'e'.repeat(90), 'f'.repeat(90));
    mkdirSync(deep, { recursive: true });
    writeFileSync(join(deep, 'long-name-' + 'n'.repeat(150)), 'long');
    for (const format of ['gnu', 'posix', 'ustar']) {
      if (format === 'ustar') continue; // the 150-char name does not fit ustar
      const tar = execFileSync('tar', [`--format=${format}`, '-cf', '-', '-C', root, '.'], { maxBuffer: 1 << 26 });
      for (const chunk of [1, 7, 511, 512, 513, 65536]) {
        if (chunk === 1 && format === 'posix') continue; // slow; covered by gnu
        const { out, entries } = await scan(tar, chunk);
        // everything up to the end marker passes unchanged; after it tar had only zero padding
        const n = out.length - 1024;
        assert.ok(out.subarray(0, n).equals(tar.subarray(0, n)), `${format}/${chunk}: bytes pass through`);
        assert.ok(tar.subarray(n).every((b) => b === 0), `${format}/${chunk}: only padding dropped`);
        assert.ok(out.subarray(n).every((b) => b === 0));
        const names = entries.map((e) => e.path);
        assert.ok(names.includes('usr/bin/tool-hard'));
        assert.ok(names.some((n) => n.endsWith('long-name-' + 'n'.repeat(150))), `${format}: long name seen`);
        const hard = entries.find((e) => e.path === 'usr/bin/tool-hard')!;
        assert.equal(hard.type, 'hardlink');
        assert.equal(hard.linkTarget, 'usr/bin/tool');
        assert.equal(entries.find((e) => e.path === 'abs-link')?.linkTarget, '/usr/bin/tool');
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('refuses ../ entries, naming them', async () => {
  await refused([{ name: '../escape', body: 'x' }], /contains '\.\.'/, '../escape');
  await refused([{ name: 'a/../../escape', body: 'x' }], /contains '\.\.'/, 'a/../../escape');
});

test('refuses absolute paths (GNU tar would strip the / silently)', async () => {
  await refused([{ name: '/etc/cron.d/evil', body: 'x' }], /absolute path/, '/etc/cron.d/evil');
});

test('refuses writing through a symlink the archive made', async () => {
  await refused(
    [
      { name: 'evil', type: '2', linkname: '/etc' },
      { name: 'evil/cron.d/pwned', body: 'x' },
    ],
    /written through symlink 'evil'/,
    'evil/cron.d/pwned',
  );
  await refused(
    [
      { name: 'up', type: '2', linkname: '..' },
      { name: 'up/x', body: 'x' },
    ],
    /through symlink 'up'/,
    'up/x',
  );
  // a hard link to the symlink is the same symlink
  await refused(
    [
      { name: 'l', type: '2', linkname: '/etc' },
      { name: 'h', type: '1', linkname: 'l' },
      { name: 'h/passwd', body: 'x' },
    ],
    /through symlink 'h'/,
    'h/passwd',
  );
  // a directory of the same name replacing the symlink first is fine: tar unlinks the link
  await scan(archive([{ name: 'd', type: '2', linkname: '/tmp' }, { name: 'd', type: '5', mode: 0o755 }, { name: 'd/f', body: 'ok' }]));
});

test('refuses hard links out of the tree or through symlinks', async () => {
  await refused([{ name: 'h', type: '1', linkname: '/etc/shadow' }], /absolute hard link target/, '/etc/shadow');
  await refused([{ name: 'h', type: '1', linkname: '../outside' }], /hard link target contains '\.\.'/);
  await refused(
    [
      { name: 'l', type: '2', linkname: '/etc' },
      { name: 'h', type: '1', linkname: 'l/shadow' },
    ],
    /hard link resolved through symlink 'l'/,
    'h',
  );
});

test('refuses oversized and malformed extension headers', async () => {
  await refused([{ name: 'PaxHeader', type: 'x', size: 64 * 1024 * 1024, body: '' }], /exceeds/);
  await refused([{ name: '././@LongLink', type: 'L', size: 2 * 1024 * 1024, body: '' }], /exceeds/);
  await refused([{ name: 'PaxHeader', type: 'x', body: '999 path=x\n' }, { name: 'f', body: 'x' }], /malformed pax/);
  await refused([{ name: 'PaxHeader', type: 'x', body: 'abc\n' }, { name: 'f', body: 'x' }], /malformed pax/);
  await refused([{ name: 'PaxHeader', type: 'g', body: paxBody({ path: 'x' }) }, { name: 'f', body: 'x' }], /global pax header sets 'path'/);
});

test('pax and GNU long names are what gets checked', async () => {
  await refused([{ name: 'PaxHeader', type: 'x', body: paxBody({ path: '../../etc/passwd' }) }, { name: 'innocent', body: 'x' }], /contains '\.\.'/, '../../etc/passwd');
  await refused([{ name: '././@LongLink', type: 'L', body: '/abs/' + 'x'.repeat(200) + '\0' }, { name: 'innocent', body: 'x' }], /absolute path/);
  await refused([{ name: '././@LongLink', type: 'K', body: '/etc/shadow\0' }, { name: 'h', type: '1', linkname: 'innocent' }], /absolute hard link target/);
  const ok = await scan(archive([{ name: 'PaxHeader', type: 'x', body: paxBody({ path: 'dir/' + 'p'.repeat(300) }) }, { name: 'short', body: 'x' }]));
  assert.equal(ok.entries[0]?.path, 'dir/' + 'p'.repeat(300));
});

test('a pax size overrides the header size when skipping bodies (no smuggled header)', async () => {
  // header says 0 bytes, pax says 1024: the "header" hidden in the body must not be parsed
  const hidden = member({ name: '../smuggled', body: 'x' });
  const data = archive([{ name: 'PaxHeader', type: 'x', body: paxBody({ size: String(hidden.length) }) }, { name: 'carrier', size: 0, body: hidden }]);
  // the builder pads body by its real length; the header claims 0 — the scanner follows pax
  const { entries } = await scan(data);
  assert.deepEqual(
    entries.map((e) => e.path),
    ['carrier'],
  );
});

test('refuses bad checksums, unknown types, bodies on links and devices', async () => {
  await refused([{ name: 'f', body: 'x', badChecksum: true }], /bad header checksum/);
  await refused([{ name: 'sparse', type: 'S', body: 'x' }], /old GNU sparse/);
  await refused([{ name: 'vol', type: 'M', body: 'x' }], /multi-volume/);
  await refused([{ name: 'weird', type: 'Z', body: 'x' }], /unsupported entry type 'Z'/);
  await refused([{ name: 's', type: '2', linkname: 't', size: 512, body: Buffer.alloc(512) }], /symlink entry with a 512-byte body/);
  await refused([{ name: '', type: '0', body: 'x' }], /empty path/);
  await refused([{ name: './', type: '2', linkname: '/' }], /archive root/);
  await refused(Buffer.from('this is not a tar archive at all'.repeat(40)), /bad header checksum/);
});

test('refuses an archive that would not fit (declared sizes add up past the free space)', async () => {
  const data = archive([{ name: 'a', body: 'x'.repeat(600) }, { name: 'bomb', body: 'y'.repeat(600) }]);
  await assert.rejects(scan(data, 1 << 16, 1000), (err: unknown) => err instanceof TarSafetyError && err.entry === 'bomb' && /more than the 1000 bytes free/.test(err.message));
  await scan(data, 1 << 16, 2000);
});

test('refuses truncated archives, naming the last entry', async () => {
  const full = archive([{ name: 'a', body: 'x'.repeat(5000) }, { name: 'b', body: 'y'.repeat(5000) }]);
  await refused(full.subarray(0, 700), /truncated/, 'a');
  await refused(archive([{ name: 'a', body: 'x' }], { end: false }), /truncated/, 'a');
  await refused(Buffer.alloc(0), /empty archive/);
});

test('stops at the first zero block: trailing data never reaches tar', async () => {
  const data = Buffer.concat([member({ name: 'a', body: 'x' }), Buffer.alloc(512), member({ name: '../after-lone-zero', body: 'x' }), Buffer.alloc(1024)]);
  const { out, entries } = await scan(data, 100);
  assert.deepEqual(
    entries.map((e) => e.path),
    ['a'],
  );
  assert.equal(out.indexOf(Buffer.from('after-lone-zero')), -1);
});
