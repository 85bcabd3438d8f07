// UID range picking: nspawn's algorithm with lock files, under real concurrency (10 processes
// picking at the same moment), and --private-users parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync, mkdirSync, chownSync } from 'node:fs';
import { pickUidRange, parsePrivateUsers, parseOwnership, resolveUidRange, UID_BASE_MIN, UID_BASE_MAX, UID_RANGE } from '../../src/nspawn/userns.js';

const userns = new URL('../../src/nspawn/userns.ts', import.meta.url).href;

test('10 launchers picking at the same moment never get overlapping ranges', async () => {
  const dir = mkdtempSync('/tmp/mctl-userns-');
  try {
    const locks = `${dir}/locks`;
    const root = `${dir}/root`;
    mkdirSync(root);
    // All ten share one name and one (shifted) image owner, so their first two candidates collide.
    chownSync(root, 0x200000, 0x200000);
    const script = `
      const { pickUidRange } = await import(${JSON.stringify(userns)});
      const r = pickUidRange('same-name', ${JSON.stringify(root)}, { lockDir: ${JSON.stringify(locks)} });
      process.stdout.write(r.shift + '\\n');
      process.stdin.resume(); process.stdin.on('end', () => process.exit(0));`;
    const kids = Array.from({ length: 10 }, () => spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] }));
    const shifts = await Promise.all(
      kids.map(
        (k) =>
          new Promise<number>((resolve, reject) => {
            let out = '';
            k.stdout?.on('data', (b: Buffer) => {
              out += String(b);
              if (out.endsWith('\n')) resolve(Number(out.trim()));
            });
            k.once('exit', (c) => reject(new Error(`picker exited ${c}`)));
          }),
      ),
    );
    // While all ten still hold their locks:
    assert.equal(new Set(shifts).size, 10, `distinct: ${shifts.map((s) => s.toString(16)).join(' ')}`);
    for (const s of shifts) {
      assert.ok(s >= UID_BASE_MIN && s <= UID_BASE_MAX && s % UID_RANGE === 0, s.toString(16));
    }
    assert.ok(shifts.includes(0x200000), "one got the image owner's range");
    assert.equal(readdirSync(locks).length, 10);
    for (const k of kids) k.stdin?.end();
    await Promise.all(kids.map((k) => new Promise((r) => (k.exitCode !== null ? r(null) : k.once('exit', r)))));
    // Locks die with their holders: the owner's range is free again.
    const again = pickUidRange('other', root, { lockDir: locks });
    assert.equal(again.shift, 0x200000);
    again.lock?.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pick: same name gives the same first guess; a held range is skipped', () => {
  const dir = mkdtempSync('/tmp/mctl-userns-');
  try {
    const a = pickUidRange('t-userns-x', null, { lockDir: dir });
    const b = pickUidRange('t-userns-x', null, { lockDir: dir, random: () => 0x12345678 });
    assert.notEqual(a.shift, b.shift);
    a.lock?.release();
    const c = pickUidRange('t-userns-x', null, { lockDir: dir });
    assert.equal(c.shift, a.shift, 'siphash24(name) guess is stable');
    b.lock?.release();
    c.lock?.release();
    // A root owned by uid 0 (unshifted image) is outside the window: falls through to the hash.
    assert.equal(pickUidRange('t-userns-x', '/', { lockDir: dir }).shift, a.shift);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--private-users and --private-users-ownership parsing', () => {
  assert.deepEqual(parsePrivateUsers('no'), { mode: 'no' });
  assert.deepEqual(parsePrivateUsers('yes'), { mode: 'yes' });
  assert.deepEqual(parsePrivateUsers('pick'), { mode: 'pick' });
  assert.deepEqual(parsePrivateUsers('identity'), { mode: 'identity' });
  assert.deepEqual(parsePrivateUsers('1000000'), { mode: 'fixed', shift: 1000000, range: 65536 });
  assert.deepEqual(parsePrivateUsers('1000000:1000'), { mode: 'fixed', shift: 1000000, range: 1000 });
  for (const bad of ['', 'maybe', '-5', '1:2:3', '10:0', '4294967290:100', 'x:5']) assert.throws(() => parsePrivateUsers(bad), /invalid --private-users/, bad);
  assert.equal(parseOwnership('map'), 'map');
  assert.throws(() => parseOwnership('idmap'), /invalid --private-users-ownership 'idmap'/);
  assert.deepEqual(resolveUidRange({ mode: 'identity' }, 'x', '/'), { shift: 0, range: 65536, lock: null });
  assert.equal(resolveUidRange({ mode: 'no' }, 'x', '/'), null);
});
