// --rlimit=NAME=SOFT[:HARD] and .nspawn Limit*= as systemd-nspawn 252 parses them (measured
// side by side with the stock binary): NAME is the upper-case resource with or without
// "RLIMIT_"; sizes take K/M/G/T/P/E (base 1024), CPU a time span rounded up to seconds (plain
// numbers are seconds), RTTIME a time span in microseconds (plain numbers are µs), NICE a raw
// value 0..40 or a nice level "+N"/"-N" (20-N); "infinity" everywhere; one value sets both.
// The runtime applies them to the container's PID 1 (lowering to the nearest allowed value when
// the kernel refuses, as nspawn's setrlimit_closest()), and without --rlimit=NOFILE gives the
// payload nspawn's default: soft = 1024 (select()'s FD_SETSIZE), hard = the launcher's hard limit.
import { ValueError } from './options.js';

/** Resource names in Linux's RLIMIT_* order: the index is the resource number. */
export const RLIMIT_NAMES = [
  'CPU', 'FSIZE', 'DATA', 'STACK', 'CORE', 'RSS', 'NPROC', 'NOFILE', 'MEMLOCK', 'AS', 'LOCKS', 'SIGPENDING',
  'MSGQUEUE', 'NICE', 'RTPRIO', 'RTTIME',
] as const;
export type RlimitName = (typeof RLIMIT_NAMES)[number];

/** A limit value: a count in the resource's unit, or null for infinity (RLIM_INFINITY). */
export interface Rlimit {
  soft: bigint | null;
  hard: bigint | null;
}

export type Rlimits = Partial<Record<RlimitName, Rlimit>>;

const SIZES: readonly RlimitName[] = ['FSIZE', 'DATA', 'STACK', 'CORE', 'RSS', 'AS', 'MEMLOCK', 'MSGQUEUE'];
const USEC: Record<string, number> = {
  us: 1, usec: 1, ms: 1e3, msec: 1e3, s: 1e6, sec: 1e6, second: 1e6, seconds: 1e6, m: 60e6, min: 60e6, minute: 60e6, minutes: 60e6,
  h: 3600e6, hr: 3600e6, hour: 3600e6, hours: 3600e6, d: 86400e6, day: 86400e6, days: 86400e6, w: 604800e6, week: 604800e6, weeks: 604800e6,
};

export function rlimitFromName(text: string): RlimitName | undefined {
  const name = text.startsWith('RLIMIT_') ? text.slice('RLIMIT_'.length) : text;
  return (RLIMIT_NAMES as readonly string[]).includes(name) ? (name as RlimitName) : undefined;
}

/** Sum of "1min 30s"-style parts in µs, or undefined; `plainUnit` is the unit of a bare number. */
function parseTimespan(text: string, plainUnit: number): number | undefined {
  if (/^[0-9]+(\.[0-9]+)?$/.test(text)) return Number(text) * plainUnit;
  const parts = text.match(/[0-9]+(?:\.[0-9]+)?\s*[a-z]+/g);
  if (!parts || parts.join('').replace(/\s/g, '') !== text.replace(/\s/g, '')) return undefined;
  let total = 0;
  for (const p of parts) {
    const m = /^([0-9.]+)\s*([a-z]+)$/.exec(p)!;
    const unit = USEC[m[2]!];
    if (unit === undefined) return undefined;
    total += Number(m[1]) * unit;
  }
  return total;
}

function parseOne(name: RlimitName, text: string): bigint | null | undefined {
  if (text === 'infinity') return null;
  if (SIZES.includes(name)) {
    const m = /^([0-9]+(?:\.[0-9]+)?)([KMGTPE]?)$/.exec(text);
    if (!m) return undefined;
    return BigInt(Math.floor(Number(m[1]) * 1024 ** ('KMGTPE'.indexOf(m[2]!) + 1)));
  }
  if (name === 'CPU') {
    const us = parseTimespan(text, 1e6);
    return us === undefined ? undefined : BigInt(Math.ceil(us / 1e6));
  }
  if (name === 'RTTIME') {
    const us = parseTimespan(text, 1);
    return us === undefined ? undefined : BigInt(Math.round(us));
  }
  if (name === 'NICE') {
    const level = /^[+-][0-9]+$/.exec(text);
    if (level) {
      const n = Number(text);
      return n < -20 || n > 19 ? undefined : BigInt(20 - n);
    }
    return /^[0-9]+$/.test(text) && Number(text) <= 40 ? BigInt(text) : undefined;
  }
  return /^[0-9]+$/.test(text) ? BigInt(text) : undefined;
}

/** "SOFT[:HARD]" for one resource; throws ValueError naming the value as nspawn does. */
export function parseRlimitValue(name: RlimitName, text: string): Rlimit {
  const bad = new ValueError(`failed to parse resource limit ${name}: '${text}'`);
  const [softText = '', hardText, extra] = text.split(':');
  if (extra !== undefined || softText === '' || hardText === '') throw bad;
  const soft = parseOne(name, softText);
  const hard = hardText === undefined ? soft : parseOne(name, hardText);
  if (soft === undefined || hard === undefined) throw bad;
  if (hard !== null && (soft === null || soft > hard)) throw bad;
  return { soft, hard };
}

/** --rlimit=NAME=VALUE */
export function parseRlimitAssignment(text: string): [RlimitName, Rlimit] {
  const eq = text.indexOf('=');
  if (eq < 0) throw new ValueError(`expected NAME=VALUE, got '${text}'`);
  const name = rlimitFromName(text.slice(0, eq));
  if (name === undefined) throw new ValueError(`unknown resource limit '${text.slice(0, eq)}'`);
  return [name, parseRlimitValue(name, text.slice(eq + 1))];
}

/** --oom-score-adjust=N / OOMScoreAdjust=: -1000..1000. */
export function parseOomScoreAdjust(text: string): number {
  if (!/^[+-]?[0-9]+$/.test(text) || Math.abs(Number(text)) > 1000) throw new ValueError(`invalid OOM score adjustment '${text}' (-1000..1000)`);
  return Number(text);
}
