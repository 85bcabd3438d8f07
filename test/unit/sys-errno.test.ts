import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SysError, errnoName, errnoNumber } from '../../src/sys/errno.js';
import { UserError, describeError } from '../../src/common/errors.js';

test('errno names round-trip', () => {
  assert.equal(errnoName(1), 'EPERM');
  assert.equal(errnoName(2), 'ENOENT');
  assert.equal(errnoNumber('EBUSY'), 16);
  assert.equal(errnoName(99999), 'errno 99999');
});

test('SysError carries call, errno name and path', () => {
  const e = new SysError('mount', 1, '/proc');
  assert.equal(e.message, 'mount(/proc): EPERM');
  assert.equal(e.code, 'EPERM');
  assert.equal(e.path, '/proc');
});

test('describeError gives one line', () => {
  assert.equal(describeError(new UserError('bad', { hint: 'try x' })), 'bad (try x)');
  assert.equal(describeError(new Error('a\nb')), 'a');
  const enoent = Object.assign(new Error('x'), { code: 'ENOENT', path: '/nope' });
  assert.equal(describeError(enoent), '/nope: ENOENT');
});
