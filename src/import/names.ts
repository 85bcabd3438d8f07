// Local names for transfers, as machinectl derives them, and the hidden temporary pool entries
// a transfer works in.
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { UserError } from '../common/errors.js';
import { cleanupHostname, isValidHostname } from '../common/names.js';

export type ImageKind = 'tar' | 'raw';

/** Last path component of a URL, without query or fragment, percent-decoded. */
export function urlLastComponent(url: string): string {
  let path: string;
  try {
    path = new URL(url).pathname;
  } catch {
    throw new UserError(`invalid URL '${url}'`);
  }
  const last = path.split('/').filter(Boolean).pop() ?? '';
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

// machinectl (tar_strip_suffixes): one of these, once; we add zstd spellings.
const TAR_SUFFIXES = ['.tar.xz', '.tar.gz', '.tar.bz2', '.tar.zst', '.tar.zstd', '.tgz', '.txz', '.tzst', '.tbz2', '.tar'];
// machinectl (raw_strip_suffixes): any of these, repeatedly.
const RAW_SUFFIXES = ['.xz', '.gz', '.bz2', '.zst', '.raw', '.qcow2', '.img', '.bin'];

export function stripImageSuffixes(file: string, kind: ImageKind): string {
  if (kind === 'tar') {
    for (const s of TAR_SUFFIXES) if (file.endsWith(s)) return file.slice(0, -s.length);
    return file;
  }
  let name = file;
  for (;;) {
    const s = RAW_SUFFIXES.find((x) => name.endsWith(x));
    if (!s) return name;
    name = name.slice(0, -s.length);
  }
}

function checked(name: string, from: string): string {
  if (!isValidHostname(name)) {
    throw new UserError(`cannot derive a local image name from '${from}'`, { hint: 'give one as the last argument' });
  }
  return name;
}

/** Default local name for pull-tar/pull-raw URL. */
export function defaultNameFromUrl(url: string, kind: ImageKind): string {
  const last = urlLastComponent(url);
  return checked(stripImageSuffixes(last, kind), url);
}

/** Default local name for import-tar/import-raw FILE. */
export function defaultNameFromFile(file: string, kind: ImageKind): string {
  if (file === '-') throw new UserError('a local image name is required when reading from standard input');
  return checked(stripImageSuffixes(basename(file), kind), file);
}

/** Default local name for import-fs DIR: its basename, cleaned up like hostname_cleanup(). */
export function defaultNameFromDirectory(dir: string): string {
  const base = basename(dir.replace(/\/+$/, '')) || dir;
  return checked(cleanupHostname(base), dir);
}

/** A local image name for a transfer: a valid hostname (no leading dot, unlike hidden images). */
export function assertLocalName(name: string): string {
  if (!isValidHostname(name)) {
    throw new UserError(`local name '${name}' is not a suitable image name`, { hint: 'use letters, digits, "-" and "." (at most 64 characters)' });
  }
  return name;
}

// Hidden work entries: ".#mctl-PID-RANDOM-NAME[.raw]". Hidden (leading dot) so list-images
// skips them and `clean` removes them; the PID lets the next transfer tell a crashed one
// (process gone) from a running one.
const TEMP_RE = /^\.#mctl-([0-9]+)-[0-9a-f]{8}-/;

export function tempEntryName(name: string, pid = process.pid): string {
  return `.#mctl-${pid}-${randomBytes(4).toString('hex')}-${name}`;
}

/** The owning PID of a transfer's temporary entry, or null if NAME is not one. */
export function tempEntryOwner(entry: string): number | null {
  const m = TEMP_RE.exec(entry);
  return m ? Number(m[1]) : null;
}
