// Formatting of values the way machinectl prints them: sizes, timestamps, addresses, signals.
import { constants } from 'node:os';

/** uint64 max: systemd's "unset" for sizes and limits. */
export const UINT64_MAX = 0xffff_ffff_ffff_ffffn;

/** format_bytes(): 1024-based with one decimal, as "1.5G"; undefined/max → "-". */
export function formatBytes(value: bigint | number | undefined): string {
  if (value === undefined) return '-';
  const n = typeof value === 'bigint' ? value : BigInt(Math.trunc(value));
  if (n === UINT64_MAX) return '-';
  const units = ['E', 'P', 'T', 'G', 'M', 'K'];
  for (let i = 0; i < units.length; i++) {
    const factor = 1n << BigInt(10 * (units.length - i));
    if (n >= factor) {
      const tenths = (n * 10n) / factor;
      const whole = tenths / 10n;
      const frac = tenths % 10n;
      return frac === 0n ? `${whole}${units[i]}` : `${whole}.${frac}${units[i]}`;
    }
  }
  return `${n}B`;
}

/** Parse "1G", "512M", "100K", "12345" (bytes) or "-" (no limit) as systemd's parse_size(1024). */
export function parseSize(text: string): bigint {
  if (text === '-' || text === 'infinity') return UINT64_MAX;
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new Error(`invalid size '${text}'`);
  const exp = ' KMGTPE'.indexOf((m[2] ?? '').toUpperCase() || ' ');
  const [whole, frac = ''] = (m[1] as string).split('.');
  const factor = 1n << BigInt(10 * exp);
  const fracValue = frac ? (BigInt(frac) * factor) / 10n ** BigInt(frac.length) : 0n;
  return BigInt(whole as string) * factor + fracValue;
}

const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** format_timestamp(): "Sun 2026-11-22 19:00:00 UTC" in local time; 0 → "n/a". */
export function formatTimestamp(usec: bigint | number): string {
  const us = typeof usec === 'bigint' ? usec : BigInt(Math.trunc(usec));
  if (us === 0n || us === UINT64_MAX) return 'n/a';
  const d = new Date(Number(us / 1000n));
  const zone = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(d).find((p) => p.type === 'timeZoneName')?.value ?? '';
  return `${WEEKDAYS[d.getDay()]} ${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone}`.trimEnd();
}

/** format_timestamp_relative(): "5min ago", "2h 3min ago", "1 day 2h ago". */
export function formatRelative(usec: bigint | number, nowMs = Date.now()): string {
  const us = typeof usec === 'bigint' ? usec : BigInt(Math.trunc(usec));
  if (us === 0n || us === UINT64_MAX) return 'n/a';
  let sec = Math.max(0, Math.floor((nowMs - Number(us / 1000n)) / 1000));
  if (sec === 0) return 'now';
  const parts: string[] = [];
  const days = Math.floor(sec / 86400);
  sec %= 86400;
  const hours = Math.floor(sec / 3600);
  sec %= 3600;
  const mins = Math.floor(sec / 60);
  sec %= 60;
  if (days) parts.push(days === 1 ? '1 day' : `${days} days`);
  if (hours) parts.push(`${hours}h`);
  if (mins) parts.push(`${mins}min`);
  if (sec) parts.push(`${sec}s`);
  return `${parts.slice(0, 2).join(' ')} ago`;
}

/** An address from GetMachineAddresses (family, bytes) as text; IPv6 with "::" compression. */
export function formatAddress(family: number, bytes: Buffer | number[]): string {
  const b = Buffer.from(bytes);
  if (family === 2 && b.length === 4) return [...b].join('.');
  if (family === 10 && b.length === 16) {
    const groups: number[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i));
    // Longest run (≥2) of zero groups becomes "::" (RFC 5952).
    let bestStart = -1;
    let bestLen = 0;
    for (let i = 0; i < 8; ) {
      if (groups[i] !== 0) {
        i++;
        continue;
      }
      let j = i;
      while (j < 8 && groups[j] === 0) j++;
      if (j - i > bestLen && j - i >= 2) {
        bestStart = i;
        bestLen = j - i;
      }
      i = j;
    }
    const hex = groups.map((g) => g.toString(16));
    if (bestStart < 0) return hex.join(':');
    return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
  }
  return b.toString('hex');
}

const SIGRTMIN = 34;
const SIGRTMAX = 64;

/** Parse a signal as machinectl does: "SIGTERM", "TERM", "15", "RTMIN+4". */
export function parseSignal(text: string): number {
  const t = text.trim().toUpperCase();
  if (/^\d+$/.test(t)) {
    const n = Number(t);
    if (n >= 1 && n <= SIGRTMAX) return n;
    throw new Error(`invalid signal '${text}'`);
  }
  const name = t.startsWith('SIG') ? t : `SIG${t}`;
  const rt = /^SIGRTMIN(?:\+(\d+))?$/.exec(name);
  if (rt) {
    const n = SIGRTMIN + Number(rt[1] ?? 0);
    if (n <= SIGRTMAX) return n;
  }
  const rtmax = /^SIGRTMAX(?:-(\d+))?$/.exec(name);
  if (rtmax) {
    const n = SIGRTMAX - Number(rtmax[1] ?? 0);
    if (n >= SIGRTMIN) return n;
  }
  const signals = constants.signals as Record<string, number>;
  const n = signals[name];
  if (n !== undefined) return n;
  throw new Error(`invalid signal '${text}'`);
}

/** Names of the classic signals, for `--signal=help`. */
export function signalNames(): string[] {
  const signals = constants.signals as Record<string, number>;
  return Object.entries(signals)
    .sort((a, b) => a[1] - b[1])
    .map(([name]) => name.slice(3));
}

/** systemd's parse_boolean(). */
export function parseBoolean(text: string): boolean {
  const t = text.toLowerCase();
  if (['1', 'yes', 'y', 'true', 't', 'on'].includes(t)) return true;
  if (['0', 'no', 'n', 'false', 'f', 'off'].includes(t)) return false;
  throw new Error(`invalid boolean '${text}'`);
}

/** Order by name in byte order, as machinectl sorts (strcmp; no locale collation to load). */
export function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
