import { test } from 'node:test';
import assert from 'node:assert/strict';
import { netConfig, parseIPv4, formatIPv4, parseIPv6, formatIPv6, slotSubnet, slotCount } from '../../src/net/config.js';
import { parsePortForward, portForwardRules, assertNoDuplicatePorts } from '../../src/net/ports.js';

test('address parsing and formatting', () => {
  assert.equal(parseIPv4('10.247.0.1'), 0x0af70001);
  assert.equal(parseIPv4('256.0.0.1'), null);
  assert.equal(formatIPv4(0x0af70001), '10.247.0.1');
  assert.equal(parseIPv6('fd6d:6374:6c00::'), 0xfd6d63746c00n << 80n);
  assert.equal(parseIPv6('fd00::1::2'), null);
  assert.equal(formatIPv6(0xfd6d63746c00n << 80n | 2n), 'fd6d:6374:6c00::2');
  assert.equal(formatIPv6((0xfd6d63746c00n << 80n) | (5n << 64n) | 1n), 'fd6d:6374:6c00:5::1');
  assert.equal(formatIPv6(1n), '::1');
});

test('pool configuration: defaults, overrides, bad values', () => {
  const d = netConfig({});
  assert.equal(d.table, 'mctl');
  assert.equal(d.stateDir, '/run/mctl/net');
  assert.equal(slotCount(d), 4096);
  const s = slotSubnet(d, 3, 1);
  assert.equal(formatIPv4(s.net4), '10.247.0.48');
  assert.equal(s.prefix4, 28);
  assert.equal(slotSubnet(d, 16, 16).prefix4, 24);
  assert.throws(() => netConfig({ MCTL_NET_POOL4: '10.0.0.1/16' }), /host bits set/);
  assert.throws(() => netConfig({ MCTL_NET_POOL4: '10.0.0.0/30' }), /invalid IPv4 pool/);
  assert.throws(() => netConfig({ MCTL_NET_POOL6: '2001:db8::/48' }), /invalid IPv6 pool/);
  assert.throws(() => netConfig({ MCTL_NET_TABLE: 'no spaces' }), /invalid nftables table/);
});

test('--port parsing and the rules it becomes', () => {
  assert.deepEqual(parsePortForward('8080'), { protocol: 'tcp', hostPort: 8080, containerPort: 8080 });
  assert.deepEqual(parsePortForward('udp:53:5353'), { protocol: 'udp', hostPort: 53, containerPort: 5353 });
  for (const bad of ['', '0', '65536', 'x', 'icmp:1', '1:2:3', 'tcp:', '80:']) assert.throws(() => parsePortForward(bad), /invalid --port/, bad);
  assert.throws(() => assertNoDuplicatePorts([parsePortForward('80'), parsePortForward('tcp:80:81')]), /given twice/);
  assertNoDuplicatePorts([parsePortForward('80'), parsePortForward('udp:80')]);
  const rules = portForwardRules([parsePortForward('8080:80')], { ipv4: '10.0.0.2', ipv6: 'fd00::2', hostIf: 've-x' });
  const text = rules.map((r) => `${r.chain}: ${r.rule}`);
  assert.ok(text.includes('output: meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.0.0.2:80'), 'IPv4 output DNAT covers 127.0.0.1');
  assert.ok(text.some((t) => t.startsWith('output: meta nfproto ipv6 ip6 daddr != ::1 ')), '::1 is left alone');
  assert.ok(text.includes('postrouting: oifname "ve-x" ip saddr 127.0.0.0/8 masquerade'));
  assert.equal(rules.filter((r) => r.chain === 'prerouting').length, 2);
});
