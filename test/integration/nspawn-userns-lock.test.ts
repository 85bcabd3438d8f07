// Under -U the container's root is root only in its own user namespace, so the mounts the launcher
// made read-only must stay read-only: the kernel locks the flags (and forbids unmounting to reveal
// what is below) of mounts that reach the container through a copy into a mount namespace of a
// less privileged user namespace. Probed from inside on a copy of the Debian tree, ours and stock
// systemd-nspawn 252 side by side: the same refusals, and nothing written to the tree or the binds.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { debianTree } from '../helpers/images.js';
import { copyImage, debianImage } from '../helpers/raw-images.js';

const NSPAWN = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const STOCK = '/usr/bin/systemd-nspawn';

// One line per attempt: "refused: CMD" or "ALLOWED: CMD". Writes go last (after the attempts).
const PROBE = `
try() { if "$@" 2>/dev/null; then echo "ALLOWED: $*"; else echo "refused: $*"; fi; }
try mount -o remount,rw,bind /
try mount -o remount,rw /
try mount -o remount,rw,bind /mnt
try mount -o remount,rw /mnt
try umount -l /mnt
try mount -o remount,rw,bind /sys
try mount -o remount,rw /sys
try umount -l /sys
try mount -o remount,rw,bind /proc/sysrq-trigger
try touch /written-by-container
try touch /mnt/written-by-container
try sh -c 'echo 1 > /proc/sys/kernel/sysrq'
`;

let dir = '';
let tree = '';
let bindDir = '';

before(() => {
  dir = mkdtempSync('/tmp/mctl-nsp-lock-');
  // a private copy: if a remount got through, the probe would write into it, never the cache
  tree = join(dir, 'tree');
  execFileSync('cp', ['-a', '--reflink=auto', debianTree(), tree]);
  bindDir = join(dir, 'bind');
  mkdirSync(bindDir);
  writeFileSync(join(bindDir, 'probe.sh'), PROBE);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function probe(launcher: string, args: string[]): string[] {
  const base = launcher === STOCK ? ['--keep-unit'] : [];
  const env = { ...process.env };
  delete env['DBUS_SYSTEM_BUS_ADDRESS'];
  const r = spawnSync(launcher, ['-q', '--register=no', ...base, '-U', '--read-only', '--pipe', `--bind-ro=${bindDir}:/mnt`, ...args, 'sh', '/mnt/probe.sh'], {
    encoding: 'utf8',
    env,
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n');
}

function assertLocked(lines: string[]): void {
  for (const l of lines) assert.match(l, /^refused: /, `inside the container: ${l}\n${lines.join('\n')}`);
  assert.ok(lines.length >= 12, lines.join('\n'));
}

test('-U --read-only: the root, a --bind-ro= dir and /sys cannot be remounted rw or unmounted; nothing is written', () => {
  const lines = probe(NSPAWN, ['-D', tree]);
  assertLocked(lines);
  assert.ok(!existsSync(join(tree, 'written-by-container')), 'the tree is not written');
  assert.deepEqual(readdirSync(bindDir), ['probe.sh'], 'the bind source is not written');
  assert.deepEqual(readdirSync(join(tree, 'mnt')), [], 'nothing reached the mount point below the bind');
});

test('-U --read-only: /proc answers as with stock nspawn (its /proc is mounted inside, so sysctls stay unwritable by ownership, and nested procfs works)', () => {
  // nspawn 252 mounts /proc from inside the user namespace (procfs belongs to the PID namespace's
  // owner): /proc/sys may be remounted there, but its files belong to the host's root, which the
  // container's root is not. Locking it would hide /proc from nested procfs mounts.
  const script = "mount -o remount,rw,bind /proc/sys 2>/dev/null; echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo SYSCTL-WRITTEN || echo sysctl-refused; mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo nested-proc-ok";
  const run = (launcher: string): string => {
    const base = launcher === STOCK ? ['--keep-unit'] : [];
    const env = { ...process.env };
    delete env['DBUS_SYSTEM_BUS_ADDRESS'];
    const r = spawnSync(launcher, ['-q', '--register=no', ...base, '-U', '--read-only', '--pipe', '-D', tree, 'sh', '-c', script], { encoding: 'utf8', env, timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim();
  };
  const ours = run(NSPAWN);
  assert.equal(ours, 'sysctl-refused\nnested-proc-ok');
  if (existsSync(STOCK)) assert.equal(ours, run(STOCK));
});

test('-U --read-only with a disk image: the root cannot be remounted rw', () => {
  const image = copyImage(debianImage('ext4'), join(dir, 'lock.raw'));
  const lines = probe(NSPAWN, [`--image=${image}`]);
  assertLocked(lines);
  const root = execFileSync('debugfs', ['-R', 'ls -l /', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  assert.doesNotMatch(root, /written-by-container/);
  rmSync(image);
});

test('side by side: stock systemd-nspawn 252 refuses the same on the same tree', { skip: !existsSync(STOCK) && 'systemd-nspawn is not installed' }, () => {
  const stock = probe(STOCK, ['-D', tree]);
  assertLocked(stock);
  assert.deepEqual(probe(NSPAWN, ['-D', tree]), stock);
});
