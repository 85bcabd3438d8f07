// The fast reply marshaller must produce exactly the bytes dbus-next would for the same reply.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import dbus from 'dbus-next';
import { marshalBody, marshalMethodReturn, methodReturnMessage } from '../../src/machined/fast-marshal.js';

const require = createRequire(import.meta.url);
// The path dbus-next's connection uses for every outgoing message.
const { marshallMessage } = require('dbus-next/lib/marshall-compat.js') as { marshallMessage(m: unknown): [Buffer, number[]] };

function reference(serial: number, replySerial: number, destination: string, signature: string, body: unknown[]): Buffer {
  const msg = new dbus.Message({ type: dbus.MessageType.METHOD_RETURN, replySerial, destination, signature, body });
  msg.serial = serial;
  return marshallMessage(msg)[0];
}

const rows = Array.from({ length: 50 }, (_, i) => [`m-${i}`, 'container', i % 2 ? '' : 'svc', `/org/freedesktop/machine1/machine/m_2d${i}`]);
const cases: Array<[string, unknown[]]> = [
  ['', []],
  ['o', ['/org/freedesktop/machine1/machine/_2ehost']],
  ['a(ssso)', [rows]],
  ['a(ssso)', [[]]],
  ['a(ssbttto)', [[['img', 'directory', true, 1700000000000000n, 1700000000000001n, 0xffffffffffffffffn, '/org/freedesktop/machine1/image/img']]]],
  ['a{ss}', [{ ID: 'debian', VERSION_ID: '12', PRETTY_NAME: 'Debian GNU/Linux 12 (bookworm)' }]],
  ['a(iay)', [[[2, Buffer.from([192, 0, 2, 7])], [10, Buffer.alloc(16, 1)]]]],
  ['u', [4294967295]],
  ['s', ['ünïcödé']],
  ['ay', [Buffer.from('00112233445566778899aabbccddeeff', 'hex')]],
  ['a(st)', [[['x', 5n], ['y', 0xffffffffffffffffn]]]],
  ['sou', ['a', '/b', 3]],
];

for (const [sig, body] of cases) {
  test(`method return '${sig}' matches dbus-next byte for byte`, () => {
    const ours = marshalMethodReturn(7, 42, ':1.23', sig, body);
    assert.ok(ours, 'fast path refused a supported reply');
    assert.deepEqual(ours, reference(7, 42, ':1.23', sig, body));
  });
}

test('unsupported types fall back (undefined), never a wrong message', () => {
  assert.equal(marshalBody('v', [new dbus.Variant('s', 'x')]), undefined);
  assert.equal(marshalBody('h', [3]), undefined);
  assert.equal(marshalBody('u', [-1]), undefined);
  assert.equal(marshalBody('s', [5]), undefined);
  assert.equal(marshalBody('(ss)', [['only-one']]), undefined);
});

test('a body marshalled once (the cached ListMachines reply) makes the same messages for every caller', () => {
  const body = [rows];
  const bytes = marshalBody('a(ssso)', body);
  assert.ok(bytes);
  for (const [serial, replySerial, dest] of [[7, 42, ':1.23'], [8, 3, ':1.1000']] as const) {
    assert.deepEqual(methodReturnMessage(serial, replySerial, dest, 'a(ssso)', bytes), reference(serial, replySerial, dest, 'a(ssso)', body));
  }
});
