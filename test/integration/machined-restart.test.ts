// Crash recovery: 20 machines, kill -9 the service, some leaders die while it is down, restart
// → every live machine is listed again (and re-announced), dead ones are collected with their
// scopes, and re-registering a collected name works (no "already exists").
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createArgs, recordSignals, setup, testScopes, waitFor, type Env } from './machined-harness.js';

const scope = (name: string): string => `/sys/fs/cgroup/unified/machine.slice/machine-${name.replace(/-/g, '\\x2d')}.scope`;

describe('mctl-machined restart', () => {
  let env: Env;

  before(async () => {
    env = await setup();
  });
  after(async () => {
    await env?.close();
  });

  it('recovers live machines and collects dead ones after kill -9', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `t-md-r${i}`);
    const leaders = new Map<string, ReturnType<Env['leader']>>();
    for (const [i, name] of names.entries()) {
      const p = env.leader();
      leaders.set(name, p);
      // Half created (scope of our own), half registered (adopted where they are).
      if (i % 2 === 0) await env.manager('CreateMachine', 'sayssusa(sv)', createArgs(name, p.pid!));
      else await env.manager('RegisterMachine', 'sayssus', [name, Buffer.alloc(0), 'mctl-test', 'container', p.pid, '']);
    }
    assert.equal(readdirSync(env.stateDir).filter((f) => !f.startsWith('unit:')).length, 20);

    await env.machined.kill9();

    // While the service is down: six leaders die (three with scopes, three adopted).
    const dead = ['t-md-r0', 't-md-r2', 't-md-r4', 't-md-r1', 't-md-r3', 't-md-r5'];
    for (const name of dead) {
      const p = leaders.get(name)!;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
    }
    // A stray temp file from an interrupted atomic write must not confuse the reload.
    writeFileSync(join(env.stateDir, '.#t-md-r7.999'), 'NAME=t-md-r7\nLEADER=1\n');
    // An orphaned empty scope nobody owns (a crash between mkdir and state save).
    const orphan = scope('t-md-orphan');
    mkdirSync(orphan);
    mkdirSync(orphan.replace('/unified/', '/systemd/'));

    const signals = await recordSignals(env.client);
    const t0 = Date.now();
    env.machined = await env.startMachined();
    const restartMs = Date.now() - t0;

    const listed = ((await env.manager('ListMachines')).body[0] as string[][]).map((r) => r[0]).sort();
    const alive = names.filter((n) => !dead.includes(n)).sort();
    assert.deepEqual(listed, ['.host', ...alive].sort());
    // Survivors are re-announced, like systemd-machined's machine_start() on reload.
    await waitFor(() => alive.every((n) => signals.some((s) => s.member === 'MachineNew' && s.name === n)), 5000, 'MachineNew for survivors');
    // Dead ones: no state file, no scope; the orphan is swept.
    for (const name of dead) {
      assert.ok(!existsSync(join(env.stateDir, name)), `${name} state file left`);
      assert.ok(!existsSync(scope(name)), `${name} scope left`);
    }
    assert.ok(!existsSync(orphan), 'orphan scope left');
    assert.ok(!readdirSync(env.stateDir).some((f) => f.startsWith('.#')));
    for (const name of alive.filter((_, i) => i % 2 === 0)) {
      const props = await env.manager('GetMachine', 's', [name]);
      assert.match(props.body[0] as string, /t_2dmd_2dr/);
    }

    // The recovered machines are watched again: a leader dying now is noticed, both for a
    // scope of ours (t-md-r6) and for an adopted leader (t-md-r7, still a zombie here).
    const victim = 't-md-r6';
    leaders.get(victim)!.kill('SIGKILL');
    leaders.get('t-md-r7')!.kill('SIGKILL');
    await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === victim), 5000, 'MachineRemoved after restart');
    await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === 't-md-r7'), 5000, 'MachineRemoved of adopted');
    await waitFor(() => !existsSync(scope(victim)), 5000, 'scope removal after restart');

    // Re-registering a collected name works.
    const fresh = env.leader();
    await env.manager('CreateMachine', 'sayssusa(sv)', createArgs('t-md-r0', fresh.pid!));
    await env.manager('TerminateMachine', 's', ['t-md-r0']);
    await waitFor(async () => ((await env.manager('ListMachines')).body[0] as string[][]).every((r) => r[0] !== 't-md-r0'), 5000, 'terminate');

    // Orderly stop: machines stay registered for the next start (state files stay).
    await env.machined.stop();
    assert.equal(readdirSync(env.stateDir).filter((f) => !f.startsWith('unit:')).length, alive.length - 2);
    for (const p of leaders.values()) p.kill('SIGKILL');
    env.machined = await env.startMachined();
    await waitFor(async () => ((await env.manager('ListMachines')).body[0] as unknown[]).length === 1, 5000, 'all collected');
    assert.deepEqual(testScopes(), []);
    assert.equal(readdirSync(env.stateDir).length, 0);
    assert.ok(restartMs < 5000, `restart took ${restartMs} ms`);
  });
});
