// Unit tests of mctl's pure pieces: formatting, argv preprocessing, exit markers, ^] detection,
// property printing, and the unit file's launcher options.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import dbus from 'dbus-next';
import { formatBytes, parseSize, formatAddress, parseSignal, parseBoolean, formatRelative, UINT64_MAX } from '../../src/cli/format.js';
import { preprocessArgv } from '../../src/cli/argv.js';
import { ExitMarkerFilter } from '../../src/cli/container-exec.js';
import { escapeDetector } from '../../src/cli/pty-forward.js';
import { renderProperties, propertiesJson } from '../../src/cli/properties.js';
import { renderTable, painter, toJson } from '../../src/cli/output.js';
import { splitTarget } from '../../src/cli/commands/interactive.js';
import { detachedArgs, STOCK_NSPAWN_ARGS, UNIT_NSPAWN_ARGS, WITHHELD_NSPAWN_ARGS } from '../../src/cli/detached-start.js';
import { describeBusError } from '../../src/cli/session.js';

test('sizes are printed and parsed 1024-based like systemd', () => {
  assert.equal(formatBytes(0n), '0B');
  assert.equal(formatBytes(1023n), '1023B');
  assert.equal(formatBytes(1536n), '1.5K');
  assert.equal(formatBytes(5n * 1024n ** 3n), '5G');
  assert.equal(formatBytes(UINT64_MAX), '-');
  assert.equal(parseSize('10G'), 10n * 1024n ** 3n);
  assert.equal(parseSize('1.5M'), 1536n * 1024n);
  assert.equal(parseSize('4096'), 4096n);
  assert.equal(parseSize('-'), UINT64_MAX);
  assert.throws(() => parseSize('ten'), /invalid size/);
});

test('addresses: IPv4 dotted, IPv6 with :: compression', () => {
  assert.equal(formatAddress(2, [10, 0, 0, 2]), '10.0.0.2');
  const v6 = Buffer.alloc(16);
  v6.writeUInt16BE(0xfe80, 0);
  v6.writeUInt16BE(0x1, 14);
  assert.equal(formatAddress(10, v6), 'fe80::1');
  assert.equal(formatAddress(10, Buffer.from('20010db8000000010000000000000001', 'hex')), '2001:db8:0:1::1');
});

test('signals by name, number and RTMIN+N; booleans', () => {
  assert.equal(parseSignal('SIGTERM'), 15);
  assert.equal(parseSignal('kill'), 9);
  assert.equal(parseSignal('2'), 2);
  assert.equal(parseSignal('RTMIN+4'), 38);
  assert.throws(() => parseSignal('SIGNOPE'), /invalid signal/);
  assert.throws(() => parseSignal('99'), /invalid signal/);
  assert.equal(parseBoolean('yes'), true);
  assert.equal(parseBoolean('off'), false);
  assert.throws(() => parseBoolean('maybe'));
});

test('relative timestamps', () => {
  const now = 1_700_000_000_000;
  assert.equal(formatRelative(BigInt(now - 5 * 60_000) * 1000n, now), '5min ago');
  assert.equal(formatRelative(BigInt(now - 3_720_000) * 1000n, now), '1h 2min ago');
  assert.equal(formatRelative(0n, now), 'n/a');
});

test('argv: default verb list, shell command split before its own options', () => {
  assert.deepEqual(preprocessArgv([]), ['list']);
  assert.deepEqual(preprocessArgv(['-o', 'json']), ['-o', 'json', 'list']);
  assert.deepEqual(preprocessArgv(['--help']), ['--help']);
  assert.deepEqual(preprocessArgv(['shell', 'box', '/bin/sh', '-c', 'exit 7']), ['shell', 'box', '--', '/bin/sh', '-c', 'exit 7']);
  assert.deepEqual(preprocessArgv(['-q', 'shell', '-E', 'A=1', 'root@box', 'ls', '--version']), ['-q', 'shell', '-E', 'A=1', 'root@box', '--', 'ls', '--version']);
  assert.deepEqual(preprocessArgv(['shell', 'box']), ['shell', 'box']);
  assert.deepEqual(preprocessArgv(['status', 'box']), ['status', 'box']);
});

test('shell target: USER@NAME and --uid', () => {
  assert.deepEqual(splitTarget('alice@box', undefined), { user: 'alice', machine: 'box' });
  assert.deepEqual(splitTarget('box', undefined), { user: 'root', machine: 'box' });
  assert.deepEqual(splitTarget(undefined, undefined), { user: 'root', machine: '.host' });
  assert.deepEqual(splitTarget('alice@', undefined), { user: 'alice', machine: '.host' });
  assert.deepEqual(splitTarget('alice@box', 'bob'), { user: 'bob', machine: 'box' });
});

test('exit marker is stripped from the PTY stream, also when split across chunks', () => {
  const f = new ExitMarkerFilter();
  const full = Buffer.from('hello\r\n\x1b]7770;mctl-exit=42\x07');
  let out = '';
  for (let i = 0; i < full.length; i += 3) out += f.filter(full.subarray(i, i + 3)).toString('latin1');
  assert.equal(out, 'hello\r\n');
  assert.equal(f.status, 42);
  const g = new ExitMarkerFilter();
  assert.equal(g.filter(Buffer.from('plain \x1b[1mtext\x1b[0m')).toString(), 'plain \x1b[1mtext\x1b[0m');
  assert.equal(g.status, undefined);
});

test('^] three times within a second leaves; slower presses do not', () => {
  let t = 0;
  const d = escapeDetector(() => t);
  assert.equal(d(Buffer.from([0x1d])), false);
  t = 300;
  assert.equal(d(Buffer.from([0x1d])), false);
  t = 600;
  assert.equal(d(Buffer.from([0x1d])), true);
  const slow = escapeDetector(() => t);
  for (const at of [0, 700, 1400]) {
    t = at;
    assert.equal(slow(Buffer.from([0x1d])), false);
  }
  const typed = escapeDetector(() => 0);
  assert.equal(typed(Buffer.from([0x1d, 0x61, 0x1d, 0x1d])), false);
  assert.equal(typed(Buffer.from([0x1d, 0x1d, 0x1d])), true);
});

test('show: NAME=VALUE sorted, empties hidden unless -a, -p and --value', () => {
  const V = dbus.Variant;
  const props = {
    Name: new V('s', 'box'),
    Id: new V('ay', Buffer.from('00112233445566778899aabbccddeeff', 'hex')),
    Leader: new V('u', 42),
    NetworkInterfaces: new V('ai', [3, 5]),
    RootDirectory: new V('s', ''),
    Timestamp: new V('t', 0n),
  };
  assert.equal(renderProperties(props, { properties: [], all: false, valueOnly: false }), 'Id=00112233445566778899aabbccddeeff\nLeader=42\nName=box\nNetworkInterfaces=3 5\n');
  assert.match(renderProperties(props, { properties: [], all: true, valueOnly: false }), /RootDirectory=\n/);
  assert.equal(renderProperties(props, { properties: ['Leader', 'Name'], all: false, valueOnly: true }), '42\nbox\n');
  assert.deepEqual(propertiesJson(props, { properties: ['Id', 'NetworkInterfaces'] }), { Id: '00112233445566778899aabbccddeeff', NetworkInterfaces: [3, 5] });
});

test('tables: aligned columns, legend optional, no colour when disabled', () => {
  const p = painter(false);
  assert.equal(renderTable(['A', 'BB'], [['xxx', 'y']], { legend: true, paint: p }), 'A   BB\nxxx y\n');
  assert.equal(renderTable(['A', 'BB'], [['xxx', 'y']], { legend: false, paint: p }), 'xxx y\n');
  assert.equal(painter(true).bold('x'), '\x1b[1mx\x1b[0m');
  assert.equal(toJson({ a: 1n, b: 2n ** 64n - 1n }, false), '{"a":1,"b":"18446744073709551615"}');
});

test('D-Bus errors become one line with a hint', () => {
  const e = describeBusError({ type: 'org.freedesktop.machine1.NoSuchMachine', text: "No machine 'foo' known" }, { machine: 'foo' });
  assert.equal(e.message, "no machine 'foo'");
  assert.equal(e.hint, 'see mctl list');
  const a = describeBusError({ type: 'org.freedesktop.DBus.Error.AccessDenied', text: 'Access denied\nmore' }, { action: 'terminate x' });
  assert.equal(a.message, 'terminate x: permission denied: Access denied');
});

test('units/container@.service runs the launcher with what --help supports of systemd-nspawn@.service', () => {
  const unit = readFileSync(new URL('../../units/container@.service', import.meta.url), 'utf8');
  const exec = /^ExecStart=(\S+) (.*)$/m.exec(unit);
  assert.ok(exec, 'ExecStart present');
  const args = (exec[2] as string).split(' ');
  assert.equal(args[args.length - 1], '--machine=%i');
  // The unit passes the stock unit's options in order, minus the withheld ones (each tracked in a comment).
  assert.deepEqual(args.slice(0, -1), [...UNIT_NSPAWN_ARGS]);
  assert.deepEqual([...STOCK_NSPAWN_ARGS].filter((a) => !args.includes(a)), [...WITHHELD_NSPAWN_ARGS]);
  for (const withheld of WITHHELD_NSPAWN_ARGS) assert.match(unit, new RegExp(`^# TRACKED, NOT DROPPED: ${withheld} `, 'm'));
  // Everything the unit passes is an option the launcher's --help lists (assembled from src/nspawn).
  const dir = new URL('../../src/nspawn/', import.meta.url);
  const help = readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => readFileSync(new URL(f, dir), 'utf8')).join('\n');
  assert.deepEqual(detachedArgs(help).missing, [], 'the launcher lacks options the unit passes');
  for (const key of ['Type=notify', 'KillMode=mixed', 'Slice=machine.slice', 'Delegate=yes', 'RestartForceExitStatus=133', 'DevicePolicy=closed', 'WantedBy=machines.target']) {
    assert.match(unit, new RegExp(`^${key}$`, 'm'));
  }
});
