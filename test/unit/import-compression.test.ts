// Compression sniffing and the decoders/encoders (native programs and the WASM xz fallback).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressionFromSuffix, createDecoder, createEncoder, detectCompression, parseFormat, type Compression } from '../../src/import/compression.js';
import { renderProgress } from '../../src/import/progress.js';

// compressible but not trivial: random words
const words = Array.from({ length: 2000 }, () => randomBytes(6).toString('hex'));
const SAMPLE = Buffer.from(Array.from({ length: 60_000 }, (_, i) => words[(i * 7919) % words.length]).join(' '));

async function through(stage: ReturnType<typeof createDecoder>, input: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from([input], { objectMode: false }),
    stage.stream,
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  await stage.finished;
  return Buffer.concat(out);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('magic bytes', () => {
  const cases: [string, number[], string][] = [
    ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'xz'],
    ['gzip', [0x1f, 0x8b, 8], 'gzip'],
    ['zstd', [0x28, 0xb5, 0x2f, 0xfd], 'zstd'],
    ['bzip2', [0x42, 0x5a, 0x68, 0x39], 'bzip2'],
    ['qcow2', [0x51, 0x46, 0x49, 0xfb], 'qcow2'],
    ['tar', [0x2e, 0x2f, 0, 0], 'uncompressed'],
    ['short', [0xfd, 0x37], 'uncompressed'],
  ];
  for (const [what, bytes, want] of cases) assert.equal(detectCompression(Buffer.from(bytes)), want, what);
  for (const [kind, args] of [['xz', ['-c']], ['gzip', ['-c']], ['zstd', ['-c', '-q']], ['bzip2', ['-c']]] as const) {
    const compressed = execFileSync(kind, [...args], { input: SAMPLE.subarray(0, 1000) });
    assert.equal(detectCompression(compressed), kind);
  }
});

test('suffixes and --format', () => {
  assert.equal(compressionFromSuffix('x.tar.xz'), 'xz');
  assert.equal(compressionFromSuffix('x.TGZ'), 'gzip');
  assert.equal(compressionFromSuffix('x.tar.zst'), 'zstd');
  assert.equal(compressionFromSuffix('x.raw.bz2'), 'bzip2');
  assert.equal(compressionFromSuffix('x.tar'), 'uncompressed');
  assert.equal(parseFormat('gz'), 'gzip');
  assert.throws(() => parseFormat('lz4'), /unknown --format/);
});

test('each encoder round-trips through the matching decoder', async () => {
  for (const kind of ['uncompressed', 'gzip', 'xz', 'zstd', 'bzip2'] as Compression[]) {
    const packed = await through(createEncoder(kind), SAMPLE);
    assert.equal(detectCompression(packed), kind === 'uncompressed' ? 'uncompressed' : kind);
    const unpacked = await through(createDecoder(kind), packed);
    assert.equal(sha(unpacked), sha(SAMPLE), kind);
  }
});

test('the WASM xz fallback decodes what xz writes', async () => {
  const packed = execFileSync('xz', ['-c', '-6'], { input: SAMPLE });
  const stage = createDecoder('xz', { preferWasmXz: true });
  assert.match(stage.impl, /WASM/);
  assert.equal(sha(await through(stage, packed)), sha(SAMPLE));
});

test('corrupt xz input fails with the decoder named', async () => {
  const packed = execFileSync('xz', ['-c'], { input: SAMPLE });
  packed[packed.length >> 1] ^= 0xff;
  await assert.rejects(through(createDecoder('xz'), packed), /xz decompression failed.*(corrupt|format)/i);
});

test('progress line: bytes, rate, ETA', () => {
  const line = renderProgress('Pulling x', 50 * 1048576, 100 * 1048576, 5, 100);
  assert.match(line, /\[#+\.+\]/);
  assert.match(line, / 50% 50\.0M\/100\.0M 10\.0M\/s ETA 00:05/);
  assert.match(renderProgress('Pulling x', 1024, null, 1, 80), /1\.0K 1\.0K\/s/);
});
