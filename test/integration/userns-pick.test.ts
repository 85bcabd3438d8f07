// UID range picking, done by the native helper next to the clone: nspawn's algorithm with lock
// files, under real concurrency (10 launchers with one name starting at the same moment), the
// hashed first guess bit for bit as systemd computes it, a held range skipped, a failed start
// releasing its range. Runs the built bin/mctl-nspawn on the read-only Debian tree. (Option
// parsing: test/unit/userns-options.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UID_BASE_MIN, UID_BASE_MAX, UID_RANGE } from '../../src/nspawn/userns.js';
import { siphash24, hexKey } from '../../src/net/siphash.js';
import { LockFile } from '../../src/net/lockfile.js';
import { debianTree } from '../helpers/images.js';

const nspawn = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
// --timezone/--resolv-conf off: the read-only cached tree must never be written.
const common = ['-q', '--register=no', '--console=pipe', '--read-only', '--timezone=off', '--resolv-conf=off', '--private-users=pick', '--private-users-ownership=map'];

/** systemd's first guess for a machine name: siphash24(name) folded into the window. */
function hashedGuess(name: string): number {
  const v = siphash24(name, hexKey('e156e0f04af041af9641cf413394ff72'));
  return Number((v % BigInt(UID_BASE_MAX - UID_BASE_MIN)) + BigInt(UID_BASE_MIN)) & 0xffff0000;
}

function shiftOf(stdout: string): number {
  const [inside, outside, count] = stdout.trim().split('\n')[0]!.trim().split(/\s+/).map(Number);
  assert.equal(inside, 0);
  assert.equal(count, UID_RANGE);
  return outside!;
}

test('10 launchers with one name starting at the same moment get 10 disjoint ranges; locks die with them', async () => {
  const dir = mkdtempSync('/tmp/mctl-userns-');
  try {
    const locks = `${dir}/locks`;
    const gate = `${dir}/gate`;
    mkdirSync(gate);
    const env = { ...process.env, MCTL_UID_LOCK_DIR: locks };
    // Each prints its map, then waits for the gate file, so all ten hold their ranges at once.
    // (The gate is bound onto the tree's existing /mnt: the shared cached tree must not gain a mount point.)
    const kids = Array.from({ length: 10 }, () =>
      spawn(nspawn, [...common, '-M', 't-userns-same', '-D', debianTree(), `--bind-ro=${gate}:/mnt`, '/bin/sh', '-c', 'cat /proc/self/uid_map; while [ ! -e /mnt/go ]; do sleep 0.05; done'], { env, stdio: ['ignore', 'pipe', 'inherit'] }),
    );
    const shifts = await Promise.all(
      kids.map(
        (k) =>
          new Promise<number>((resolve, reject) => {
            let out = '';
            k.stdout?.on('data', (b: Buffer) => {
              out += String(b);
              if (out.includes('\n')) resolve(shiftOf(out));
            });
            k.once('exit', (c) => reject(new Error(`launcher exited ${c} before printing its map`)));
          }),
      ),
    );
    const codes = Promise.all(kids.map((k) => new Promise((r) => (k.exitCode !== null ? r(k.exitCode) : k.once('exit', r)))));
    assert.ok(kids.every((k) => k.exitCode === null), 'all ten still run');
    assert.equal(new Set(shifts).size, 10, `distinct: ${shifts.map((s) => s.toString(16)).join(' ')}`);
    for (const s of shifts) assert.ok(s >= UID_BASE_MIN && s <= UID_BASE_MAX && s % UID_RANGE === 0, s.toString(16));
    assert.ok(shifts.includes(hashedGuess('t-userns-same')), 'one of them got the hashed first guess');
    assert.deepEqual(readdirSync(locks).map(Number).sort(), [...shifts].sort());
    writeFileSync(`${gate}/go`, '');
    assert.deepEqual(await codes, Array(10).fill(0));
    // Each supervisor removed its range's lock file at its end (as systemd's release_lock_file()),
    // so the directory does not keep one file per range ever used…
    assert.deepEqual(readdirSync(locks), [], 'lock files removed by their holders');
    // …and every range can be taken again.
    for (const s of shifts) {
      const l = LockFile.tryAcquire(`${locks}/${s}`);
      assert.ok(l, `lock ${s} free again`);
      l.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pick: the first guess is siphash24(name) as systemd computes it; a held range is skipped', () => {
  const locks = mkdtempSync('/tmp/mctl-userns-locks-');
  const env = { ...process.env, MCTL_UID_LOCK_DIR: locks };
  const start = (name: string): number => {
    const r = spawnSync(nspawn, [...common, '-M', name, '-D', debianTree(), '/bin/cat', '/proc/self/uid_map'], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return shiftOf(r.stdout);
  };
  try {
    const name = 't-userns-guess';
    assert.equal(start(name), hashedGuess(name));
    assert.equal(start(name), hashedGuess(name), 'stable across starts');
    // Someone (stock nspawn, say) holds that range: an OFD lock, the kind systemd takes.
    const held = LockFile.tryAcquire(`${locks}/${hashedGuess(name)}`);
    assert.ok(held);
    try {
      const other = start(name);
      assert.notEqual(other, hashedGuess(name));
      assert.ok(other >= UID_BASE_MIN && other <= UID_BASE_MAX && other % UID_RANGE === 0);
    } finally {
      held.release();
    }
  } finally {
    rmSync(locks, { recursive: true, force: true });
  }
});

test('a start that fails after the pick (registration without a bus, on the hook path) releases the range and leaves no mounts', () => {
  const locks = mkdtempSync('/tmp/mctl-userns-locks-');
  try {
    // Only what could be ours: others on this machine may mount and unmount meanwhile.
    const mounts = (): string[] => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes('mctl-idmap') || l.includes(debianTree()));
    const before = mounts();
    const r = spawnSync(nspawn, [...common, '--register=yes', '-M', 't-userns-fail', '-D', debianTree(), '/bin/true'], {
      env: { ...process.env, MCTL_UID_LOCK_DIR: locks, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${locks}/no-bus` },
      encoding: 'utf8',
    });
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    const picked = readdirSync(locks).filter((f) => /^\d+$/.test(f));
    assert.equal(picked.length, 1, 'the helper picked a range before the hooks ran');
    const l = LockFile.tryAcquire(`${locks}/${picked[0]}`);
    assert.ok(l, 'and it is free again');
    l.release();
    assert.deepEqual(mounts(), before);
    assert.equal(spawnSync('pgrep', ['-f', 't-userns-fail']).status, 1, 'no process left');
  } finally {
    rmSync(locks, { recursive: true, force: true });
  }
});
