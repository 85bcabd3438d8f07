// --private-users= / --private-users-ownership= parsing and the decisions made before a start
// (which range is known up front, which ownership `auto` means), without root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePrivateUsers, parseOwnership, fixedRange, resolveOwnership } from '../../src/nspawn/userns.js';

test('--private-users and --private-users-ownership parsing', () => {
  assert.deepEqual(parsePrivateUsers('no'), { mode: 'no' });
  assert.deepEqual(parsePrivateUsers('false'), { mode: 'no' });
  assert.deepEqual(parsePrivateUsers('yes'), { mode: 'yes' });
  assert.deepEqual(parsePrivateUsers('pick'), { mode: 'pick' });
  assert.deepEqual(parsePrivateUsers('identity'), { mode: 'identity' });
  assert.deepEqual(parsePrivateUsers('1000000'), { mode: 'fixed', shift: 1000000, range: 65536 });
  assert.deepEqual(parsePrivateUsers('1000000:1000'), { mode: 'fixed', shift: 1000000, range: 1000 });
  for (const bad of ['', 'maybe', '-5', '1:2:3', '10:0', '4294967290:100', 'x:5']) assert.throws(() => parsePrivateUsers(bad), /invalid --private-users/, bad);
  for (const o of ['off', 'chown', 'map', 'auto'] as const) assert.equal(parseOwnership(o), o);
  assert.throws(() => parseOwnership('idmap'), /invalid --private-users-ownership 'idmap'/);
});

test('ranges known before the start: identity, fixed, yes (from the tree owner); pick is left to the helper', () => {
  assert.deepEqual(fixedRange({ mode: 'identity' }, '/'), { shift: 0, range: 65536 });
  assert.deepEqual(fixedRange({ mode: 'fixed', shift: 0x70000, range: 10 }, '/'), { shift: 0x70000, range: 10 });
  assert.deepEqual(fixedRange({ mode: 'yes' }, '/'), { shift: 0, range: 65536 }, '/ is owned by 0:0');
  assert.equal(fixedRange({ mode: 'pick' }, '/'), null);
});

test('ownership: explicit modes stay; auto is off for identity, else map where idmapped mounts work', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mctl-userns-unit-'));
  try {
    for (const m of ['off', 'chown', 'map'] as const) assert.equal(await resolveOwnership(m, dir, null), m);
    assert.equal(await resolveOwnership('auto', dir, 0), 'off');
    // This tree (in the temporary directory) is unshifted: auto means map on file systems
    // that take idmapped mounts (ext4, xfs, btrfs, tmpfs on this kernel), else chown.
    assert.match(await resolveOwnership('auto', dir, null), /^(map|chown)$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
