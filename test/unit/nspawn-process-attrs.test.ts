// --cpu-affinity / CPUAffinity=, --personality / Personality= and --suppress-sync / SuppressSync=
// as systemd-nspawn 252 reads them (checked against the stock binary: lists, ranges, the 8191
// limit, an empty value resetting).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatCpuList, parseCpuAffinity, parsePersonality } from '../../src/nspawn/process-attrs.js';
import { mergeSettings, parseSettings } from '../../src/nspawn/settings.js';

test('CPU lists: numbers and ranges, commas or whitespace, sorted and deduplicated', () => {
  assert.deepEqual(parseCpuAffinity('1,0'), [0, 1]);
  assert.deepEqual(parseCpuAffinity('0 2-4,3'), [0, 2, 3, 4]);
  assert.deepEqual(parseCpuAffinity('8191'), [8191]);
  assert.deepEqual(parseCpuAffinity(''), [], 'empty: no affinity');
  for (const bad of ['x', '1-', '-1', '3-1', '1.5', '0x1']) assert.throws(() => parseCpuAffinity(bad), /invalid CPU affinity/, bad);
  assert.throws(() => parseCpuAffinity('8192'), /CPU 8192 is out of range/);
  assert.equal(formatCpuList([0, 1, 2, 5, 7, 8]), '0-2,5,7-8');
  assert.equal(formatCpuList([3]), '3');
});

test('personality: x86 and x86-64 only', () => {
  assert.equal(parsePersonality('x86'), 'x86');
  assert.equal(parsePersonality('x86-64'), 'x86-64');
  for (const bad of ['x86_64', 'arm64', '']) assert.throws(() => parsePersonality(bad), /unknown personality/, bad);
});

test('CPUAffinity= repeated extends, empty resets; the command line wins unless override', () => {
  const file = parseSettings('[Exec]\nCPUAffinity=0\nCPUAffinity=2-3\nPersonality=x86\n', '/etc/systemd/nspawn/x.nspawn', true);
  assert.deepEqual(file.options.cpuAffinity, [0, 2, 3]);
  assert.equal(file.options.personality, 'x86');
  assert.deepEqual(parseSettings('[Exec]\nCPUAffinity=0\nCPUAffinity=\n', '/etc/systemd/nspawn/x.nspawn', true).options.cpuAffinity, []);
  assert.deepEqual(mergeSettings({ cpuAffinity: [1] }, file, 'yes').cpuAffinity, [1]);
  assert.deepEqual(mergeSettings({ cpuAffinity: [1] }, file, 'override').cpuAffinity, [0, 2, 3]);
  assert.deepEqual(file.unsupported, []);
  // not from a file next to the image: CPUAffinity= is among nspawn's untrusted-ignored keys
  assert.equal(parseSettings('[Exec]\nCPUAffinity=0\n', '/var/lib/machines/x.nspawn', false).options.cpuAffinity, undefined);
});

test('SuppressSync= and --suppress-sync: a boolean', async () => {
  const { parseSuppressSync } = await import('../../src/nspawn/options.js');
  assert.equal(parseSuppressSync('yes'), true);
  assert.equal(parseSuppressSync('0'), false);
  assert.throws(() => parseSuppressSync('maybe'), /not a boolean/);
  assert.equal(parseSettings('[Exec]\nSuppressSync=yes\n', '/var/lib/machines/x.nspawn', false).options.suppressSync, true, 'allowed in an untrusted file, as in nspawn');
});
