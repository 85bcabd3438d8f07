import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isValidHostname, isValidMachineName, isValidImageName, cleanupHostname, assertMachineName } from '../../src/common/names.js';
import { busLabelEscape, busLabelUnescape, unitNameEscape } from '../../src/dbus/escape.js';

test('hostname rules follow systemd hostname_is_valid()', () => {
  for (const ok of ['debian', 'foo-bar', 'a.b.c', 'x1', '1abc', 'A'.repeat(64)]) assert.ok(isValidHostname(ok), ok);
  for (const bad of ['', 'foo_bar', '-a', 'a-', 'a..b', '.a', 'a.', 'a b', 'ä', 'A'.repeat(65), 'a/b']) assert.ok(!isValidHostname(bad), bad);
});

test('machine and image names', () => {
  assert.ok(isValidMachineName('.host'));
  assert.ok(!isValidMachineName('.hidden'));
  assert.ok(isValidImageName('.hidden'));
  assert.throws(() => assertMachineName('foo_bar'), /invalid machine name 'foo_bar'/);
});

test('cleanupHostname makes directory names usable', () => {
  assert.equal(cleanupHostname('debian_bookworm'), 'debian-bookworm');
  assert.equal(cleanupHostname('..a..b..'), 'a.b');
  assert.ok(isValidHostname(cleanupHostname('x'.repeat(100))));
});

test('bus label escaping matches systemd', () => {
  assert.equal(busLabelEscape('foo-bar'), 'foo_2dbar');
  assert.equal(busLabelEscape(''), '_');
  assert.equal(busLabelEscape('1abc'), '_31abc');
  assert.equal(busLabelEscape('a1.b'), 'a1_2eb');
  for (const s of ['foo-bar', '1abc', 'a1.b', '', '.host']) assert.equal(busLabelUnescape(busLabelEscape(s)), s);
});

test('unit name escaping', () => {
  assert.equal(unitNameEscape('foo-bar'), 'foo\\x2dbar');
  assert.equal(unitNameEscape('a/b'), 'a-b');
  assert.equal(unitNameEscape('.x'), '\\x2ex');
  assert.equal(unitNameEscape('a b'), 'a\\x20b');
});
