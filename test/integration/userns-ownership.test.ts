// Ownership for private user namespaces on real files: the chown shift keeps setuid bits, ACLs
// and file capabilities and is not repeated; an idmapped mount shows the shifted owners without
// touching the tree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, mkdirSync, writeFileSync, chownSync, symlinkSync, lstatSync, existsSync } from 'node:fs';
import { chownTree, makeUserns, mountIdmapped, resolveOwnership, supportsIdmap } from '../../src/nspawn/userns.js';
import { debianTree } from '../helpers/images.js';

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

test('map: an idmapped mount shows shifted owners and leaves the tree alone', async () => {
  const dir = mkdtempSync('/tmp/mctl-userns-');
  try {
    const root = makeTree(dir);
    assert.equal(await supportsIdmap(root), true, 'ext4 on kernel 6.x supports idmapped mounts');
    assert.equal(await resolveOwnership('auto', root, 0x5a0000), 'map');
    const ns = await makeUserns(0x5a0000, 0x10000);
    const m = mountIdmapped(root, `${dir}/mnt`, ns.fd);
    ns.close();
    try {
      assert.equal(statSync(`${m.path}/home/user/file`).uid, 0x5a0000 + 1000);
      assert.equal(statSync(`${m.path}/usr/bin/passwd`).uid, 0x5a0000);
      assert.equal(statSync(`${root}/home/user/file`).uid, 1000, 'on disk unchanged');
      // Host root has no id in the mapped view (EOVERFLOW); the container's root (host uid
      // SHIFT) creates files that land on disk as uid 0, the image's own owner.
      assert.throws(() => writeFileSync(`${m.path}/new`, 'y'), /EOVERFLOW/);
      const id = String(0x5a0000);
      sh('setpriv', `--reuid=${id}`, `--regid=${id}`, '--clear-groups', '--inh-caps=+dac_override', '--ambient-caps=+dac_override', 'touch', `${m.path}/usr/new`);
      assert.equal(statSync(`${root}/usr/new`).uid, 0);
      assert.equal(statSync(`${m.path}/usr/new`).uid, 0x5a0000);
    } finally {
      m.release();
    }
    assert.equal(existsSync(`${dir}/mnt`), false, 'mount point removed');
    // A tree shifted by chown earlier keeps using chown under auto.
    chownTree(root, 0x5a0000);
    assert.equal(await resolveOwnership('auto', root, 0x5a0000), 'chown');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
