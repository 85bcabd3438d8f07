import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startPrivateBus } from '../helpers/dbus-daemon.js';
import { connectBus, call } from '../../src/dbus/bus.js';

test('private bus answers Hello and ListNames through the shared client', async () => {
  const bus = await startPrivateBus();
  try {
    const conn = connectBus(`unix:path=${bus.socketPath}`);
    const reply = await call(conn, {
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'ListNames',
      timeoutMs: 5000,
    });
    const names = reply.body[0] as string[];
    assert.ok(names.includes('org.freedesktop.DBus'));
    await assert.rejects(
      call(conn, { destination: 'org.example.Nobody', path: '/', interface: 'org.example.X', member: 'Y', timeoutMs: 2000 }),
      /ServiceUnknown|not provided|Nobody/,
    );
    conn.disconnect();
  } finally {
    await bus.stop();
  }
});
