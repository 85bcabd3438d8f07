// The mctl CLI on a real systemd host (the box), against stock systemd-machined first and then
// against mctl-machined installed as the unit: the same verbs must give the same answers from
// either service. Machines are booted by stock systemd-nspawn so only the CLI is under test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { installMctl, parseProps, useBox, useMctlMachined, waitFor, waitSystemRunning, type Box } from '../helpers/box.js';
import { debianTree } from '../helpers/images.js';

const held = useBox({ machines: { debian: debianTree() } }, (box) => installMctl(box));
const ROOT = '/var/lib/machines/debian';

const scopeOf = (name: string): string => `machine-${name.replace(/-/g, '\\x2d')}.scope`;

async function bootNested(box: Box, name: string): Promise<void> {
  await box.runOk(['systemd-run', `--unit=${name}`, '--', 'systemd-nspawn', '--quiet', '--boot', `--machine=${name}`, `--directory=${ROOT}`, '--volatile=overlay']);
  await waitFor(async () => (await box.run(['machinectl', 'show', name])).status === 0, 20_000, `${name} registered`);
  assert.equal(await waitSystemRunning(box, name), 'running');
}

async function stopNested(box: Box, name: string): Promise<void> {
  await box.run(['systemctl', 'stop', `${name}.service`]);
  await box.run(['systemctl', 'reset-failed', `${name}.service`]);
}

async function machineGone(box: Box, name: string): Promise<void> {
  await waitFor(async () => (await box.run(['machinectl', 'show', name])).status !== 0, 20_000, `${name} gone`);
}

/** The service that owns org.freedesktop.machine1 in the box right now. */
async function busOwner(box: Box): Promise<string> {
  return parseProps(await box.runOk(['busctl', 'status', '--no-pager', 'org.freedesktop.machine1'])).Unit ?? '';
}

for (const service of ['systemd-machined', 'mctl-machined'] as const) {
  test(`[${service}] mctl list, -o json, status and show describe a running machine`, async () => {
    const { box } = held;
    if (service === 'mctl-machined') await useMctlMachined(box);
    const name = `t-box-c-${service === 'mctl-machined' ? 'ours' : 'stock'}`;
    await bootNested(box, name);
    try {
      assert.equal(await busOwner(box), `${service}.service`);
      const table = await box.runOk(['mctl', 'list']);
      assert.match(table, /^MACHINE\s+CLASS\s+SERVICE\s+OS\s+VERSION\s+ADDRESSES$/m);
      assert.match(table, new RegExp(`^${name}\\s+container\\s+systemd-nspawn\\s+debian\\s+12\\s+-$`, 'm'));
      assert.match(table, /^1 machine listed\.$/m);

      const rows = JSON.parse(await box.runOk(['mctl', 'list', '-o', 'json'])) as { machine: string; class: string; service: string; os: string; version: string }[];
      assert.deepEqual(
        rows.map((r) => [r.machine, r.class, r.service, r.os, r.version]),
        [[name, 'container', 'systemd-nspawn', 'debian', '12']],
      );

      const stock = parseProps(await box.runOk(['machinectl', 'show', name]));
      const status = await box.runOk(['mctl', 'status', name]);
      assert.match(status, new RegExp(`^${name}\\(${stock.Id}\\)$`, 'm'));
      assert.match(status, new RegExp(`Leader: ${stock.Leader} \\(systemd\\)`));
      assert.match(status, /Service: systemd-nspawn; class container/);
      assert.match(status, /OS: Debian GNU\/Linux 12 \(bookworm\)/);
      assert.match(status, new RegExp(`Unit: ${scopeOf(name).replace(/\\/g, '\\\\')}`));
      assert.match(status, /init\.scope/, 'the process tree of the scope');

      const shown = parseProps(await box.runOk(['mctl', 'show', name]));
      for (const key of ['Name', 'Id', 'Class', 'Service', 'Unit', 'Leader', 'RootDirectory', 'State']) {
        assert.equal(shown[key], stock[key], `mctl show ${key} = machinectl show ${key}`);
      }
      const manager = parseProps(await box.runOk(['mctl', 'show']));
      assert.equal(manager.PoolPath, '/var/lib/machines');
      assert.match(await box.runOk(['mctl', 'list-images']), /^debian\s+directory/m);
    } finally {
      await stopNested(box, name);
    }
  });

  test(`[${service}] mctl shell runs a command in the machine and returns its status`, async () => {
    const { box } = held;
    const name = `t-box-s-${service === 'mctl-machined' ? 'ours' : 'stock'}`;
    await bootNested(box, name);
    try {
      // The machine id proves which machine answered (the hostname comes from the image).
      const id = (await box.runOk(['machinectl', 'show', name, '-p', 'Id', '--value'])).trim();
      const r = await box.run(['mctl', 'shell', name, '/bin/sh', '-c', 'echo "in $(cat /etc/machine-id)"; exit 7']);
      assert.equal(r.stdout.replace(/\r/g, '').trim(), `in ${id}`, `mctl shell → ${r.signal ?? r.status}, stderr: ${JSON.stringify(r.stderr)}`);
      assert.equal(r.status, 7, r.stderr);
    } finally {
      await stopNested(box, name);
    }
  });

  test(`[${service}] mctl poweroff, terminate and kill end machines`, async () => {
    const { box } = held;
    const tag = service === 'mctl-machined' ? 'ours' : 'stock';
    const [a, b] = [`t-box-p-${tag}`, `t-box-t-${tag}`];
    await bootNested(box, a);
    await bootNested(box, b);
    try {
      await box.runOk(['mctl', 'poweroff', a]);
      await machineGone(box, a);
      // An orderly poweroff: nspawn exits 0 and its service ends cleanly.
      await waitFor(async () => (await box.run(['systemctl', 'is-active', `${a}.service`])).stdout.trim() !== 'active', 10_000, `${a}.service ended`);
      assert.equal((await box.runOk(['systemctl', 'show', `${a}.service`, '-p', 'ExecMainStatus', '--value'])).trim(), '0');

      // kill --kill-whom=leader with SIGRTMIN+4 is also a poweroff request; terminate ends the rest.
      await box.runOk(['mctl', 'kill', '--kill-whom=leader', '--signal=SIGRTMIN+4', b]);
      await machineGone(box, b);
      await bootNested(box, b);
      await box.runOk(['mctl', 'terminate', b]);
      await machineGone(box, b);
      assert.equal((await box.runOk(['systemctl', 'show', scopeOf(b), '-p', 'ActiveState', '--value'])).trim(), 'inactive');
      assert.equal((await box.runOk(['mctl', 'list', '--no-legend'])).trim(), '');
    } finally {
      await stopNested(box, a);
      await stopNested(box, b);
    }
  });

  test(`[${service}] bad input gives one clear line and a non-zero exit`, async () => {
    const { box } = held;
    for (const [args, expected] of [
      [['status', 't-box-nonexistent'], /t-box-nonexistent/],
      [['terminate', 't-box-nonexistent'], /t-box-nonexistent/],
      [['status', 'bad/name'], /bad\/name/],
    ] as const) {
      const r = await box.run(['mctl', ...args]);
      assert.notEqual(r.status, 0, `mctl ${args.join(' ')} must fail`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
      assert.match(lines[0]!, expected);
      assert.doesNotMatch(r.stderr, /\bat .*\.js:\d+/, 'no stack trace');
    }
  });
}
