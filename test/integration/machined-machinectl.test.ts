// Stock machinectl (systemd 252) against mctl-machined on a private bus. machinectl refuses to
// run unless /run/systemd/system exists (i.e. systemd is PID 1), so every invocation runs in a
// private mount namespace with a tmpfs on /run/systemd that has that directory; it honours
// DBUS_SYSTEM_BUS_ADDRESS for the rest.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createArgs, recordSignals, setup, waitFor, type Env } from './machined-harness.js';

function machinectl(env: Env, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', '--', 'sh', '-c', `mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec machinectl --no-pager ${quoted}`], {
    env: { ...env.env, SYSTEMD_COLORS: '0', SYSTEMD_PAGER: '' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('stock machinectl against mctl-machined', () => {
  let env: Env;
  let signals: Awaited<ReturnType<typeof recordSignals>>;

  before(async () => {
    env = await setup();
    signals = await recordSignals(env.client);
    for (const name of ['t-md-mc1', 't-md-mc2']) await env.manager('CreateMachine', 'sayssusa(sv)', createArgs(name, env.leader().pid!));
  });
  after(async () => {
    await env?.close();
  });

  it('machinectl list shows the machines (and .host only with --all)', () => {
    const r = machinectl(env, 'list');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^t-md-mc1\s+container\s+mctl-test\s+debian\s+12/m);
    assert.match(r.stdout, /^t-md-mc2\s+container\s+mctl-test/m);
    assert.doesNotMatch(r.stdout, /\.host/);
    assert.match(r.stdout, /2 machines listed\./);
    const all = machinectl(env, 'list', '--all');
    assert.match(all.stdout, /^\.host\s+host/m);
  });

  it('machinectl status and show read the Machine properties', () => {
    const status = machinectl(env, 'status', 't-md-mc1');
    assert.equal(status.status, 0, status.stderr);
    assert.match(status.stdout, /^t-md-mc1$/m);
    assert.match(status.stdout, /OS: Debian GNU\/Linux 12/);
    assert.match(status.stdout, /Unit: machine-t\\x2dmd\\x2dmc1\.scope/);
    assert.match(status.stdout, /Leader: \d+ \(sleep\)/);
    const show = machinectl(env, 'show', 't-md-mc1', '-p', 'Name', '-p', 'Class', '-p', 'State', '-p', 'Service');
    assert.equal(show.stdout, 'Name=t-md-mc1\nService=mctl-test\nClass=container\nState=running\n');
    const manager = machinectl(env, 'show', '-p', 'PoolPath');
    assert.equal(manager.stdout.trim(), `PoolPath=${env.env['MCTL_POOL']}`);
  });

  it('unknown machines fail the way they do against systemd-machined', () => {
    const r = machinectl(env, 'status', 't-md-nope');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /No machine 't-md-nope' known/);
  });

  it('machinectl kill and terminate end the machines', async () => {
    const kill = machinectl(env, 'kill', '--signal=KILL', 't-md-mc1');
    assert.equal(kill.status, 0, kill.stderr);
    await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === 't-md-mc1'), 5000, 'machine killed');
    const term = machinectl(env, 'terminate', 't-md-mc2');
    assert.equal(term.status, 0, term.stderr);
    await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === 't-md-mc2'), 5000, 'machine terminated');
    const r = machinectl(env, 'list');
    assert.match(r.stdout, /No machines\./);
  });
});
