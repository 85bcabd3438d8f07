// --image-policy (systemd.image-policy(7)): parsing, and checking dissected images against it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseImagePolicy, applyImagePolicy, policyFor } from '../../src/image/policy.js';
import { DPS_TYPE, GPT_FLAG, rootTypeFor } from '../../src/image/dps.js';
import type { DissectedImage, ImagePartition } from '../../src/image/dissect.js';
import type { Partition } from '../../src/image/gpt.js';

function part(designator: ImagePartition['designator'], number: number, fstype: ImagePartition['fstype'] = 'ext4'): ImagePartition {
  const mountPoint = designator === 'root' ? '/' : `/${designator}`;
  return { designator, mountPoint, number, offset: number * 1048576, size: 1048576, fstype, readOnly: false, uuid: '', label: '' };
}

/** A GPT image with these partitions (and extra table entries that are not dissected, e.g. swap). */
function image(parts: ImagePartition[], extra: Array<{ number: number; type: string }> = [], flags: Record<number, bigint> = {}): DissectedImage {
  const table: Partition[] = [
    ...parts.map((p) => ({ number: p.number, type: p.designator === 'root' ? rootTypeFor('x64') : DPS_TYPE.home, uuid: '', label: '', offset: p.offset, size: p.size, flags: flags[p.number] ?? 0n })),
    ...extra.map((e) => ({ number: e.number, type: e.type, uuid: '', label: '', offset: 0, size: 0, flags: 0n })),
  ];
  return { path: '/t.raw', size: 64 << 20, layout: 'gpt', table: { scheme: 'gpt', sectorSize: 512, diskUuid: '', partitions: table, usedBackup: false }, partitions: parts, usrOnly: false, ignored: [] };
}

test('policies parse: rules, the default, the special strings; flags expand', () => {
  const p = parseImagePolicy('root=unprotected+ext4+read-only-off:home=ignore:=absent');
  assert.deepEqual([...policyFor(p, 'root').use], ['unprotected']);
  assert.deepEqual([...(policyFor(p, 'root').fstypes ?? [])], ['ext4']);
  assert.equal(policyFor(p, 'root').readOnly, false);
  assert.deepEqual([...policyFor(p, 'home').use].sort(), ['absent', 'unused']);
  assert.deepEqual([...policyFor(p, 'srv').use], ['absent']);
  // Without a default, partitions not listed are ignored.
  assert.deepEqual([...policyFor(parseImagePolicy('root=open'), 'srv').use].sort(), ['absent', 'unused']);
  assert.equal(policyFor(parseImagePolicy('root=open'), 'root').use.size, 6);
  assert.equal(policyFor(parseImagePolicy('*'), 'var').use.size, 6);
  assert.deepEqual([...policyFor(parseImagePolicy('-'), 'root').use].sort(), ['absent', 'unused']);
  assert.deepEqual([...policyFor(parseImagePolicy('~'), 'root').use], ['absent']);
  assert.deepEqual([...policyFor(parseImagePolicy(''), 'usr').use].sort(), ['absent', 'unused']);
  assert.deepEqual([...policyFor(parseImagePolicy(' root = unprotected + ext4 '), 'root').use], ['unprotected']);
});

test('malformed policies: one line saying what is wrong', () => {
  const bad: Array<[string, RegExp]> = [
    ['root', /rule 'root' has no '='/],
    ['boot=open', /unknown partition 'boot'/],
    ['root=safe', /unknown flag 'safe'/],
    ['root=open:root=ignore', /partition 'root' is given twice/],
    ['root=unprotected+unprotected', /given twice/],
    ['root=', /unknown flag '' for root/],
    ['root=ext4', /no use flag/],
    ['root=open+read-only-on+read-only-off', /read-only-on and read-only-off together/],
    ['=open:=ignore', /default .* given twice/],
  ];
  for (const [text, why] of bad) {
    assert.throws(() => parseImagePolicy(text), (e: Error) => why.test(e.message) && !e.message.includes('\n') && e.message.startsWith(`invalid image policy '${text}'`), text);
  }
});

test('applying a policy: unused partitions are left out, forbidden or missing ones refused', () => {
  const img = image([part('root', 1), part('home', 2)]);
  assert.deepEqual(applyImagePolicy(img, parseImagePolicy('root=unprotected:home=unused'), 'x64').partitions.map((p) => p.designator), ['root']);
  assert.deepEqual(applyImagePolicy(img, parseImagePolicy('*'), 'x64').partitions.map((p) => p.designator), ['root', 'home']);
  // home is not listed and there is no default: ignored (left out).
  assert.deepEqual(applyImagePolicy(img, parseImagePolicy('root=unprotected'), 'x64').partitions.map((p) => p.designator), ['root']);
  assert.throws(() => applyImagePolicy(img, parseImagePolicy('root=verity+signed'), 'x64'), /allows the root partition only as verity\+signed; root partition 1 is unprotected \(mctl has no dm-verity or LUKS\)/);
  assert.throws(() => applyImagePolicy(img, parseImagePolicy('root=unprotected+squashfs+erofs'), 'x64'), /allows squashfs, erofs for the root partition; root partition 1 is ext4/);
  assert.throws(() => applyImagePolicy(img, parseImagePolicy('root=unprotected:srv=unprotected'), 'x64'), /requires a srv partition \(as unprotected\); the image has none/);
  assert.throws(() => applyImagePolicy(img, parseImagePolicy('~'), 'x64'), /says the root partition must be absent, and the image has one/);
  assert.throws(() => applyImagePolicy(img, parseImagePolicy('-'), 'x64'), /leaves no root \(or \/usr\) partition to boot from/);
  assert.throws(() => applyImagePolicy(img, parseImagePolicy('root=unprotected+read-only-on:home=open'), 'x64'), /needs the read-only flag set on root partition 1/);
  const ro = image([part('root', 1)], [], { 1: GPT_FLAG.READ_ONLY });
  assert.equal(applyImagePolicy(ro, parseImagePolicy('root=unprotected+read-only-on'), 'x64').partitions.length, 1);
});

test('swap and verity partitions are never used, but a policy can demand they be absent', () => {
  const img = image([part('root', 1)], [{ number: 2, type: DPS_TYPE.swap }, { number: 3, type: '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5' }]);
  assert.equal(applyImagePolicy(img, parseImagePolicy('root=unprotected:swap=ignore:root-verity=ignore'), 'x64').partitions.length, 1);
  assert.throws(() => applyImagePolicy(img, parseImagePolicy('root=unprotected:swap=absent:root-verity=ignore'), 'x64'), /does not allow the swap partition 2/);
  assert.throws(() => applyImagePolicy(img, parseImagePolicy('root=unprotected:=absent'), 'x64'), /does not allow the (swap|root-verity) partition/);
  assert.throws(() => applyImagePolicy(image([part('root', 1)]), parseImagePolicy('root=unprotected:usr-verity=verity'), 'x64'), /requires a usr-verity partition/);
});
