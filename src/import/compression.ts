// Compression formats: sniffed from magic bytes on the way in, chosen from the file suffix (or
// --format) on the way out. Decoding prefers the native programs, which measured faster than any
// in-process decoder here (xz -dc ~1.7x the WASM xz-decompress; zstd -dc; see dependencies.md
// §3); gzip uses node:zlib, which beats `gzip -dc`. xz-decompress stays as the fallback when no
// xz binary exists.
import { Duplex, PassThrough, Readable } from 'node:stream';
import { createGunzip, createGzip, constants as zlibConstants } from 'node:zlib';
import { createRequire } from 'node:module';
import { UserError } from '../common/errors.js';
import { findProgram, runTool } from './subprocess.js';

export type Compression = 'uncompressed' | 'xz' | 'gzip' | 'zstd' | 'bzip2';
export const COMPRESSIONS: readonly Compression[] = ['uncompressed', 'xz', 'gzip', 'zstd', 'bzip2'];

/** What the first bytes of a file say it is. `qcow2` is recognised only to be refused clearly. */
export function detectCompression(head: Buffer): Compression | 'qcow2' {
  const starts = (...bytes: number[]): boolean => bytes.every((b, i) => head[i] === b);
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (starts(0x1f, 0x8b)) return 'gzip';
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  if (starts(0x42, 0x5a, 0x68)) return 'bzip2'; // "BZh"
  if (starts(0x51, 0x46, 0x49, 0xfb)) return 'qcow2';
  return 'uncompressed';
}

const SUFFIXES: readonly [string, Compression][] = [
  ['.xz', 'xz'],
  ['.txz', 'xz'],
  ['.gz', 'gzip'],
  ['.tgz', 'gzip'],
  ['.zst', 'zstd'],
  ['.tzst', 'zstd'],
  ['.bz2', 'bzip2'],
  ['.tbz2', 'bzip2'],
  ['.tbz', 'bzip2'],
];

/** Compression implied by a file name (export), or uncompressed. */
export function compressionFromSuffix(file: string): Compression {
  const lower = file.toLowerCase();
  for (const [suffix, kind] of SUFFIXES) if (lower.endsWith(suffix)) return kind;
  return 'uncompressed';
}

/** --format values as machinectl spells them, plus zstd. */
export function parseFormat(value: string): Compression {
  const aliases: Record<string, Compression> = { uncompressed: 'uncompressed', none: 'uncompressed', xz: 'xz', gzip: 'gzip', gz: 'gzip', zstd: 'zstd', zst: 'zstd', bzip2: 'bzip2', bz2: 'bzip2' };
  const kind = aliases[value];
  if (!kind) throw new UserError(`unknown --format '${value}'`, { hint: 'use uncompressed, xz, gzip, zstd or bzip2' });
  return kind;
}

/** A transform stage plus the promise of its process (if any) finishing cleanly. */
export interface Stage {
  stream: Duplex;
  finished: Promise<void>;
  kill(): void;
  /** Which implementation runs, for docs/benchmarks. */
  impl: string;
}

function processStage(program: string, args: string[], label: string): Stage {
  const tool = runTool(program, args, { label });
  const { stdin, stdout } = tool.child;
  if (!stdin || !stdout) throw new Error('pipes missing');
  // EPIPE on stdin after the decoder quit is reported through `finished`, not as a stream error
  stdin.on('error', () => undefined);
  return { stream: Duplex.from({ writable: stdin, readable: stdout }), finished: tool.finished, kill: tool.kill, impl: program };
}

const done: Promise<void> = Promise.resolve();

function xzWasmStage(): Stage {
  // CommonJS webpack bundle: load it through require (a named ESM import throws at run time).
  const { XzReadableStream } = createRequire(import.meta.url)('xz-decompress') as typeof import('xz-decompress');
  const input = new PassThrough();
  const web = new XzReadableStream(Readable.toWeb(input) as ReadableStream<Uint8Array>);
  const output = Readable.fromWeb(web as import('node:stream/web').ReadableStream<Uint8Array>);
  return { stream: Duplex.from({ writable: input, readable: output }), finished: done, kill: () => output.destroy(), impl: 'xz-decompress (WASM)' };
}

/** A decoder for KIND: native program if present, else an in-process one. */
export function createDecoder(kind: Compression, options: { preferWasmXz?: boolean } = {}): Stage {
  switch (kind) {
    case 'uncompressed':
      return { stream: new PassThrough({ highWaterMark: 1 << 20 }), finished: done, kill: () => undefined, impl: 'none' };
    case 'gzip':
      return { stream: createGunzip({ chunkSize: 256 * 1024 }), finished: done, kill: () => undefined, impl: 'node:zlib' };
    case 'xz':
      if (!options.preferWasmXz && findProgram('xz')) return processStage('xz', ['-dc'], 'xz decompression');
      return xzWasmStage();
    case 'zstd':
      if (!findProgram('zstd')) throw new UserError('zstd-compressed input needs the zstd program', { hint: 'install the zstd package' });
      return processStage('zstd', ['-dcq'], 'zstd decompression');
    case 'bzip2':
      if (findProgram('lbzip2')) return processStage('lbzip2', ['-dc'], 'bzip2 decompression');
      if (!findProgram('bzip2')) throw new UserError('bzip2-compressed input needs the bzip2 program', { hint: 'install the bzip2 package' });
      return processStage('bzip2', ['-dc'], 'bzip2 decompression');
  }
}

/** An encoder for KIND (export). Multi-threaded where the program can. */
export function createEncoder(kind: Compression): Stage {
  const need = (p: string): void => {
    if (!findProgram(p)) throw new UserError(`${kind} compression needs the ${p} program`, { hint: `install the ${p} package` });
  };
  switch (kind) {
    case 'uncompressed':
      return { stream: new PassThrough({ highWaterMark: 1 << 20 }), finished: done, kill: () => undefined, impl: 'none' };
    case 'gzip':
      return { stream: createGzip({ level: zlibConstants.Z_DEFAULT_COMPRESSION, chunkSize: 256 * 1024 }), finished: done, kill: () => undefined, impl: 'node:zlib' };
    case 'xz':
      need('xz');
      return processStage('xz', ['-c', '-T0'], 'xz compression');
    case 'zstd':
      need('zstd');
      return processStage('zstd', ['-c', '-q', '-T0'], 'zstd compression');
    case 'bzip2':
      need('bzip2');
      return processStage('bzip2', ['-c'], 'bzip2 compression');
  }
}
