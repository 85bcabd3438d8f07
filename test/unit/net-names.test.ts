import { test } from 'node:test';
import assert from 'node:assert/strict';
import { siphash24, hexKey } from '../../src/net/siphash.js';
import { shortenIfname, hostVethName, zoneBridgeName, generateMac, MAC_KEYS } from '../../src/net/names.js';

const refKey = Uint8Array.from({ length: 16 }, (_, i) => i);
const refMsg = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => i);

test('siphash24 matches the reference vectors of the SipHash paper', () => {
  // vectors.h of the reference implementation: key 00..0f, message 00..(n-1)
  assert.equal(siphash24(refMsg(0), refKey), 0x726fdb47dd0e0e31n);
  assert.equal(siphash24(refMsg(1), refKey), 0x74f839c593dc67fdn);
  assert.equal(siphash24(refMsg(7), refKey), 0xab0200f58b01d137n);
  assert.equal(siphash24(refMsg(8), refKey), 0x93f5f5799a932462n);
  assert.equal(siphash24(refMsg(15), refKey), 0xa129ca6149be45e5n);
  assert.equal(siphash24(refMsg(63), refKey), 0x958a324ceb064572n);
});

test('siphash24 rejects keys of the wrong size', () => {
  assert.throws(() => siphash24('x', new Uint8Array(8)), /16 bytes/);
  assert.throws(() => hexKey('abc'), /bad 128-bit key/);
});

test('interface names: short names unchanged, long ones shortened like nspawn 252', () => {
  assert.deepEqual(shortenIfname('ve-debian'), { name: 've-debian' });
  assert.deepEqual(shortenIfname('ve-123456789012'), { name: 've-123456789012' });
  // Observed from stock systemd-nspawn 252 on this project's CI host:
  // "Network interface name 've-averyveryverylongname-x' has been changed to 've-averyvern8K6'"
  assert.deepEqual(shortenIfname('ve-averyveryverylongname-x'), { name: 've-averyvern8K6', altName: 've-averyveryverylongname-x' });
  assert.equal(hostVethName('averyveryverylongname-x', 'veth').name, 've-averyvern8K6');
  assert.equal(hostVethName('foo', 'zone-member').name, 'vb-foo');
  assert.equal(zoneBridgeName('lab').name, 'vz-lab');
  const a = shortenIfname('vz-aaaaaaaaaaaaaaa1').name;
  const b = shortenIfname('vz-aaaaaaaaaaaaaaa2').name;
  assert.equal(a.length, 15);
  assert.notEqual(a, b);
});

test('MAC addresses match stock systemd-nspawn 252 for the same machine ID and name', () => {
  // Read off `ip link` while stock nspawn ran `-M shortm --network-veth --network-veth-extra=xtra0:inx0`
  // on a host with this machine ID.
  const id = Buffer.from('3d1219c7c4c5404aaa1f6d2a48adfda4', 'hex');
  assert.equal(generateMac('shortm', MAC_KEYS.host, 0, id), 'ca:01:ba:2d:84:7d');
  assert.equal(generateMac('shortm', MAC_KEYS.container, 0, id), '26:d3:29:a4:f2:2d');
  assert.equal(generateMac('shortm', MAC_KEYS.extraHost, 0, id), '22:f0:a3:c9:2a:39');
  assert.equal(generateMac('shortm', MAC_KEYS.extraContainer, 0, id), '76:67:5d:da:ac:37');
  const withIdx = generateMac('shortm', MAC_KEYS.extraHost, 1, id);
  assert.notEqual(withIdx, '22:f0:a3:c9:2a:39');
  const first = parseInt(withIdx.slice(0, 2), 16);
  assert.equal(first & 1, 0, 'multicast bit cleared');
  assert.equal(first & 2, 2, 'locally administered bit set');
});
