// The rtnetlink message encoding of src/sys/netlink.ts, without a socket: attribute framing and
// padding, nesting, the fixed headers, and address bytes (what the kernel would reject or
// misread if any offset were off by one).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attr, encodeAttrs, decodeAttrs, ifinfomsg, AF, IFLA } from '../../src/sys/netlink.js';

test('attributes: length excludes padding, payload padded to 4 bytes, nested ones framed recursively', () => {
  const buf = encodeAttrs([attr.str(IFLA.IFNAME, 've-x'), attr.u32(IFLA.MASTER, 7)]);
  // "ve-x\0" = 5 bytes: header 4 + 5 = len 9, padded to 12; then u32: len 8.
  assert.equal(buf.length, 12 + 8);
  assert.equal(buf.readUInt16LE(0), 9);
  assert.equal(buf.readUInt16LE(2), IFLA.IFNAME);
  assert.equal(buf.subarray(4, 9).toString('latin1'), 've-x\0');
  assert.deepEqual([...buf.subarray(9, 12)], [0, 0, 0]);
  assert.equal(buf.readUInt16LE(12), 8);
  assert.equal(buf.readUInt32LE(16), 7);

  const nested = encodeAttrs([attr.nest(IFLA.LINKINFO, [attr.str(1, 'veth'), attr.nest(2, [attr.u32(1, 42)])])]);
  const outer = decodeAttrs(nested);
  const info = outer.get(IFLA.LINKINFO);
  assert.ok(info);
  const inner = decodeAttrs(info);
  assert.equal(inner.get(1)?.toString('latin1'), 'veth\0');
  assert.equal(decodeAttrs(inner.get(2) ?? Buffer.alloc(0)).get(1)?.readUInt32LE(0), 42);
  assert.equal(nested.readUInt16LE(0), nested.length, 'the outer length covers its padded children');
});

test('decodeAttrs ignores the NLA_F_NESTED flag and stops at a truncated attribute', () => {
  const b = Buffer.from([8, 0, 0x34, 0x80, 1, 2, 3, 4, 200, 0, 1, 0]);
  const m = decodeAttrs(b);
  assert.deepEqual([...m.keys()], [0x34]);
  assert.deepEqual([...(m.get(0x34) ?? [])], [1, 2, 3, 4]);
});

test('ifinfomsg: family, index, flags and change mask at their offsets', () => {
  const h = ifinfomsg(12, 1, 1, AF.BRIDGE);
  assert.equal(h.length, 16);
  assert.equal(h.readUInt8(0), AF.BRIDGE);
  assert.equal(h.readInt32LE(4), 12);
  assert.equal(h.readUInt32LE(8), 1);
  assert.equal(h.readUInt32LE(12), 1);
});
