// Identity files read from an OS tree that is not ours: os-release, hostname, machine-id,
// machine-info. Paths are resolved inside the tree (absolute symlinks are taken relative to the
// tree's root, ".." stops at it), so a hostile image cannot make us read host files.
import { lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

const MAX_SYMLINKS = 32;
const MAX_FILE = 64 * 1024;

/** Resolve `rel` (absolute inside the tree) to a host path that stays within `root`. */
export function resolveInRoot(root: string, rel: string): string | undefined {
  let pending = rel.split('/').filter((p) => p !== '' && p !== '.');
  const done: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === '..') {
      done.pop();
      continue;
    }
    const host = join(root, ...done, part);
    let st;
    try {
      st = lstatSync(host);
    } catch {
      return undefined;
    }
    if (st.isSymbolicLink()) {
      if (++hops > MAX_SYMLINKS) return undefined;
      const target = readlinkSync(host);
      const parts = target.split('/').filter((p) => p !== '' && p !== '.');
      if (target.startsWith('/')) done.length = 0;
      pending = [...parts, ...pending];
      continue;
    }
    done.push(part);
  }
  return join(root, ...done);
}

function readInRoot(root: string, paths: readonly string[]): string | undefined {
  for (const p of paths) {
    const host = resolveInRoot(root, p);
    if (!host) continue;
    try {
      const st = lstatSync(host);
      if (!st.isFile()) continue;
      return readFileSync(host, 'utf8').slice(0, MAX_FILE);
    } catch {
      continue;
    }
  }
  return undefined;
}

/** Parse an env-style file (os-release, machine-info): KEY=VALUE with shell-like quoting. */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) continue;
    out[key] = unquote(line.slice(eq + 1).trim());
  }
  return out;
}

function unquote(v: string): string {
  let out = '';
  let quote: string | undefined;
  for (let i = 0; i < v.length; i++) {
    const c = v[i] as string;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < v.length) out += v[++i];
      else out += c;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '\\' && i + 1 < v.length) out += v[++i];
    else if (c === '#' && (i === 0 || /\s/.test(v[i - 1] as string))) break;
    else out += c;
  }
  return out.trimEnd();
}

export function readOSRelease(root: string): Record<string, string> {
  const text = readInRoot(root, ['/etc/os-release', '/usr/lib/os-release']);
  return text === undefined ? {} : parseEnvFile(text);
}

export function readHostname(root: string): string {
  const text = readInRoot(root, ['/etc/hostname']);
  if (text === undefined) return '';
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (t !== '' && !t.startsWith('#')) return t;
  }
  return '';
}

/** /etc/machine-id as 16 bytes; empty when missing, empty, "uninitialized" or all zeros. */
export function readMachineID(root: string): Buffer {
  const text = readInRoot(root, ['/etc/machine-id'])?.trim() ?? '';
  const hex = text.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex) || /^0+$/.test(hex)) return Buffer.alloc(0);
  return Buffer.from(hex, 'hex');
}

export function readMachineInfo(root: string): Record<string, string> {
  const text = readInRoot(root, ['/etc/machine-info']);
  return text === undefined ? {} : parseEnvFile(text);
}

export interface ImageMetadata {
  hostname: string;
  machineId: Buffer;
  machineInfo: Record<string, string>;
  osRelease: Record<string, string>;
}

export function readMetadata(root: string): ImageMetadata {
  return {
    hostname: readHostname(root),
    machineId: readMachineID(root),
    machineInfo: readMachineInfo(root),
    osRelease: readOSRelease(root),
  };
}
