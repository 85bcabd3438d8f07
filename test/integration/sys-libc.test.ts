// Real libc calls through koffi, each in a child process so namespace changes stay there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const libc = fileURLToPath(new URL('../../src/sys/libc.ts', import.meta.url));

function inChild(body: string): { status: number | null; stdout: string; stderr: string } {
  const script = `import * as c from ${JSON.stringify(libc)};\n${body}`;
  const r = spawnSync('unshare', ['--mount', '--uts', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('mount, sethostname and umount2 work and failures carry errno names', () => {
  const r = inChild(`
    import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmdirSync } from 'node:fs';
    import { hostname } from 'node:os';
    c.mount(null, '/', null, c.MS.REC | c.MS.PRIVATE);
    const d = mkdtempSync('/tmp/mctl-libc-');
    c.mount('tmpfs', d, 'tmpfs', c.MS.NOSUID, 'mode=0700');
    writeFileSync(d + '/x', 'hi');
    c.sethostname('mctl-test');
    console.log(readFileSync(d + '/x', 'utf8'), hostname());
    c.umount2(d, c.MNT.DETACH);
    console.log(existsSync(d + '/x'));
    rmdirSync(d);
    try { c.mount(null, '/nonexistent-mctl', 'tmpfs', 0); } catch (e) { console.log(e.message); }
    try { c.umount2('/nonexistent-mctl'); } catch (e) { console.log(e.code); }
  `);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines[0], 'hi mctl-test');
  assert.equal(lines[1], 'false');
  assert.equal(lines[2], 'mount(/nonexistent-mctl): ENOENT');
  assert.equal(lines[3], 'ENOENT');
});

test('capget reads the bounding of a root process; prctl no_new_privs', () => {
  const r = inChild(`
    const caps = c.capget();
    console.log(caps.effective > 0n);
    c.prctl(c.PR.SET_NO_NEW_PRIVS, 1);
    console.log(c.prctl(c.PR.GET_NO_NEW_PRIVS));
  `);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), ['true', '1']);
});

test('execve replaces the process and keeps stdout', () => {
  const r = inChild(`c.execve('/bin/sh', ['sh', '-c', 'echo from-sh; exit 3'], { PATH: '/usr/bin:/bin' });`);
  assert.equal(r.stdout, 'from-sh\n');
  assert.equal(r.status, 3);
});
