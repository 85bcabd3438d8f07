// Ownership for private user namespaces on real files: the chown shift keeps setuid bits, ACLs
// and file capabilities and is not repeated; an idmapped root shows the image owners inside without
// touching the tree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync, statSync, mkdirSync, writeFileSync, chownSync, symlinkSync, lstatSync } from 'node:fs';
import { chownTree, resolveOwnership, supportsIdmap } from '../../src/nspawn/userns.js';
import { helperPath } from '../../src/nspawn/launch.js';
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
