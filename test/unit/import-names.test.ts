// Local name derivation as machinectl does it, and the hidden work-entry names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultNameFromDirectory, defaultNameFromFile, defaultNameFromUrl, stripImageSuffixes, tempEntryName, tempEntryOwner, assertLocalName } from '../../src/import/names.js';

test('pull-tar names strip one tar suffix', () => {
  assert.equal(defaultNameFromUrl('https://example.org/images/debian.tar.xz', 'tar'), 'debian');
  assert.equal(defaultNameFromUrl('https://example.org/fedora-40.tar.gz?x=1#y', 'tar'), 'fedora-40');
  assert.equal(defaultNameFromUrl('http://h/a.tgz', 'tar'), 'a');
  assert.equal(defaultNameFromUrl('http://h/a.tar.zst', 'tar'), 'a');
  assert.equal(defaultNameFromUrl('http://h/a.tar.bz2', 'tar'), 'a');
  assert.equal(defaultNameFromUrl('http://h/plain', 'tar'), 'plain');
  assert.equal(stripImageSuffixes('x.tar.xz.tar', 'tar'), 'x.tar.xz');
});

test('pull-raw names strip compression and image suffixes repeatedly', () => {
  assert.equal(defaultNameFromUrl('https://h/Fedora-Cloud-Base-40.raw.xz', 'raw'), 'Fedora-Cloud-Base-40');
  assert.equal(defaultNameFromUrl('https://h/disk.img.gz', 'raw'), 'disk');
  assert.equal(defaultNameFromUrl('https://h/x.qcow2', 'raw'), 'x');
  assert.equal(defaultNameFromUrl('https://h/x.raw.zst', 'raw'), 'x');
});

test('names that are not valid hostnames are refused with a hint', () => {
  assert.throws(() => defaultNameFromUrl('https://h/my_image.tar', 'tar'), /cannot derive a local image name/);
  assert.throws(() => defaultNameFromUrl('https://h/', 'tar'), /cannot derive/);
  assert.throws(() => defaultNameFromUrl('not a url', 'tar'), /invalid URL/);
  assert.throws(() => assertLocalName('.hidden'), /not a suitable image name/);
  assert.throws(() => assertLocalName('a/b'), /not a suitable/);
  assert.equal(assertLocalName('debian-12'), 'debian-12');
});

test('import names come from the file or directory; stdin needs one', () => {
  assert.equal(defaultNameFromFile('/tmp/x/debian.tar.gz', 'tar'), 'debian');
  assert.equal(defaultNameFromFile('disk.raw', 'raw'), 'disk');
  assert.throws(() => defaultNameFromFile('-', 'tar'), /required when reading from standard input/);
  assert.equal(defaultNameFromDirectory('/srv/My_Tree/'), 'My-Tree');
});

test('work entries are hidden and carry the owner PID', () => {
  const name = tempEntryName('debian', 4242);
  assert.match(name, /^\.#mctl-4242-[0-9a-f]{8}-debian$/);
  assert.equal(tempEntryOwner(name), 4242);
  assert.equal(tempEntryOwner(name + '.raw'), 4242);
  assert.equal(tempEntryOwner('.#debian.lck'), null);
  assert.equal(tempEntryOwner('debian'), null);
});
