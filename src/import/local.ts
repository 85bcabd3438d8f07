// import-tar / import-raw / import-fs (from a file, stdin or a directory into the pool) and
// export-tar / export-raw (from the pool to a file or stdout). No verification, as importd.
import { createReadStream, createWriteStream, statSync, type Stats } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { UserError } from '../common/errors.js';
import { getImage, ImageError, lockImage, type ImageInfo, type ImageLock } from '../image/index.js';
import { HashingCounter } from './checksums.js';
import { compressionFromSuffix, createEncoder, type Compression } from './compression.js';
import { assertLocalName, defaultNameFromDirectory, defaultNameFromFile, tempEntryName, type ImageKind } from './names.js';
import { createProgress, type ProgressObserver } from './progress.js';
import { runTool, settle } from './subprocess.js';
import { TransferCanceled, unpackRaw, unpackTar } from './unpack.js';
import type { TransferResult } from './pull.js';
import { WorkEntry } from './work-entry.js';

export interface ImportOptions {
  /** Path, or "-" for standard input. */
  file: string;
  kind: ImageKind;
  name?: string | undefined;
  force: boolean;
  readOnly: boolean;
  signal: AbortSignal;
  progress?: boolean;
  onProgress?: ProgressObserver;
  /** Stream to read instead of FILE "-" (tests); default process.stdin. */
  stdin?: Readable;
}

function statInput(path: string): Stats {
  try {
    return statSync(path);
  } catch (err) {
    throw new UserError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

export async function importImage(options: ImportOptions): Promise<TransferResult> {
  const { file, kind, signal } = options;
  const name = options.name === undefined ? defaultNameFromFile(file, kind) : assertLocalName(options.name);
  let source: Readable;
  let total: number | null = null;
  if (file === '-') {
    source = options.stdin ?? process.stdin;
  } else {
    const st = statInput(file);
    if (st.isDirectory()) throw new UserError(`${file} is a directory`, { hint: 'use import-fs for directories' });
    if (st.isFile()) total = st.size;
    source = createReadStream(file, { highWaterMark: 1 << 20 });
  }
  const entry = await WorkEntry.create(name, kind === 'tar' ? 'directory' : 'raw', { force: options.force });
  const progress = createProgress(`Importing ${file === '-' ? 'stdin' : basename(file)}`, { observer: options.onProgress, ...(options.progress === undefined ? {} : { enabled: options.progress }) });
  progress.setTotal(total);
  try {
    const counter = new HashingCounter((b) => progress.update(b), { hash: false });
    const unpack = kind === 'tar' ? unpackTar : unpackRaw;
    const result = await unpack(source, entry.path, { signal, observers: [counter] });
    if (kind === 'tar') entry.hoistSingleOsDirectory();
    progress.done();
    const path = await entry.commit({ force: options.force, readOnly: options.readOnly });
    return { name, path, bytes: counter.bytes, sha256: counter.digest(), compression: result.compression, decoder: result.decoder, settings: false };
  } catch (err) {
    progress.done();
    source.destroy();
    await entry.discard();
    throw signal.aborted ? new TransferCanceled() : err;
  }
}

export interface ImportFsOptions {
  directory: string;
  name?: string | undefined;
  force: boolean;
  readOnly: boolean;
  signal: AbortSignal;
}

/** import-fs: copy a directory tree (owners, modes, links, devices, xattrs, ACLs; reflinks where possible). */
export async function importDirectory(options: ImportFsOptions): Promise<{ name: string; path: string }> {
  const dir = resolve(options.directory);
  if (!statInput(dir).isDirectory()) throw new UserError(`${options.directory} is not a directory`);
  const name = options.name === undefined ? defaultNameFromDirectory(dir) : assertLocalName(options.name);
  const entry = await WorkEntry.create(name, 'directory', { force: options.force });
  const cp = runTool('cp', ['-a', '--reflink=auto', '--no-target-directory', '--', dir, entry.path], { label: 'copy', stdio: ['ignore', 'ignore', 'pipe'] });
  const onAbort = (): void => cp.kill();
  options.signal.addEventListener('abort', onAbort);
  try {
    await cp.finished;
    const path = await entry.commit({ force: options.force, readOnly: options.readOnly });
    return { name, path };
  } catch (err) {
    cp.kill();
    await cp.finished.catch(() => undefined);
    await entry.discard();
    throw options.signal.aborted ? new TransferCanceled() : err;
  } finally {
    options.signal.removeEventListener('abort', onAbort);
  }
}

export interface ExportOptions {
  name: string;
  kind: ImageKind;
  /** Path, or "-" for standard output. */
  file: string;
  /** Compression; default from FILE's suffix (uncompressed for "-"). */
  format?: Compression | undefined;
  signal: AbortSignal;
  progress?: boolean;
  onProgress?: ProgressObserver;
  /** Stream to write instead of FILE "-" (tests); default process.stdout. */
  stdout?: Writable;
  /** Where a warning line goes (default: stderr as "mctl: LINE"). */
  warn?: (line: string) => void;
}

/** Arguments for GNU tar creating an archive that keeps what an OS tree needs. */
export const TAR_CREATE_ARGS = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--sparse', '-cpf', '-'];

export async function exportImage(options: ExportOptions): Promise<{ bytes: number; compression: Compression }> {
  const { kind, file } = options;
  const image = getImage(options.name);
  if (kind === 'tar' && image.type !== 'directory' && image.type !== 'subvolume') {
    throw new UserError(`image '${options.name}' is a ${image.type} image`, { hint: 'export-tar needs a directory image; use export-raw' });
  }
  if (kind === 'raw' && image.type !== 'raw') {
    throw new UserError(`image '${options.name}' is a ${image.type} image`, { hint: 'export-raw needs a raw image; use export-tar' });
  }
  const compression = options.format ?? (file === '-' ? 'uncompressed' : compressionFromSuffix(file));
  if (file === '-' && !options.stdout && process.stdout.isTTY) throw new UserError('refusing to write an image to a terminal', { hint: 'give a FILE or redirect standard output' });
  const lock = lockForExport(image, options.warn ?? ((line) => process.stderr.write(`mctl: ${line}\n`)));
  try {
    return await writeExport(options, image, compression);
  } finally {
    lock?.release();
  }
}

/**
 * Hold the image lock shared while reading it, as a read-only machine does: remove, rename and
 * --force replacement (exclusive) are refused until the export ends, and other readers are not
 * disturbed. A writable machine running from the image holds it exclusively (and so already
 * blocks those); systemd's exporter takes no lock at all and exports a running machine as it
 * is, so we do too, and say the archive may be inconsistent.
 */
function lockForExport(image: ImageInfo, warn: (line: string) => void): ImageLock | null {
  try {
    return lockImage(image.path, { shared: true, what: `image '${image.name}'` });
  } catch (err) {
    if (!(err instanceof ImageError) || err.kind !== 'busy') throw err;
    warn(`image '${image.name}' is in use by a running machine; exporting it as it is now (the archive may be inconsistent)`);
    return null;
  }
}

async function writeExport(options: ExportOptions, image: ImageInfo, compression: Compression): Promise<{ bytes: number; compression: Compression }> {
  const { kind, file, signal } = options;

  const temp = file === '-' ? null : join(dirname(resolve(file)), tempEntryName(basename(file)));
  const out: Writable = temp ? createWriteStream(temp, { flags: 'wx', mode: 0o644 }) : (options.stdout ?? process.stdout);
  const progress = createProgress(`Exporting ${options.name}`, { observer: options.onProgress, ...(options.progress === undefined ? {} : { enabled: options.progress }) });
  const encoder = createEncoder(compression);
  const producer =
    kind === 'tar'
      ? runTool('tar', [...TAR_CREATE_ARGS, '-C', image.path, '.'], { label: 'tar', stdio: ['ignore', 'pipe', 'pipe'] })
      : null;
  const input: Readable = producer ? producer.child.stdout! : createReadStream(image.path, { highWaterMark: 1 << 20 });
  if (!producer) progress.setTotal(statSync(image.path).size);
  const counter = new HashingCounter((b) => progress.update(b), { hash: false });
  try {
    await pipeline([input, counter, encoder.stream, out], { signal, end: temp !== null || options.stdout !== undefined });
    await Promise.all([encoder.finished, producer?.finished]);
    if (temp) await rename(temp, resolve(file));
    progress.done();
    return { bytes: counter.bytes, compression };
  } catch (err) {
    progress.done();
    // a program that failed on its own explains more than the broken pipe that followed
    const outputClosed = err instanceof Error && (err as NodeJS.ErrnoException).code === 'EPIPE';
    let cause: unknown = outputClosed ? new UserError('output closed before the export was complete') : err;
    for (const p of outputClosed ? [] : [producer?.finished, encoder.finished]) {
      const r = p ? await settle(p, 1000) : 'ok';
      if (r instanceof Error) {
        cause = r;
        break;
      }
    }
    producer?.kill();
    encoder.kill();
    await Promise.allSettled([producer?.finished, encoder.finished]);
    if (temp) await rm(temp, { force: true });
    if (signal.aborted) throw new TransferCanceled();
    throw cause;
  }
}
