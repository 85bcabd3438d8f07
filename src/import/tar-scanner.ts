// A validating tee in front of GNU tar: parses the tar stream's headers (ustar, GNU long
// names, pax) while passing the bytes through unchanged, and stops the stream BEFORE tar sees a
// header that would be dangerous or that the two parsers could read differently.
//
// Why a pre-scan at all: GNU tar alone strips a leading '/' silently, skips '../' members with
// a warning but goes on, and its placeholder trick for symlinks is only a partial answer to
// write-through. We want one clear error naming the entry and no extraction past it. Why our own
// parser instead of node-tar's Parser: we only need the headers, must see every byte at
// the boundaries exactly as tar will (a disagreement would let a crafted archive smuggle a
// header past us), and skipping bodies by arithmetic costs nothing next to decompression.
import { Transform, type TransformCallback } from 'node:stream';
import { UserError } from '../common/errors.js';

const BLOCK = 512;
/** Largest pax/GNU long-name extension body we accept; real ones are a few hundred bytes. */
export const MAX_EXTENSION_SIZE = 1024 * 1024;
/** PATH_MAX: longer names cannot be created anyway. */
export const MAX_PATH_LENGTH = 4096;

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'directory' | 'fifo' | 'label';

export interface TarEntry {
  /** Normalised relative path ('' for the archive root "./"). */
  path: string;
  type: TarEntryType;
  size: number;
  /** Symlink or hardlink target as stored (hardlink: normalised relative path). */
  linkTarget?: string;
}

export class TarSafetyError extends UserError {
  readonly entry: string | undefined;
  constructor(message: string, entry?: string) {
    super(entry === undefined ? `unsafe or corrupt archive: ${message}` : `unsafe or corrupt archive: entry '${entry}': ${message}`);
    this.name = 'TarSafetyError';
    this.entry = entry;
  }
}

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
  D: 'directory', // GNU dumpdir: a directory whose body lists its contents
  V: 'label',
};
/** Entry types whose size field must be zero: any body would be read differently by parsers. */
const BODYLESS = new Set<TarEntryType>(['hardlink', 'symlink', 'char', 'block', 'fifo']);

interface Pending {
  path?: string;
  linkpath?: string;
  size?: number;
  sparseName?: string;
}

type State =
  | { kind: 'header' }
  | { kind: 'body'; remaining: number; entry: string }
  | { kind: 'extension'; type: string; remaining: number; padding: number; chunks: Buffer[]; entry: string }
  | { kind: 'end' };

function cString(buf: Buffer, start: number, length: number): string {
  const field = buf.subarray(start, start + length);
  const nul = field.indexOf(0);
  return (nul === -1 ? field : field.subarray(0, nul)).toString('utf8');
}

/** Numeric header field: octal (GNU tar tolerates leading spaces, a space/NUL end) or base-256. */
export function parseNumber(field: Buffer): number | null {
  const first = field[0] ?? 0;
  if (first & 0x80) {
    if (first === 0xff) return null; // negative base-256
    let value = first & 0x7f;
    for (let i = 1; i < field.length; i++) {
      value = value * 256 + (field[i] ?? 0);
      if (value > Number.MAX_SAFE_INTEGER) return null;
    }
    return value;
  }
  const text = field.toString('latin1');
  const m = /^ *([0-7]*)[ \0]*$/.exec(text);
  if (!m) return null;
  const digits = m[1] ?? '';
  return digits === '' ? 0 : parseInt(digits, 8);
}

function checksumOk(header: Buffer): boolean {
  const stored = parseNumber(header.subarray(148, 156));
  if (stored === null) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (header[i] ?? 0);
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

function isZeroBlock(buf: Buffer, at: number): boolean {
  for (let i = at; i < at + BLOCK; i++) if (buf[i] !== 0) return false;
  return true;
}

/** pax records: "LEN key=value\n", LEN counting the whole record. */
export function parsePax(data: Buffer, entry: string): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding after the last record
    const space = data.indexOf(0x20, pos);
    const lenText = space === -1 ? '' : data.toString('latin1', pos, space);
    if (!/^[0-9]{1,7}$/.test(lenText)) throw new TarSafetyError('malformed pax header (bad record length)', entry);
    const len = parseInt(lenText, 10);
    const end = pos + len;
    if (len < lenText.length + 3 || end > data.length || data[end - 1] !== 0x0a) {
      throw new TarSafetyError('malformed pax header (record overruns)', entry);
    }
    const record = data.subarray(space + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw new TarSafetyError('malformed pax header (no key)', entry);
    out.set(record.toString('utf8', 0, eq), record.toString('utf8', eq + 1));
    pos = end;
  }
  return out;
}

/** Split a member name into safe components, or throw naming it. */
export function normaliseMemberPath(raw: string, what = 'path'): string {
  if (raw.length === 0) throw new TarSafetyError(`empty ${what}`, raw);
  if (raw.length > MAX_PATH_LENGTH) throw new TarSafetyError(`${what} longer than ${MAX_PATH_LENGTH} bytes`, raw.slice(0, 80) + '…');
  if (raw.includes('\0')) throw new TarSafetyError(`${what} contains a NUL byte`, raw);
  if (raw.startsWith('/')) throw new TarSafetyError(`absolute ${what}`, raw);
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new TarSafetyError(`${what} contains '..'`, raw);
    parts.push(part);
  }
  return parts.join('/');
}

export interface ScanSummary {
  entries: number;
  /** True once the end-of-archive marker was seen. */
  complete: boolean;
}

/**
 * Transform that forwards a tar stream while refusing: absolute paths, '..' components, entries
 * written through a symlink the archive created earlier, hardlinks leaving the tree, oversized
 * extension headers, bad header checksums, unknown/ambiguous entry types and truncation. At the
 * first zero block it emits a clean end-of-archive marker and swallows the rest, so tar reads to
 * EOF and never races us with EPIPE.
 */
export class TarSafetyScanner extends Transform {
  private state: State = { kind: 'header' };
  private headerBuf = Buffer.alloc(0);
  private pending: Pending = {};
  private globalPax = new Map<string, string>();
  /** Paths the archive made symlinks; nothing may be written below them. */
  private readonly symlinks = new Set<string>();
  private lastEntry: string | undefined;
  readonly summary: ScanSummary = { entries: 0, complete: false };
  private readonly onEntry: ((entry: TarEntry) => void) | undefined;
  private readonly maxBytes: number;
  private totalBytes = 0;

  /** maxBytes: refuse an archive whose file contents add up to more (the target's free space). */
  constructor(options: { onEntry?: (entry: TarEntry) => void; maxBytes?: number } = {}) {
    super({ highWaterMark: 1024 * 1024 });
    this.onEntry = options.onEntry;
    this.maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      const forward = this.scan(chunk);
      if (forward) this.push(forward);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.state.kind === 'end') return done();
    const where = this.state.kind === 'header' ? this.lastEntry : this.state.entry;
    if (this.state.kind === 'header' && this.headerBuf.length === 0 && this.summary.entries === 0) {
      return done(new TarSafetyError('empty archive'));
    }
    done(new TarSafetyError(where === undefined ? 'archive is truncated' : 'archive is truncated (no end-of-archive marker after this entry)', where));
  }

  /** Walk one chunk; returns what to forward (the chunk, a prefix plus end marker, or nothing). */
  private scan(chunk: Buffer): Buffer | null {
    let pos = 0;
    while (pos < chunk.length) {
      const st = this.state;
      if (st.kind === 'end') return pos === 0 ? null : chunk.subarray(0, pos);
      if (st.kind === 'body') {
        const step = Math.min(st.remaining, chunk.length - pos);
        st.remaining -= step;
        pos += step;
        if (st.remaining === 0) this.state = { kind: 'header' };
        continue;
      }
      if (st.kind === 'extension') {
        const step = Math.min(st.remaining + st.padding, chunk.length - pos);
        const dataPart = Math.min(step, st.remaining);
        if (dataPart > 0) st.chunks.push(chunk.subarray(pos, pos + dataPart));
        st.remaining -= dataPart;
        st.padding -= step - dataPart;
        pos += step;
        if (st.remaining === 0 && st.padding === 0) this.finishExtension(st.type, Buffer.concat(st.chunks), st.entry);
        continue;
      }
      // header: assemble 512 bytes (they may straddle chunks)
      let header: Buffer;
      if (this.headerBuf.length === 0 && chunk.length - pos >= BLOCK) {
        header = chunk.subarray(pos, pos + BLOCK);
        pos += BLOCK;
      } else {
        const need = BLOCK - this.headerBuf.length;
        const take = Math.min(need, chunk.length - pos);
        this.headerBuf = Buffer.concat([this.headerBuf, chunk.subarray(pos, pos + take)]);
        pos += take;
        if (this.headerBuf.length < BLOCK) continue;
        header = this.headerBuf;
        this.headerBuf = Buffer.alloc(0);
      }
      if (isZeroBlock(header, 0)) {
        // GNU tar stops at the first zero block too (a lone one only draws a warning). Hand it
        // a proper two-block marker and drop whatever follows.
        if (Object.keys(this.pending).length > 0) throw new TarSafetyError('extension header without a following entry', this.lastEntry);
        this.state = { kind: 'end' };
        this.summary.complete = true;
        const start = pos - BLOCK;
        const prefix = start >= 0 ? chunk.subarray(0, start) : chunk.subarray(0, 0);
        // when the zero block straddled chunks, part of it was already forwarded; re-sending
        // a whole marker after it still leaves >= 2 zero blocks in front of tar
        return Buffer.concat([prefix, Buffer.alloc(2 * BLOCK)]);
      }
      this.handleHeader(header);
    }
    return chunk;
  }

  private handleHeader(header: Buffer): void {
    const rawName = cString(header, 0, 100);
    const shownName = this.pending.path ?? rawName;
    if (!checksumOk(header)) throw new TarSafetyError('bad header checksum (not a tar archive, or corrupt)', this.lastEntry ? `after ${this.lastEntry}` : undefined);
    const typeflag = String.fromCharCode(header[156] ?? 0);
    const size = parseNumber(header.subarray(124, 136));
    if (size === null) throw new TarSafetyError('invalid size field', shownName);

    if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
      if (size > MAX_EXTENSION_SIZE) throw new TarSafetyError(`extension header of ${size} bytes exceeds the ${MAX_EXTENSION_SIZE}-byte limit`, shownName);
      const padding = (BLOCK - (size % BLOCK)) % BLOCK;
      this.state = { kind: 'extension', type: typeflag, remaining: size, padding, chunks: [], entry: shownName };
      if (size === 0) this.finishExtension(typeflag, Buffer.alloc(0), shownName);
      return;
    }

    const type = TYPES[typeflag];
    if (!type) {
      const what = typeflag === 'S' ? 'old GNU sparse entries are not supported' : typeflag === 'M' ? 'multi-volume archives are not supported' : `unsupported entry type '${typeflag.replace(/[^\x20-\x7e]/g, '?')}'`;
      throw new TarSafetyError(what, shownName);
    }

    const ustar = header.toString('latin1', 257, 263) === 'ustar\0';
    const prefix = ustar ? cString(header, 345, 155) : '';
    const name = this.pending.sparseName ?? this.pending.path ?? this.globalPax.get('path') ?? (prefix ? `${prefix}/${rawName}` : rawName);
    const linkRaw = this.pending.linkpath ?? cString(header, 157, 100);
    const realSize = this.pending.size ?? size;
    this.pending = {};
    this.lastEntry = name;

    if (type === 'label') {
      this.skipBody(realSize, name);
      return;
    }
    const path = normaliseMemberPath(name);
    if (path === '' && type !== 'directory') throw new TarSafetyError(`the archive root can only be a directory, not a ${type}`, name);
    if ((BODYLESS.has(type) || typeflag === '5') && realSize !== 0) throw new TarSafetyError(`${type} entry with a ${realSize}-byte body`, name);
    this.assertNotThroughSymlink(path, name, 'written through');

    let linkTarget: string | undefined;
    if (type === 'hardlink') {
      linkTarget = normaliseMemberPath(linkRaw, 'hard link target');
      if (linkTarget === '') throw new TarSafetyError('hard link to the archive root', name);
      this.assertNotThroughSymlink(linkTarget, name, 'hard link resolved through');
    } else if (type === 'symlink') {
      if (linkRaw.length === 0) throw new TarSafetyError('symlink with an empty target', name);
      if (linkRaw.length > MAX_PATH_LENGTH) throw new TarSafetyError('symlink target too long', name);
      // Absolute and '..' targets are kept as they are: they are resolved inside the container
      // at run time; at extraction time nothing is ever written through them (checked above).
      linkTarget = linkRaw;
    }

    // a hard link to a symlink is a symlink too (link() does not follow): track it the same way
    if (type === 'symlink' || (type === 'hardlink' && this.symlinks.has(linkTarget!))) this.symlinks.add(path);
    else this.symlinks.delete(path); // tar unlinks an existing symlink before creating this entry

    this.totalBytes += realSize;
    if (this.totalBytes > this.maxBytes) {
      throw new TarSafetyError(`archive unpacks to more than the ${this.maxBytes} bytes free in the target`, name);
    }
    this.summary.entries++;
    this.onEntry?.({ path, type, size: realSize, ...(linkTarget === undefined ? {} : { linkTarget }) });
    this.skipBody(realSize, name);
  }

  private skipBody(size: number, entry: string): void {
    if (!Number.isSafeInteger(size) || size < 0) throw new TarSafetyError('invalid size', entry);
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    this.state = padded === 0 ? { kind: 'header' } : { kind: 'body', remaining: padded, entry };
  }

  private assertNotThroughSymlink(path: string, entry: string, how: string): void {
    if (this.symlinks.size === 0) return;
    let slash = path.indexOf('/');
    while (slash !== -1) {
      const dir = path.slice(0, slash);
      if (this.symlinks.has(dir)) throw new TarSafetyError(`would be ${how} symlink '${dir}'`, entry);
      slash = path.indexOf('/', slash + 1);
    }
  }

  private finishExtension(type: string, data: Buffer, entry: string): void {
    this.state = { kind: 'header' };
    if (type === 'L' || type === 'K') {
      const nul = data.indexOf(0);
      const value = (nul === -1 ? data : data.subarray(0, nul)).toString('utf8');
      if (type === 'L') this.pending.path = value;
      else this.pending.linkpath = value;
      return;
    }
    const records = parsePax(data, entry);
    if (type === 'g') {
      for (const key of ['path', 'linkpath', 'size']) {
        if (records.has(key)) throw new TarSafetyError(`global pax header sets '${key}'`, entry);
      }
      for (const [k, v] of records) this.globalPax.set(k, v);
      return;
    }
    const path = records.get('path');
    if (path !== undefined) this.pending.path = path;
    const linkpath = records.get('linkpath');
    if (linkpath !== undefined) this.pending.linkpath = linkpath;
    const sparseName = records.get('GNU.sparse.name');
    if (sparseName !== undefined) this.pending.sparseName = sparseName;
    const size = records.get('size');
    if (size !== undefined) {
      if (!/^[0-9]{1,16}$/.test(size) || !Number.isSafeInteger(Number(size))) throw new TarSafetyError('pax size is not a number', path ?? entry);
      this.pending.size = Number(size);
    }
  }
}
