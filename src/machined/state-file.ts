// Per-machine state files, in the format systemd-machined keeps under /run/systemd/machines
// (key=value, C-escaped values, written atomically via a temp file + rename), plus the
// "unit:UNIT" → NAME symlink for reverse lookup.
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, symlinkSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Machine, MachineClass } from './machine.js';
import { isValidHostname } from '../common/names.js';

export const DEFAULT_STATE_DIR = '/run/systemd/machines';

export function stateDir(): string {
  return process.env['MCTL_MACHINED_STATE_DIR'] || DEFAULT_STATE_DIR;
}

/** cescape(): backslash escapes for control characters, quotes and backslash. */
export function cEscape(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const ch = String.fromCharCode(b);
    if (ch === '\\') out += '\\\\';
    else if (ch === '"') out += '\\"';
    else if (ch === "'") out += "\\'";
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (b < 0x20 || b >= 0x7f) out += `\\x${b.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return out;
}

export function cUnescape(s: string): string {
  const bytes: number[] = [];
  const simple: Record<string, number> = { n: 10, t: 9, r: 13, a: 7, b: 8, f: 12, v: 11, '\\': 92, '"': 34, "'": 39, s: 32 };
  for (let i = 0; i < s.length; i++) {
    const ch = s[i] as string;
    if (ch !== '\\' || i + 1 >= s.length) {
      for (const b of Buffer.from(ch, 'utf8')) bytes.push(b);
      continue;
    }
    const next = s[i + 1] as string;
    if (next === 'x' && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 2, i + 4))) {
      bytes.push(parseInt(s.slice(i + 2, i + 4), 16));
      i += 3;
    } else if (/^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) {
      bytes.push(parseInt(s.slice(i + 1, i + 4), 8));
      i += 3;
    } else {
      bytes.push(simple[next] ?? next.charCodeAt(0));
      i += 1;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

export function serializeMachine(m: Machine): string {
  const lines = ['# This is private data. Do not parse.', `NAME=${cEscape(m.name)}`];
  if (m.unit) lines.push(`SCOPE=${cEscape(m.unit)}`);
  if (m.scopeJob) lines.push(`SCOPE_JOB=${m.scopeJob}`);
  if (m.service) lines.push(`SERVICE=${cEscape(m.service)}`);
  if (m.rootDirectory) lines.push(`ROOT=${cEscape(m.rootDirectory)}`);
  if (m.id.length === 16) lines.push(`ID=${m.id.toString('hex')}`);
  if (m.leader > 0) lines.push(`LEADER=${m.leader}`);
  lines.push(`CLASS=${m.class}`);
  if (m.realtimeUsec > 0n) lines.push(`REALTIME=${m.realtimeUsec}`);
  if (m.monotonicUsec > 0n) lines.push(`MONOTONIC=${m.monotonicUsec}`);
  if (m.netifs.length > 0) lines.push(`NETIF="${m.netifs.join(' ')}"`);
  // Our additions (systemd ignores unknown keys): the cgroup path and whether we created it.
  if (m.cgroup) lines.push(`CGROUP=${cEscape(m.cgroup)}`);
  if (m.ownsScope) lines.push('OWNS_SCOPE=1');
  if (m.leaderStartTime) lines.push(`LEADER_STARTTIME=${m.leaderStartTime}`);
  return lines.join('\n') + '\n';
}

/** Parse a state file; undefined when it is not a usable machine record. */
export function parseMachine(fileName: string, text: string): Machine | undefined {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    let value = line.slice(eq + 1);
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    kv.set(line.slice(0, eq), cUnescape(value));
  }
  const name = kv.get('NAME') ?? fileName;
  if (name !== fileName || !isValidHostname(name)) return undefined;
  const cls = kv.get('CLASS');
  const klass: MachineClass = cls === 'vm' ? 'vm' : 'container';
  const idHex = kv.get('ID') ?? '';
  const leader = Number(kv.get('LEADER') ?? '0');
  return {
    name,
    id: /^[0-9a-f]{32}$/.test(idHex) ? Buffer.from(idHex, 'hex') : Buffer.alloc(0),
    service: kv.get('SERVICE') ?? '',
    class: klass,
    leader: Number.isInteger(leader) && leader > 0 ? leader : 0,
    leaderStartTime: /^\d+$/.test(kv.get('LEADER_STARTTIME') ?? '') ? (kv.get('LEADER_STARTTIME') as string) : '',
    rootDirectory: kv.get('ROOT') ?? '',
    netifs: (kv.get('NETIF') ?? '').split(/\s+/).filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0),
    unit: kv.get('SCOPE') ?? '',
    cgroup: kv.get('CGROUP') ?? '',
    ownsScope: kv.get('OWNS_SCOPE') === '1',
    scopeJob: kv.get('SCOPE_JOB') ?? '',
    realtimeUsec: BigInt(/^\d+$/.test(kv.get('REALTIME') ?? '') ? (kv.get('REALTIME') as string) : '0'),
    monotonicUsec: BigInt(/^\d+$/.test(kv.get('MONOTONIC') ?? '') ? (kv.get('MONOTONIC') as string) : '0'),
    stopping: false,
    started: false,
  };
}

export class StateStore {
  constructor(readonly dir: string = stateDir()) {}

  ensureDir(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
  }

  /**
   * Write atomically: a crash of the service leaves either the old or the new file, never half
   * of one. No fsync, like systemd: the directory lives on /run (tmpfs) and does not outlive a
   * reboot anyway, and an fsync per registration would cost milliseconds on a disk.
   */
  save(m: Machine): void {
    const path = join(this.dir, m.name);
    const tmp = join(this.dir, `.#${m.name}.${process.pid}`);
    const fd = openSync(tmp, 'w', 0o644);
    try {
      writeSync(fd, serializeMachine(m));
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    if (m.unit) {
      const link = join(this.dir, `unit:${m.unit}`);
      try {
        unlinkSync(link);
      } catch {
        // not there yet
      }
      symlinkSync(m.name, link);
    }
  }

  remove(m: Machine): void {
    for (const p of [join(this.dir, m.name), m.unit ? join(this.dir, `unit:${m.unit}`) : '']) {
      if (!p) continue;
      try {
        unlinkSync(p);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }

  /** Every parseable machine record; stray temp files and broken records are removed. */
  loadAll(): Machine[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const out: Machine[] = [];
    for (const name of names) {
      if (name.startsWith('unit:')) continue;
      const path = join(this.dir, name);
      if (name.startsWith('.#')) {
        try {
          unlinkSync(path);
        } catch {
          // raced with another cleanup
        }
        continue;
      }
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        continue;
      }
      const m = parseMachine(name, text);
      if (m) out.push(m);
    }
    return out;
  }
}
