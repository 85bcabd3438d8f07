// Host-side interface names and MAC addresses, derived exactly as systemd-nspawn derives them
// (so a container keeps its names and MACs when moved between nspawn and mctl-nspawn, and
// networkd's 80-container-*.network matches them).
import { readFileSync } from 'node:fs';
import { siphash24, hexKey, le64Bytes } from './siphash.js';

export const IFNAMSIZ = 16; // including the NUL: at most 15 visible characters

const SHORTEN_IFNAME_KEY = hexKey('e190a404a8ef4b518cccc33a9f11fca2');
export const MAC_KEYS = {
  host: hexKey('1a376fc746ec450bada3d53106605db1'),
  container: hexKey('c3c4f919b557b21ce6cf1427039ceea2'),
  extraHost: hexKey('48c7f6b7ea9d4c9eb728d4de91d5bf66'),
  extraContainer: hexKey('af501761cef94d35840d2b2054bece59'),
  macvlan: hexKey('00136dbc66834481bb0cf9511f24a66f'),
} as const;

const URLSAFE_B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function urlsafeBase64Char(v: bigint): string {
  return URLSAFE_B64[Number(v & 63n)] ?? 'A';
}

export interface ShortenedName {
  /** The name the kernel gets (at most 15 characters). */
  name: string;
  /** The full name, set as altname, when it had to be shortened. */
  altName?: string;
}

/**
 * nspawn's shorten_ifname(): names longer than 15 characters keep their first 11 characters and
 * get 4 url-safe base64 characters of siphash24(name) (the low 24 bits), so long machine names
 * that share a prefix still get distinct interfaces.
 */
export function shortenIfname(full: string): ShortenedName {
  if (Buffer.byteLength(full) < IFNAMSIZ) return { name: full };
  const h = siphash24(full, SHORTEN_IFNAME_KEY);
  const head = Buffer.from(full).subarray(0, IFNAMSIZ - 5).toString('latin1');
  const tail = [18n, 12n, 6n, 0n].map((s) => urlsafeBase64Char(h >> s)).join('');
  return { name: head + tail, altName: full };
}

export type LinkKind = 'veth' | 'bridge-member' | 'zone-member';

/** `ve-NAME` for a plain veth, `vb-NAME` when the veth joins a bridge or a zone. */
export function hostVethName(machine: string, kind: LinkKind): ShortenedName {
  return shortenIfname(`${kind === 'veth' ? 've-' : 'vb-'}${machine}`);
}

/** `vz-ZONE`, the on-demand bridge of a network zone. */
export function zoneBridgeName(zone: string): ShortenedName {
  return shortenIfname(`vz-${zone}`);
}

/** Zone names follow nspawn: usable as part of an interface name. */
export function isValidZoneName(zone: string): boolean {
  return /^[A-Za-z0-9_.-]+$/.test(zone) && zone.length <= 64 && zone !== '.' && zone !== '..';
}

let hostMachineId: Buffer | undefined;

/** The host's machine ID as the 16 raw bytes sd_id128_get_machine() returns. */
export function readHostMachineId(path = '/etc/machine-id'): Buffer {
  if (hostMachineId && path === '/etc/machine-id') return hostMachineId;
  const text = readFileSync(path, 'utf8').trim();
  if (!/^[0-9a-f]{32}$/.test(text)) throw new Error(`${path}: not a valid machine ID`);
  const id = Buffer.from(text, 'hex');
  if (path === '/etc/machine-id') hostMachineId = id;
  return id;
}

/**
 * nspawn's generate_mac(): siphash24(machine-id ‖ name [‖ le64 idx]) under a per-role key; the
 * first 6 bytes of the little-endian result, multicast bit cleared and locally-administered set.
 */
export function generateMac(machine: string, key: Uint8Array, idx = 0, machineId: Buffer = readHostMachineId()): string {
  const parts: Buffer[] = [machineId, Buffer.from(machine, 'utf8')];
  if (idx > 0) parts.push(le64Bytes(BigInt(idx)));
  const mac = le64Bytes(siphash24(Buffer.concat(parts), key)).subarray(0, 6);
  mac[0] = ((mac[0] ?? 0) & 0xfe) | 0x02;
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
}
