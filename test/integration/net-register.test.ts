// A veth container registered with mctl-machined on a private bus: the service learns the
// host-side interface (RegisterMachineWithNetwork) and GetMachineAddresses reports the
// addresses mctl gave the container.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { MessageBus } from 'dbus-next';
import { startPrivateBus, type PrivateBus } from '../helpers/dbus-daemon.js';
import { connectBus, call } from '../../src/dbus/bus.js';
import { readMachineNetState, collect, netConfig } from '../../src/net/index.js';
import { run } from '../helpers/netns.js';
import { debianTree } from '../helpers/images.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const id = randomBytes(2).toString('hex');
const r = parseInt(id.slice(0, 2), 16);
const dir = mkdtempSync('/tmp/mctl-net-');
const netEnv = { MCTL_NET_STATE_DIR: `${dir}/net`, MCTL_NET_TABLE: `tnr${id}`, MCTL_NET_POOL4: `10.244.${r}.0/24`, MCTL_NET_POOL6: `fd6d:6374:${(0x4000 + r).toString(16)}::/48` };
const cfg = netConfig(netEnv);
const procs: ChildProcess[] = [];
let bus: PrivateBus | undefined;
let client: MessageBus | undefined;
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const manager = { destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager' };

after(async () => {
  for (const p of procs) p.kill('SIGKILL');
  await sleep(300);
  client?.disconnect();
  await bus?.stop();
  await collect(`t-netr-${id}`, cfg).catch(() => undefined);
  run(['nft', 'delete', 'table', 'inet', cfg.table]);
  rmSync(dir, { recursive: true, force: true });
});

test('registration carries the veth; GetMachineAddresses reports our addresses', async () => {
  bus = await startPrivateBus();
  client = await connectBus(bus.address);
  const machined = spawn(`${repo}/bin/mctl-machined`, [], { env: { ...process.env, ...bus.env, MCTL_MACHINED_STATE_DIR: `${dir}/machined` }, stdio: ['ignore', 'ignore', 'inherit'] });
  procs.push(machined);
  for (let i = 0; ; i++) {
    const owner = await call(client, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'NameHasOwner', signature: 's', body: ['org.freedesktop.machine1'] });
    if (owner.body[0] === true) break;
    if (i > 300) throw new Error('mctl-machined did not start');
    await sleep(50);
  }
  const name = `t-netr-${id}`;
  const ct = spawn(`${repo}/bin/mctl-nspawn`, ['-q', '--register=yes', '--keep-unit', '--read-only', '--console=pipe', '-D', debianTree(), '-M', name, '--network-veth', '/bin/sleep', '30'], {
    env: { ...process.env, ...bus.env, ...netEnv },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  procs.push(ct);
  let state = readMachineNetState(name, cfg);
  for (let i = 0; i < 200 && !state; i++) {
    await sleep(50);
    state = readMachineNetState(name, cfg);
  }
  assert.ok(state?.hostIf && state.ipv4 && state.ipv6);
  let path = '';
  for (let i = 0; i < 200 && !path; i++) {
    try {
      path = (await call(client, { ...manager, member: 'GetMachine', signature: 's', body: [name] })).body[0] as string;
    } catch {
      await sleep(50);
    }
  }
  const props = await call(client, { destination: 'org.freedesktop.machine1', path, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: ['org.freedesktop.machine1.Machine', 'NetworkInterfaces'] });
  const ifindex = Number(readFileSync(`/sys/class/net/${state.hostIf}/ifindex`, 'utf8'));
  assert.deepEqual((props.body[0] as { value: number[] }).value, [ifindex]);
  const addrs = await call(client, { ...manager, member: 'GetMachineAddresses', signature: 's', body: [name] });
  const text = (addrs.body[0] as Array<[number, Buffer]>).map(([family, bytes]) =>
    family === 2 ? [...bytes].join('.') : Buffer.from(bytes).toString('hex').replace(/(.{4})(?!$)/g, '$1:'),
  );
  assert.ok(text.includes(state.ipv4.address), `${text.join(', ')} has ${state.ipv4.address}`);
  assert.ok(text.some((t) => t.startsWith(state!.ipv6!.address.split('::')[0]!.split(':').map((g) => g.padStart(4, '0')).join(':'))), text.join(', '));
  ct.kill('SIGTERM');
  await new Promise((res) => (ct.exitCode !== null ? res(null) : ct.once('exit', res)));
});
