// Where this part keeps its state and which addresses it hands out. Every knob has an
// environment override so tests (and admins) can use their own table, pool and state dir.
import { UserError } from '../common/errors.js';
import { isValidTableName } from './nft.js';

export interface NetConfig {
  /** State and lock files (tmpfs: a reboot forgets every allocation, as it should). */
  stateDir: string;
  /** Name of our nftables table (family inet). */
  table: string;
  /** IPv4 pool, carved into /28 slots. */
  pool4: { base: number; prefix: number };
  /** IPv6 ULA /48; slot N gets the /64 with subnet id N. */
  pool6: { base: bigint };
}

export const SLOT_PREFIX4 = 28;

export function parseIPv4(text: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return (((parts[0] ?? 0) << 24) | ((parts[1] ?? 0) << 16) | ((parts[2] ?? 0) << 8) | (parts[3] ?? 0)) >>> 0;
}

export function formatIPv4(v: number): string {
  return [24, 16, 8, 0].map((s) => (v >>> s) & 255).join('.');
}

export function parseIPv6(text: string): bigint | null {
  if (!/^[0-9a-fA-F:]+$/.test(text) || text.split('::').length > 2) return null;
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const missing = 8 - h.length - t.length;
  if ((tail === undefined && missing !== 0) || missing < 0) return null;
  const groups = [...h, ...Array<string>(tail === undefined ? 0 : missing).fill('0'), ...t];
  let v = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    v = (v << 16n) | BigInt(parseInt(g, 16));
  }
  return v;
}

export function formatIPv6(v: bigint): string {
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((v >> BigInt(16 * i)) & 0xffffn).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function parsePool4(text: string): NetConfig['pool4'] {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text);
  const base = m ? parseIPv4(m[1] ?? '') : null;
  const prefix = m ? Number(m[2]) : NaN;
  if (base === null || !(prefix >= 12 && prefix <= SLOT_PREFIX4)) {
    throw new UserError(`invalid IPv4 pool '${text}'`, { hint: 'expected A.B.C.D/N with N between 12 and 28' });
  }
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((base & mask) >>> 0 !== base) throw new UserError(`invalid IPv4 pool '${text}': host bits set`);
  return { base, prefix };
}

function parsePool6(text: string): NetConfig['pool6'] {
  const m = /^([0-9a-fA-F:]+)\/48$/.exec(text);
  const base = m ? parseIPv6(m[1] ?? '') : null;
  if (base === null || base >> 121n !== 0x7en || (base & ((1n << 80n) - 1n)) !== 0n) {
    throw new UserError(`invalid IPv6 pool '${text}'`, { hint: 'expected a ULA /48 such as fd6d:6374:6c00::/48' });
  }
  return { base };
}

export function netConfig(env: NodeJS.ProcessEnv = process.env): NetConfig {
  const table = env['MCTL_NET_TABLE'] || 'mctl';
  if (!isValidTableName(table)) throw new UserError(`invalid nftables table name '${table}'`);
  return {
    stateDir: env['MCTL_NET_STATE_DIR'] || '/run/mctl/net',
    table,
    pool4: parsePool4(env['MCTL_NET_POOL4'] || '10.247.0.0/16'),
    pool6: parsePool6(env['MCTL_NET_POOL6'] || 'fd6d:6374:6c00::/48'),
  };
}

export function slotCount(cfg: NetConfig): number {
  return Math.min(2 ** (SLOT_PREFIX4 - cfg.pool4.prefix), 65536);
}

export interface Subnet {
  /** Network address of the IPv4 subnet, its prefix length; the IPv6 /64. */
  net4: number;
  prefix4: number;
  net6: bigint;
}

/** The subnet of `slots` consecutive slots starting at `slot` (zones use 16 slots = a /24). */
export function slotSubnet(cfg: NetConfig, slot: number, slots: number): Subnet {
  const prefix4 = SLOT_PREFIX4 - Math.log2(slots);
  return { net4: (cfg.pool4.base + slot * 16) >>> 0, prefix4, net6: cfg.pool6.base | (BigInt(slot) << 64n) };
}
