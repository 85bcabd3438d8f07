// Streaming unpack of a (compressed) tar or raw image: source → [sniff] → decoder → safety
// scanner → GNU tar (own network namespace), or → sparse file. The caller owns the target
// directory/file and removes it on failure; this module makes sure every process it started
// has exited before it returns or throws, so nothing is still writing when that happens.
import { statfsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Writable, type Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { UserError } from '../common/errors.js';
import { createDecoder, detectCompression, type Compression, type Stage } from './compression.js';
import { findProgram, runTool, settle, type Tool } from './subprocess.js';
import { TarSafetyError, TarSafetyScanner } from './tar-scanner.js';

export class TransferCanceled extends UserError {
  constructor() {
    super('transfer canceled', { exitCode: 130 });
  }
}

/**
 * Read at least N bytes (or all there is) and put them back (unshift), so the stream is handed
 * on untouched: no extra stage per chunk for the rest of a multi-hundred-megabyte transfer.
 */
export async function peek(source: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const chunks: Buffer[] = [];
  let length = 0;
  while (length < n) {
    const chunk = source.read() as Buffer | null;
    if (chunk !== null) {
      chunks.push(chunk);
      length += chunk.length;
      continue;
    }
    if (source.readableEnded || source.destroyed) break;
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        source.off('readable', done);
        source.off('end', done);
        source.off('error', fail);
        resolve();
      };
      const fail = (err: Error): void => {
        source.off('readable', done);
        source.off('end', done);
        reject(err);
      };
      source.once('readable', done);
      source.once('end', done);
      source.once('error', fail);
    });
  }
  const head = Buffer.concat(chunks);
  if (head.length > 0) source.unshift(head);
  return { head, stream: source };
}

/** Arguments GNU tar gets: keep everything an OS tree needs, as importd does (plus ACLs). */
export const TAR_EXTRACT_ARGS = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '-xpf', '-'];

function spawnTar(dir: string): Tool {
  const args = [...TAR_EXTRACT_ARGS, '-C', dir];
  // Like importd: tar gets no network (it has no business there); needs root, which pulls have.
  if (process.getuid?.() === 0 && findProgram('unshare')) return runTool('unshare', ['--net', '--', 'tar', ...args], { label: 'tar' });
  return runTool('tar', args, { label: 'tar' });
}

function isTruncation(err: unknown): boolean {
  return err instanceof TarSafetyError && /truncated|empty archive/.test(err.message);
}

export interface UnpackOptions {
  signal: AbortSignal;
  /** Stages that see the raw (compressed) bytes first: hashing, progress. */
  observers?: Duplex[];
  preferWasmXz?: boolean;
}

export interface UnpackResult {
  compression: Compression;
  decoder: string;
  entries: number;
}

/** The error a user should see, given which stage failed first. */
async function explain(err: unknown, signal: AbortSignal, decoder: Stage, sink: Tool | null): Promise<Error | null> {
  if (signal.aborted) return new TransferCanceled();
  if (err instanceof TarSafetyError && !isTruncation(err)) return err;
  if (err instanceof UserError && !(err instanceof TarSafetyError)) return err; // download lost, …
  const dec = await settle(decoder.finished, 2000);
  if (dec instanceof Error) return dec; // corrupt/truncated compressed data explains the rest
  if (err instanceof TarSafetyError) return err; // truncation: tar's "Unexpected EOF" follows from it
  if (sink) {
    const t = await settle(sink.finished, 2000);
    if (t instanceof Error) return t;
  }
  if (err instanceof UserError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE') return null; // benign once the sink succeeded
  const msg = err instanceof Error ? err.message : String(err);
  return new UserError(`${decoder.impl === 'none' ? 'reading the archive' : `decompression (${decoder.impl})`} failed: ${msg.split('\n')[0]}`);
}

async function killAll(decoder: Stage, sink: Tool | null): Promise<void> {
  decoder.kill();
  sink?.kill();
  await Promise.all([settle(decoder.finished, 5000), sink ? settle(sink.finished, 5000) : Promise.resolve()]);
}

/** Free space for DIR's file system (what an archive may unpack to), or no limit if unknown. */
function freeBytes(dir: string): number {
  try {
    const st = statfsSync(dir);
    return st.bavail * st.bsize;
  } catch {
    return Number.MAX_SAFE_INTEGER;
  }
}

/** Unpack a tar stream (any supported compression) into DIR, which must exist and be empty. */
export async function unpackTar(source: Readable, dir: string, options: UnpackOptions): Promise<UnpackResult> {
  if (options.signal.aborted) throw new TransferCanceled();
  const { head, stream } = await peek(source, 6);
  const compression = detectCompression(head);
  if (compression === 'qcow2') {
    stream.destroy();
    throw new UserError('this is a qcow2 disk image, not a tar archive', { hint: 'use pull-raw/import-raw' });
  }
  const decoder = createDecoder(compression, { preferWasmXz: options.preferWasmXz ?? false });
  const tar = spawnTar(dir);
  const scanner = new TarSafetyScanner({ maxBytes: freeBytes(dir) });
  const stdin = tar.child.stdin!;
  try {
    await pipeline([stream, ...(options.observers ?? []), decoder.stream, scanner, stdin], { signal: options.signal });
    await Promise.all([decoder.finished, tar.finished]);
  } catch (err) {
    const cause = await explain(err, options.signal, decoder, tar);
    await killAll(decoder, tar);
    if (cause) throw cause;
    if (!scanner.summary.complete) throw new TarSafetyError('archive is truncated');
  }
  return { compression, decoder: decoder.impl, entries: scanner.summary.entries };
}

/** Writes a stream into a file, leaving holes for all-zero 64 KiB blocks (raw disk images). */
class SparseFileWriter extends Writable {
  private position = 0;
  private readonly fd: Promise<import('node:fs/promises').FileHandle>;
  constructor(path: string) {
    super({ highWaterMark: 1 << 20 });
    this.fd = open(path, 'wx', 0o644);
    this.fd.catch(() => undefined);
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    void this.writeChunk(chunk).then(() => done(), done);
  }
  private async writeChunk(chunk: Buffer): Promise<void> {
    const fh = await this.fd;
    const BLOCK = 65536;
    let start = 0;
    while (start < chunk.length) {
      const end = Math.min(start + BLOCK, chunk.length);
      const slice = chunk.subarray(start, end);
      if (!isAllZero(slice)) await fh.write(slice, 0, slice.length, this.position + start);
      start = end;
    }
    this.position += chunk.length;
  }
  override _final(done: (err?: Error | null) => void): void {
    void (async () => {
      const fh = await this.fd;
      await fh.truncate(this.position); // materialise a trailing hole
      await fh.sync();
      await fh.close();
    })().then(() => done(), done);
  }
  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.fd.then((fh) => fh.close()).then(
      () => done(err),
      () => done(err),
    );
  }
}

const ZEROS = Buffer.alloc(65536);
function isAllZero(buf: Buffer): boolean {
  return buf.equals(ZEROS.subarray(0, buf.length)); // memcmp, not a JS loop
}

/** Decode a (compressed) raw disk image into FILE (created, must not exist). */
export async function unpackRaw(source: Readable, file: string, options: UnpackOptions): Promise<UnpackResult> {
  if (options.signal.aborted) throw new TransferCanceled();
  const { head, stream } = await peek(source, 6);
  const compression = detectCompression(head);
  if (compression === 'qcow2') {
    stream.destroy();
    throw new UserError('qcow2 images are not supported', { hint: 'convert it first: qemu-img convert -O raw IN OUT' });
  }
  const decoder = createDecoder(compression, { preferWasmXz: options.preferWasmXz ?? false });
  const writer = new SparseFileWriter(file);
  try {
    await pipeline([stream, ...(options.observers ?? []), decoder.stream, writer], { signal: options.signal });
    await decoder.finished;
  } catch (err) {
    const cause = await explain(err, options.signal, decoder, null);
    await killAll(decoder, null);
    throw cause ?? err;
  }
  return { compression, decoder: decoder.impl, entries: 1 };
}
