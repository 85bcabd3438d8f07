// Downloads over http(s) and file://: a stream that either delivers every byte the server
// promised or fails with one line saying what happened (status, lost connection, short body).
import { createReadStream, readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { PassThrough, type Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { UserError } from '../common/errors.js';
import { packageVersion } from '../common/version.js';

export interface Download {
  url: string;
  stream: Readable;
  /** Content-Length when the server sent one. */
  length: number | null;
}

export class HttpStatusError extends UserError {
  readonly status: number;
  constructor(url: string, status: number, text: string) {
    super(`download of ${url} failed: HTTP ${status}${text ? ` ${text}` : ''}`);
    this.status = status;
  }
}

export function checkUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UserError(`invalid URL '${url}'`);
  }
  if (!['http:', 'https:', 'file:'].includes(parsed.protocol)) throw new UserError(`unsupported URL '${url}'`, { hint: 'use http://, https:// or file://' });
  return parsed;
}

let extraCa: string[] | undefined | null = null;

/**
 * The CA certificates HTTPS trusts beyond Node's built-in store. Node parses NODE_EXTRA_CA_CERTS
 * at every start (≈30 ms for a distribution bundle), so bin/mctl hands the variable over as
 * MCTL_EXTRA_CA_CERTS and it is read here, only when a transfer really uses HTTPS.
 */
function httpsCa(): string[] | undefined {
  if (extraCa !== null) return extraCa;
  extraCa = undefined;
  const file = process.env['MCTL_EXTRA_CA_CERTS'];
  if (file && !process.env['NODE_EXTRA_CA_CERTS']) {
    try {
      extraCa = [...rootCertificates, readFileSync(file, 'utf8')];
    } catch (err) {
      // As Node does with a bad NODE_EXTRA_CA_CERTS: warn and go on with the built-in store.
      process.stderr.write(`mctl: warning: ignoring extra CA certificates in ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}\n`);
    }
  }
  return extraCa;
}

function request(url: URL, signal: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const headers = { 'user-agent': `mctl/${packageVersion()}`, 'accept-encoding': 'identity' };
    const req = url.protocol === 'https:' ? httpsGet(url, { signal, headers, ca: httpsCa() }, resolve) : httpGet(url, { signal, headers }, resolve);
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (signal.aborted) return reject(signal.reason);
      reject(new UserError(`cannot fetch ${url.href}: ${e.code ?? e.message}`));
    });
  });
}

/** Open URL for reading, following redirects; HTTP errors throw HttpStatusError. */
export async function openUrl(url: string, signal: AbortSignal): Promise<Download> {
  let current = checkUrl(url);
  if (current.protocol === 'file:') {
    const path = fileURLToPath(current);
    const st = await stat(path).catch(() => null);
    if (!st || !st.isFile()) throw new HttpStatusError(url, 404, 'Not Found');
    return { url, stream: createReadStream(path, { highWaterMark: 1 << 20, signal }), length: st.size };
  }
  for (let hop = 0; hop < 10; hop++) {
    const res = await request(current, signal);
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location) {
      res.resume();
      current = new URL(res.headers.location, current);
      if (current.protocol !== 'http:' && current.protocol !== 'https:') throw new UserError(`${url} redirects to an unsupported URL`);
      continue;
    }
    if (status !== 200) {
      res.resume();
      throw new HttpStatusError(current.href, status, res.statusMessage ?? '');
    }
    const lengthHeader = res.headers['content-length'];
    const length = lengthHeader !== undefined && /^[0-9]+$/.test(lengthHeader) ? Number(lengthHeader) : null;
    return { url: current.href, stream: guard(res, current.href, length), length };
  }
  throw new UserError(`too many redirects fetching ${url}`);
}

/** Re-emit the response, turning a lost connection or short body into one clear error. */
function guard(res: IncomingMessage, url: string, length: number | null): Readable {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let received = 0;
  res.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (!out.write(chunk)) res.pause();
  });
  out.on('drain', () => res.resume());
  const lost = (): void => {
    const of = length === null ? '' : ` of ${length}`;
    out.destroy(new UserError(`download of ${url} interrupted: connection closed after ${received}${of} bytes`));
  };
  res.on('error', lost);
  res.on('aborted', lost);
  res.on('end', () => {
    if (!res.complete || (length !== null && received !== length)) return lost();
    out.end();
  });
  out.on('close', () => {
    if (!res.complete) res.destroy();
  });
  return out;
}

/** Fetch a small file completely; null when it does not exist (HTTP 404/410, missing file). */
export async function fetchOptional(url: string, signal: AbortSignal, maxBytes = 16 * 1024 * 1024): Promise<Buffer | null> {
  let dl: Download;
  try {
    dl = await openUrl(url, signal);
  } catch (err) {
    if (err instanceof HttpStatusError && (err.status === 404 || err.status === 410)) return null;
    throw err;
  }
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of dl.stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      dl.stream.destroy();
      throw new UserError(`${url} is larger than ${maxBytes} bytes`);
    }
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}
