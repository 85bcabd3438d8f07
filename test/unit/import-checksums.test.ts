// SHA256SUMS and FILE.sha256 parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findChecksum, parseChecksumList, stripClearsign } from '../../src/import/checksums.js';
import { parseVerifyMode, siblingUrl } from '../../src/import/verify.js';

const A = 'a'.repeat(64);
const B = 'B'.repeat(64);

test('GNU and BSD lines, binary marker, ./ prefix', () => {
  const text = `${A}  debian.tar.xz\n${B} *other.raw.xz\nSHA256 (third.tar) = ${'c'.repeat(64)}\n${'d'.repeat(64)}  ./fourth.nspawn\n# comment\n\ngarbage line\n`;
  assert.deepEqual(parseChecksumList(text), [
    { sha256: A, file: 'debian.tar.xz' },
    { sha256: 'b'.repeat(64), file: 'other.raw.xz' },
    { sha256: 'c'.repeat(64), file: 'third.tar' },
    { sha256: 'd'.repeat(64), file: 'fourth.nspawn' },
  ]);
  assert.equal(findChecksum(text, 'other.raw.xz'), 'b'.repeat(64));
  assert.equal(findChecksum(text, 'fourth.nspawn'), 'd'.repeat(64));
  assert.equal(findChecksum(text, 'missing.tar'), null);
});

test('a bare hash counts only in a per-file .sha256', () => {
  assert.equal(findChecksum(`${A}\n`, 'x.raw', { single: true }), A);
  assert.equal(findChecksum(`${A}\n`, 'x.raw'), null);
  assert.equal(findChecksum(`${A}  x.raw\n`, 'x.raw', { single: true }), A);
});

test('conflicting entries for one file are refused', () => {
  assert.equal(findChecksum(`${A}  f\n${'e'.repeat(64)}  f\n`, 'f'), null);
});

test('clear-signed lists: the signed text is used, dash-escapes undone', () => {
  const signed = ['-----BEGIN PGP SIGNED MESSAGE-----', 'Hash: SHA256', '', `${A}  f.tar`, '- -dash line', '-----BEGIN PGP SIGNATURE-----', 'xyz', '-----END PGP SIGNATURE-----'].join('\n');
  assert.equal(stripClearsign(signed), `${A}  f.tar\n-dash line`);
  assert.equal(findChecksum(signed, 'f.tar'), A);
});

test('verify modes and sibling URLs', () => {
  assert.equal(parseVerifyMode(undefined), 'signature');
  assert.equal(parseVerifyMode(''), 'signature');
  assert.equal(parseVerifyMode('checksum'), 'checksum');
  assert.throws(() => parseVerifyMode('yes'), /invalid --verify/);
  assert.equal(siblingUrl('https://h/a/b/debian.tar.xz?x=1', 'SHA256SUMS'), 'https://h/a/b/SHA256SUMS');
  assert.equal(siblingUrl('https://h/debian.tar.xz', 'debian.nspawn'), 'https://h/debian.nspawn');
});
