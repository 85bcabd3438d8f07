// pull-tar / pull-raw: verify what can be verified before the big download (checksum list,
// its signature, the .nspawn file), then stream the image straight into a hidden work entry
// while hashing it, compare the hash, and only then publish the image under its name.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../common/errors.js';
import { HashingCounter } from './checksums.js';
import { checkUrl, fetchOptional, openUrl } from './http.js';
import { assertLocalName, defaultNameFromUrl, stripImageSuffixes, urlLastComponent, type ImageKind } from './names.js';
import { createProgress, type ProgressObserver } from './progress.js';
import { TransferCanceled, unpackRaw, unpackTar } from './unpack.js';
import { assertDigest, ChecksumSource, siblingUrl, type VerifyMode } from './verify.js';
import { WorkEntry } from './work-entry.js';

export interface PullOptions {
  url: string;
  kind: ImageKind;
  /** Local name; undefined = derived from the URL; "-" = download and verify only. */
  name?: string | undefined;
  verify: VerifyMode;
  force: boolean;
  readOnly: boolean;
  signal: AbortSignal;
  /** Progress bar: undefined = only when stderr is a terminal. */
  progress?: boolean;
  /** Informational lines (what is happening); default: none. */
  log?: (line: string) => void;
  /** Bytes transferred so far (and the total when known), for the transfer's record. */
  onProgress?: ProgressObserver;
}

export interface TransferResult {
  name: string | null;
  path: string | null;
  bytes: number;
  /** SHA-256 of the download when it was computed (verification, download-only). */
  sha256: string | null;
  compression: string;
  decoder: string;
  settings: boolean;
}

/** Download-only transfers still need a work entry name; any URL will do. */
function workNameFor(url: string, kind: ImageKind): string {
  try {
    return defaultNameFromUrl(url, kind);
  } catch {
    return 'download';
  }
}

function canceledOr(err: unknown, signal: AbortSignal): unknown {
  return signal.aborted ? new TransferCanceled() : err;
}

export async function pull(options: PullOptions): Promise<TransferResult> {
  const { url, kind, signal } = options;
  const log = options.log ?? (() => undefined);
  checkUrl(url);
  const downloadOnly = options.name === '-';
  const name = downloadOnly ? workNameFor(url, kind) : options.name === undefined ? defaultNameFromUrl(url, kind) : assertLocalName(options.name);
  const file = urlLastComponent(url);

  const entry = await WorkEntry.create(name, kind === 'tar' ? 'directory' : 'raw', { force: options.force || downloadOnly });
  const progress = createProgress(`Pulling ${file}`, { observer: options.onProgress, ...(options.progress === undefined ? {} : { enabled: options.progress }) });
  try {
    const sums = new ChecksumSource(options.verify, signal);
    const expected = await sums.expectedFor(url);
    if (expected) log(`Expecting SHA-256 ${expected}${options.verify === 'signature' ? ' (signature verified)' : ''}.`);

    // NAME.nspawn beside the image (a 404 is fine); verified like the image itself.
    const settingsUrl = siblingUrl(url, `${stripImageSuffixes(file, kind)}.nspawn`);
    const settings = await fetchOptional(settingsUrl, signal, 1024 * 1024);
    if (settings) {
      assertDigest(urlLastComponent(settingsUrl), await sums.expectedFor(settingsUrl), createHash('sha256').update(settings).digest('hex'));
      if (!downloadOnly && !options.force && existsSync(join(entry.pool, `${name}.nspawn`))) {
        throw new UserError(`settings file ${join(entry.pool, `${name}.nspawn`)} already exists`, { hint: 'use --force to replace it' });
      }
      log(`Settings file ${urlLastComponent(settingsUrl)} found.`);
    }

    const download = await openUrl(url, signal);
    progress.setTotal(download.length);
    const hasher = new HashingCounter((b) => progress.update(b), { hash: expected !== null || downloadOnly });
    const unpack = kind === 'tar' ? unpackTar : unpackRaw;
    const result = await unpack(download.stream, entry.path, { signal, observers: [hasher] });
    const sha256 = hasher.digest();
    if (expected !== null) assertDigest(file, expected, sha256 ?? '');
    if (kind === 'tar' && entry.hoistSingleOsDirectory()) log('Moved the single top-level OS directory up.');
    progress.done();

    if (downloadOnly) {
      await entry.discard();
      return { name: null, path: null, bytes: hasher.bytes, sha256, compression: result.compression, decoder: result.decoder, settings: settings !== null };
    }
    const path = await entry.commit({ force: options.force, readOnly: options.readOnly, settings });
    return { name, path, bytes: hasher.bytes, sha256, compression: result.compression, decoder: result.decoder, settings: settings !== null };
  } catch (err) {
    progress.done();
    await entry.discard();
    throw canceledOr(err, signal);
  }
}
