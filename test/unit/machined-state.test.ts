// State files in systemd-machined's format, and the cgroup path helpers the backends rely on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cEscape, cUnescape, parseMachine, serializeMachine } from '../../src/machined/state-file.js';
import { sliceCgroupPath, scopeUnitName } from '../../src/machined/scope/cgroupfs.js';
import { unitOfCgroup } from '../../src/sys/cgroup.js';
import type { Machine } from '../../src/machined/machine.js';

const machine: Machine = {
  name: 'foo-bar',
  id: Buffer.from('00112233445566778899aabbccddeeff', 'hex'),
  service: 'systemd-nspawn',
  class: 'container',
  leader: 4242,
  leaderStartTime: '123456',
  rootDirectory: '/var/lib/machines/foo bar\n"x"',
  netifs: [5, 7],
  unit: 'machine-foo\\x2dbar.scope',
  cgroup: '/machine.slice/machine-foo\\x2dbar.scope',
  ownsScope: true,
  scopeJob: '',
  realtimeUsec: 1700000000000000n,
  monotonicUsec: 123456789n,
  stopping: false,
  started: true,
};

test('serialize → parse round trip keeps every field', () => {
  const text = serializeMachine(machine);
  assert.match(text, /^# This is private data\. Do not parse\.$/m);
  assert.match(text, /^SCOPE=machine-foo\\\\x2dbar\.scope$/m);
  assert.match(text, /^NETIF="5 7"$/m);
  assert.match(text, /^ID=00112233445566778899aabbccddeeff$/m);
  const back = parseMachine('foo-bar', text);
  assert.ok(back);
  assert.deepEqual({ ...back, started: true }, machine);
});

test('files whose NAME does not match, or with invalid names, are refused', () => {
  assert.equal(parseMachine('other', serializeMachine(machine)), undefined);
  assert.equal(parseMachine('a_b', 'NAME=a_b\n'), undefined);
  const minimal = parseMachine('m1', 'NAME=m1\nLEADER=notanumber\nID=zz\n');
  assert.equal(minimal?.leader, 0);
  assert.equal(minimal?.id.length, 0);
});

test('C escaping round-trips control characters, quotes and UTF-8', () => {
  for (const s of ['plain', 'a\\b', 'tab\there', 'new\nline', '"q"', "'s'", 'ünï', '\x01\x7f']) assert.equal(cUnescape(cEscape(s)), s);
});

test('slices nest like systemd, scope names are unit-escaped', () => {
  assert.equal(sliceCgroupPath('machine.slice'), '/machine.slice');
  assert.equal(sliceCgroupPath('a-b-c.slice'), '/a.slice/a-b.slice/a-b-c.slice');
  assert.equal(scopeUnitName('foo-bar.baz'), 'machine-foo\\x2dbar.baz.scope');
  assert.equal(unitOfCgroup('/machine.slice/systemd-nspawn@foo.service/payload/init.scope'), 'systemd-nspawn@foo.service');
  assert.equal(unitOfCgroup('/machine.slice/machine-x.scope'), 'machine-x.scope');
  assert.equal(unitOfCgroup('/'), undefined);
  assert.equal(unitOfCgroup('/user.slice'), undefined);
  assert.equal(unitOfCgroup('/process_api/abc'), undefined);
});
