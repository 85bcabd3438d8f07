// Ownership for private user namespaces on real files: the chown shift keeps setuid bits, ACLs
// and file capabilities and is not repeated; an idmapped root shows the image owners inside without
// touching the tree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync, statSync, mkdirSync, writeFileSync, chownSync, symlinkSync, lstatSync, readFileSync, readdirSync, existsSync } from 'node:fs';
import { chownTree, resolveOwnership, supportsIdmap } from '../../src/nspawn/userns.js';
import { helperPath } from '../../src/nspawn/launch.js';
import { LockFile } from '../../src/net/lockfile.js';
import { debianTree } from '../helpers/images.js';

const nspawn = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

function makeTree(dir: string): string {
  const root = `${dir}/root`;
  mkdirSync(`${root}/usr/bin`, { recursive: true });
  const deb = debianTree();
  sh('cp', '-a', `${deb}/usr/bin/passwd`, `${deb}/usr/bin/ping`, `${root}/usr/bin/`);
  mkdirSync(`${root}/home/user`, { recursive: true });
  writeFileSync(`${root}/home/user/file`, 'x');
  chownSync(`${root}/home/user`, 1000, 1000);
  chownSync(`${root}/home/user/file`, 1000, 1000);
  symlinkSync('file', `${root}/home/user/link`);
  chownSync(`${root}/home/user/file`, 1000, 1000);
  sh('setfacl', '-m', 'u:1001:rwx,g:1002:r', `${root}/home/user/file`);
  sh('setfacl', '-d', '-m', 'u:1001:rwx', `${root}/home/user`);
  return root;
}

test('chown shift: owners, setuid bits, ACLs and file capabilities; recorded, re-shiftable', () => {
  const dir = mkdtempSync('/tmp/mctl-userns-');
  try {
    const root = makeTree(dir);
    const shift = 0x5a0000;
    const first = chownTree(root, shift);
    assert.equal(first.skipped, false);
    assert.ok(first.entries >= 7);
    assert.equal(statSync(root).uid, shift);
    assert.equal(statSync(`${root}/home/user/file`).uid, shift + 1000);
    assert.equal(statSync(`${root}/home/user/file`).gid, shift + 1000);
    assert.equal(lstatSync(`${root}/home/user/link`).uid, shift);
    assert.equal(statSync(`${root}/usr/bin/passwd`).mode & 0o7777, 0o4755, 'setuid kept');
    const acl = sh('getfacl', '-n', '-p', `${root}/home/user/file`);
    assert.match(acl, new RegExp(`user:${shift + 1001}:rwx`));
    assert.match(acl, new RegExp(`group:${shift + 1002}:r--`));
    assert.match(sh('getfacl', '-n', '-p', `${root}/home/user`), new RegExp(`default:user:${shift + 1001}:rwx`));
    assert.match(sh('getcap', '-n', `${root}/usr/bin/ping`), new RegExp(`cap_net_raw=ep \\[rootid=${shift}\\]`));
    // Recorded by the root's owner: a second run does nothing.
    assert.deepEqual(chownTree(root, shift), { entries: 0, skipped: true });
    // Another shift re-shifts (lower 16 bits kept).
    chownTree(root, 0x7b0000);
    assert.equal(statSync(`${root}/home/user/file`).uid, 0x7b0000 + 1000);
    assert.match(sh('getfacl', '-n', '-p', `${root}/home/user/file`), new RegExp(`user:${0x7b0000 + 1001}:rwx`));
    assert.match(sh('getcap', '-n', `${root}/usr/bin/ping`), new RegExp(`rootid=${0x7b0000}`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('map: idmap support is known for ext4 and probed by the helper elsewhere; auto picks map, then chown on a shifted tree', async () => {
  const dir = mkdtempSync('/tmp/mctl-userns-');
  try {
    const root = makeTree(dir);
    assert.equal(await supportsIdmap(root), true, 'ext4 on kernel 6.x supports idmapped mounts');
    // The helper's probe (used for file systems not in the known list): yes for the tree, no for procfs.
    const probe = (path: string): number | null => spawnSync(helperPath(), ['idmap-probe', path], { stdio: 'ignore' }).status;
    assert.equal(probe(root), 0);
    assert.equal(probe('/proc'), 1);
    assert.equal(await resolveOwnership('auto', root, null), 'map');
    assert.equal(await resolveOwnership('auto', root, 0), 'off', 'identity needs no ownership change');
    // A tree shifted by chown earlier keeps using chown under auto.
    chownTree(root, 0x5a0000);
    assert.equal(await resolveOwnership('auto', root, null), 'chown');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('map: the container sees the image owners through the idmapped root; the tree is untouched', () => {
  const tree = debianTree();
  const before = statSync(`${tree}/usr/bin/passwd`);
  const shift = 0x5a0000;
  const r = spawnSync(nspawn, ['-q', '--register=no', '--console=pipe', '--read-only', '--timezone=off', '--resolv-conf=off', `--private-users=${shift}`, '--private-users-ownership=map', '-D', tree,
    '/bin/sh', '-c', 'cat /proc/self/uid_map; stat -c "%u %g %a" /usr/bin/passwd /etc/shadow'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const [map, passwd, shadow] = r.stdout.trim().split('\n');
  assert.deepEqual(map!.trim().split(/\s+/).map(Number), [0, shift, 0x10000]);
  assert.equal(passwd, `0 0 ${(before.mode & 0o7777).toString(8)}`);
  assert.match(shadow!, /^0 42 /, 'group shadow (42) as in the image');
  const after = statSync(`${tree}/usr/bin/passwd`);
  assert.equal(after.uid, before.uid);
  assert.equal(after.ctimeMs, before.ctimeMs, 'the tree is not modified');
});

test('a file system without idmapped mounts: map fails with one line and leaves nothing; auto falls back to chown', () => {
  const dir = mkdtempSync('/tmp/mctl-userns-');
  const locks = `${dir}/locks`;
  const tree = `${dir}/ramfs`;
  mkdirSync(tree);
  execFileSync('mount', ['-t', 'ramfs', 'ramfs', tree]); // ramfs takes no idmapped mounts
  try {
    mkdirSync(`${tree}/usr`); // what the launcher asks of an OS tree
    const mounts = (): string[] => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dir) || l.includes('mctl-idmap'));
    const before = mounts();
    const env = { ...process.env, MCTL_UID_LOCK_DIR: locks };
    const args = ['-q', '--register=no', '--console=pipe', '--timezone=off', '--resolv-conf=off', '--private-users=pick', '-D', tree, '-M', 't-userns-ramfs', '/bin/true'];
    // Also with a veth (the launcher's hook path, where the helper runs before the hooks).
    for (const extra of [[], ['--network-veth']]) {
      const map = spawnSync(nspawn, [...args.slice(0, -1), ...extra, '--private-users-ownership=map', '/bin/true'], { env, encoding: 'utf8' });
      assert.equal(map.status, 1);
      assert.match(map.stderr, /^mctl-nspawn: --private-users-ownership=map: idmapped mounts are not supported for .*ramfs \(.*\)\n$/);
    }
    assert.notEqual(spawnSync('ip', ['link', 'show', 've-t-userns-ramfs']).status, 0, 'no veth left');
    assert.deepEqual(mounts(), before, 'no mounts left');
    for (const f of existsSync(locks) ? readdirSync(locks) : []) {
      const l = LockFile.tryAcquire(`${locks}/${f}`);
      assert.ok(l, `range lock ${f} released`);
      l.release();
    }
    assert.equal(spawnSync('pgrep', ['-f', 't-userns-ramfs']).status, 1, 'no process left');
    // auto: the helper's probe says no, so the (empty) tree is shifted instead; the run itself
    // then fails for want of /bin/true, which is fine here.
    spawnSync(nspawn, args, { env, encoding: 'utf8' });
    assert.ok(statSync(tree).uid >= 0x80000, `tree shifted by chown (owner ${statSync(tree).uid})`);
    assert.deepEqual(mounts(), before);
  } finally {
    spawnSync('umount', [tree]);
    rmSync(dir, { recursive: true, force: true });
  }
});
