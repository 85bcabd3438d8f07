// Where the expected SHA-256 of a download comes from, per --verify: FILE.sha256 beside it
// (SUSE style, signed inline) or SHA256SUMS in the same directory (signed by SHA256SUMS.gpg).
import { UserError } from '../common/errors.js';
import { findChecksum } from './checksums.js';
import { fetchOptional } from './http.js';
import { urlLastComponent } from './names.js';
import { verifyDetached, verifyInline } from './signature.js';

export type VerifyMode = 'no' | 'checksum' | 'signature';
export const VERIFY_MODES: readonly VerifyMode[] = ['no', 'checksum', 'signature'];

export function parseVerifyMode(value: string | undefined): VerifyMode {
  if (value === undefined || value === '') return 'signature'; // importd: empty means signature
  if ((VERIFY_MODES as readonly string[]).includes(value)) return value as VerifyMode;
  throw new UserError(`invalid --verify '${value}'`, { hint: 'use no, checksum or signature' });
}

/** URL of a sibling file in the same directory. */
export function siblingUrl(url: string, file: string): string {
  const u = new URL(url);
  u.search = '';
  u.hash = '';
  u.pathname = u.pathname.replace(/[^/]*$/, encodeURIComponent(file));
  return u.href;
}

/** Looks checksums up for files of one directory, fetching and checking SHA256SUMS once. */
export class ChecksumSource {
  private sums: Promise<string | null> | null = null;
  constructor(
    private readonly mode: VerifyMode,
    private readonly signal: AbortSignal,
  ) {}

  /** Expected SHA-256 of the file at URL, or null when mode is "no". */
  async expectedFor(url: string): Promise<string | null> {
    if (this.mode === 'no') return null;
    const file = urlLastComponent(url);
    const perFile = await fetchOptional(`${url.replace(/[?#].*$/, '')}.sha256`, this.signal);
    if (perFile) {
      const text = this.mode === 'signature' ? await verifyInline(perFile) : perFile.toString('utf8');
      const hash = findChecksum(text, file, { single: true });
      if (!hash) throw new UserError(`DOWNLOAD INVALID: ${file}.sha256 has no usable checksum for ${file}`);
      return hash;
    }
    const sums = await this.loadSums(url);
    if (sums === null) throw new UserError(`cannot verify ${file}: neither ${file}.sha256 nor SHA256SUMS exists on the server`, { hint: 'use --verify=no to skip verification' });
    const hash = findChecksum(sums, file);
    if (!hash) throw new UserError(`DOWNLOAD INVALID: ${file} is not listed in SHA256SUMS`);
    return hash;
  }

  private loadSums(url: string): Promise<string | null> {
    this.sums ??= (async () => {
      const sums = await fetchOptional(siblingUrl(url, 'SHA256SUMS'), this.signal);
      if (!sums) return null;
      if (this.mode === 'signature') {
        const sig = await fetchOptional(siblingUrl(url, 'SHA256SUMS.gpg'), this.signal);
        if (!sig) throw new UserError('DOWNLOAD INVALID: SHA256SUMS.gpg (the signature) does not exist on the server', { hint: 'use --verify=checksum to check only the checksum' });
        await verifyDetached(sums, sig);
      }
      return sums.toString('utf8');
    })();
    return this.sums;
  }
}

export function assertDigest(file: string, expected: string | null, actual: string): void {
  if (expected !== null && expected !== actual) {
    throw new UserError(`DOWNLOAD INVALID: SHA-256 of ${file} does not match (expected ${expected.slice(0, 16)}…, got ${actual.slice(0, 16)}…)`);
  }
}
