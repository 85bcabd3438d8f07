// SipHash-2-4 (Aumasson & Bernstein), the keyed hash systemd uses for interface names, MAC
// addresses and the first guess of a user-namespace range. Values must match systemd's bit for
// bit, so this follows the reference algorithm: little-endian words, 64-bit result.
const MASK = 0xffffffffffffffffn;

function rotl(x: bigint, b: bigint): bigint {
  return ((x << b) | (x >> (64n - b))) & MASK;
}

function readLe64(buf: Uint8Array, off: number): bigint {
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(buf[off + i] ?? 0);
  return v;
}

/** SipHash-2-4 of `data` under a 16-byte key, as an unsigned 64-bit integer. */
export function siphash24(data: Uint8Array | string, key: Uint8Array): bigint {
  if (key.length !== 16) throw new Error(`siphash24: key must be 16 bytes, got ${key.length}`);
  const msg = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const k0 = readLe64(key, 0);
  const k1 = readLe64(key, 8);
  let v0 = 0x736f6d6570736575n ^ k0;
  let v1 = 0x646f72616e646f6dn ^ k1;
  let v2 = 0x6c7967656e657261n ^ k0;
  let v3 = 0x7465646279746573n ^ k1;
  const round = (): void => {
    v0 = (v0 + v1) & MASK; v1 = rotl(v1, 13n); v1 ^= v0; v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & MASK; v3 = rotl(v3, 16n); v3 ^= v2;
    v0 = (v0 + v3) & MASK; v3 = rotl(v3, 21n); v3 ^= v0;
    v2 = (v2 + v1) & MASK; v1 = rotl(v1, 17n); v1 ^= v2; v2 = rotl(v2, 32n);
  };
  const full = msg.length - (msg.length % 8);
  for (let off = 0; off < full; off += 8) {
    const m = readLe64(msg, off);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  // Last block: the remaining bytes, with the message length (mod 256) in the top byte.
  let b = BigInt(msg.length & 0xff) << 56n;
  for (let i = msg.length - 1; i >= full; i--) b |= BigInt(msg[i] ?? 0) << BigInt(8 * (i - full));
  v3 ^= b;
  round();
  round();
  v0 ^= b;
  v2 ^= 0xffn;
  round();
  round();
  round();
  round();
  return (v0 ^ v1 ^ v2 ^ v3) & MASK;
}

/** A 128-bit key written the way systemd's SD_ID128_MAKE spells it: 32 hex digits. */
export function hexKey(hex: string): Uint8Array {
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new Error(`bad 128-bit key '${hex}'`);
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

/** The 64-bit result as the 8 bytes systemd stores it in (htole64). */
export function le64Bytes(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v & MASK);
  return b;
}
