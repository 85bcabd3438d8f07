// The allocation lock inside one long-lived process (mctl-machined collecting two machines at
// once): OFD locks of two open file descriptions exclude each other even in one process, so a
// blocking wait there deadlocks the event loop. Each case runs in a child with a deadline, as a
// deadlock would also stop this runner's own timers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const netIndex = fileURLToPath(new URL('../../src/net/index.ts', import.meta.url));
const lockfile = fileURLToPath(new URL('../../src/net/lockfile.ts', import.meta.url));

function runChild(script: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000, killSignal: 'SIGKILL' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('two collects at once in one process finish (no self-deadlock on alloc.lock)', () => {
  const dir = mkdtempSync('/tmp/mctl-lock-');
  try {
    const r = runChild(`
      import { collect, netConfig } from ${JSON.stringify(netIndex)};
      const cfg = netConfig({ MCTL_NET_STATE_DIR: ${JSON.stringify(dir)} });
      const results = await Promise.all([collect('a', cfg), collect('b', cfg), collect('c', cfg)]);
      console.log(results.join(' '));
    `);
    assert.equal(r.status, 0, `child ended with ${r.status}: ${r.stderr}`);
    assert.equal(r.stdout.trim(), 'absent absent absent');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('acquireAsync: in-process callers take turns and the event loop keeps running meanwhile', () => {
  const dir = mkdtempSync('/tmp/mctl-lock-');
  try {
    const r = runChild(`
      import { LockFile } from ${JSON.stringify(lockfile)};
      const path = ${JSON.stringify(`${dir}/x.lock`)};
      const order = [];
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      const first = await LockFile.acquireAsync(path);
      const second = LockFile.acquireAsync(path).then((l) => { order.push('second'); return l; });
      await new Promise((r) => setTimeout(r, 60));
      order.push('first-release');
      first.release(false);
      (await second).release(false);
      clearInterval(timer);
      console.log(order.join(','), ticks > 3 ? 'alive' : 'blocked');
    `);
    assert.equal(r.status, 0, `child ended with ${r.status}: ${r.stderr}`);
    assert.equal(r.stdout.trim(), 'first-release,second alive');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
