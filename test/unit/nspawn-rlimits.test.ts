// --rlimit / Limit*= values as systemd-nspawn 252 reads them (checked against the stock binary).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseOomScoreAdjust, parseRlimitAssignment, parseRlimitValue, RLIMIT_NAMES } from '../../src/nspawn/rlimits.js';
import { mergeSettings, parseSettings } from '../../src/nspawn/settings.js';

test('resource names follow Linux RLIMIT_* numbering; RLIMIT_ prefix optional, upper case only', () => {
  assert.equal(RLIMIT_NAMES.indexOf('NOFILE'), 7);
  assert.equal(RLIMIT_NAMES.indexOf('RTTIME'), 15);
  assert.deepEqual(parseRlimitAssignment('RLIMIT_NOFILE=10'), ['NOFILE', { soft: 10n, hard: 10n }]);
  assert.throws(() => parseRlimitAssignment('nofile=10'), /unknown resource limit 'nofile'/);
  assert.throws(() => parseRlimitAssignment('NOFILE'), /expected NAME=VALUE/);
});

test('values: soft[:hard], infinity, sizes, time spans, nice levels', () => {
  assert.deepEqual(parseRlimitValue('NOFILE', '100:200'), { soft: 100n, hard: 200n });
  assert.deepEqual(parseRlimitValue('NOFILE', '10:infinity'), { soft: 10n, hard: null });
  assert.deepEqual(parseRlimitValue('CORE', 'infinity'), { soft: null, hard: null });
  assert.deepEqual(parseRlimitValue('AS', '1G'), { soft: 1n << 30n, hard: 1n << 30n });
  assert.deepEqual(parseRlimitValue('CPU', '1.5'), { soft: 2n, hard: 2n }, 'rounded up to seconds');
  assert.deepEqual(parseRlimitValue('CPU', '1min'), { soft: 60n, hard: 60n });
  assert.deepEqual(parseRlimitValue('RTTIME', '1s'), { soft: 1_000_000n, hard: 1_000_000n });
  assert.deepEqual(parseRlimitValue('RTTIME', '250'), { soft: 250n, hard: 250n }, 'plain RTTIME is µs');
  assert.deepEqual(parseRlimitValue('NICE', '-5'), { soft: 25n, hard: 25n });
  assert.deepEqual(parseRlimitValue('NICE', '10'), { soft: 10n, hard: 10n });
  for (const bad of ['5:3', '10:', ':10', '1K', '-1', 'abc', '1:2:3', 'infinity:5']) assert.throws(() => parseRlimitValue('NOFILE', bad), /failed to parse resource limit NOFILE/, bad);
  assert.throws(() => parseRlimitValue('NICE', '41'), /failed to parse/);
  assert.throws(() => parseRlimitValue('CORE', '1X'), /failed to parse/);
});

test('--oom-score-adjust: -1000..1000', () => {
  assert.equal(parseOomScoreAdjust('-1000'), -1000);
  assert.equal(parseOomScoreAdjust('500'), 500);
  for (const bad of ['1001', 'abc', '', '1.5']) assert.throws(() => parseOomScoreAdjust(bad), /invalid OOM score adjustment/);
});

test('Limit*= merge per resource: the command line wins unless --settings=override', () => {
  const file = parseSettings('[Exec]\nLimitNOFILE=300\nLimitCORE=4K\n', '/etc/systemd/nspawn/x.nspawn', true);
  const cmd = { rlimits: { NOFILE: { soft: 50n, hard: 50n } } };
  assert.deepEqual(mergeSettings(cmd, file, 'yes').rlimits, { NOFILE: { soft: 50n, hard: 50n }, CORE: { soft: 4096n, hard: 4096n } });
  assert.deepEqual(mergeSettings(cmd, file, 'override').rlimits, { NOFILE: { soft: 300n, hard: 300n }, CORE: { soft: 4096n, hard: 4096n } });
});
