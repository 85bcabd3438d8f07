// SHA256SUMS / FILE.sha256 parsing. Accepts GNU coreutils lines ("HEX  NAME", "HEX *NAME"),
// BSD lines ("SHA256 (NAME) = HEX") and a bare hash (SUSE-style FILE.sha256), with or without
// a clear-signature wrapper.
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export interface ChecksumEntry {
  file: string | null;
  sha256: string;
}

/** Strip an OpenPGP clear-signature wrapper (RFC 4880 §7) and undo dash-escaping. */
export function stripClearsign(text: string): string {
  const lines = text.split(/\r?\n/);
  if (lines[0]?.trim() !== '-----BEGIN PGP SIGNED MESSAGE-----') return text;
  let i = 1;
  while (i < lines.length && lines[i] !== '') i++; // armor headers ("Hash: SHA256")
  const body: string[] = [];
  for (i++; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.trim() === '-----BEGIN PGP SIGNATURE-----') break;
    body.push(line.startsWith('- ') ? line.slice(2) : line);
  }
  return body.join('\n');
}

export function parseChecksumList(text: string): ChecksumEntry[] {
  const out: ChecksumEntry[] = [];
  for (const raw of stripClearsign(text).split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let m = /^([0-9a-fA-F]{64})(?:\s+\*?(.+))?$/.exec(line);
    if (m) {
      out.push({ sha256: m[1]!.toLowerCase(), file: m[2] === undefined ? null : m[2].replace(/^\.\//, '') });
      continue;
    }
    m = /^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$/.exec(line);
    if (m) out.push({ sha256: m[2]!.toLowerCase(), file: m[1]!.replace(/^\.\//, '') });
  }
  return out;
}

/**
 * The expected SHA-256 of FILE in a checksum list, or null if it is not listed. A bare hash
 * with no file name counts only when the list came from FILE.sha256 itself (`single`).
 */
export function findChecksum(text: string, file: string, options: { single?: boolean } = {}): string | null {
  const entries = parseChecksumList(text);
  const named = entries.filter((e) => e.file === file);
  if (named.length > 0) {
    const first = named[0]!.sha256;
    // two different hashes for one file: refuse rather than pick one
    return named.every((e) => e.sha256 === first) ? first : null;
  }
  if (options.single && entries.length === 1 && entries[0]!.file === null) return entries[0]!.sha256;
  return null;
}

/** Pass-through stage that counts (and, when asked, hashes) what flows by. */
export class HashingCounter extends Transform {
  // hashing 250 MB costs ~0.5 s of a core that tar and xz want too: only when it is checked
  private readonly hash: Hash | null;
  bytes = 0;
  private readonly onProgress: ((bytes: number) => void) | undefined;
  constructor(onProgress?: (bytes: number) => void, options: { hash?: boolean } = {}) {
    super({ highWaterMark: 1 << 20 });
    this.onProgress = onProgress;
    this.hash = options.hash === false ? null : createHash('sha256');
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash?.update(chunk);
    this.bytes += chunk.length;
    this.onProgress?.(this.bytes);
    done(null, chunk);
  }
  /** Hex SHA-256 of everything seen, or null when not hashing. */
  digest(): string | null {
    return this.hash?.digest('hex') ?? null;
  }
}
