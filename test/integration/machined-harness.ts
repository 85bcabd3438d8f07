// Shared pieces of the machined integration tests: run the BUILT bin/mctl-machined on a private
// bus with a temp state dir, talk to it with the project's D-Bus client, make leader processes,
// and check that nothing (scopes, state files, processes) is left behind.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import dbus, { type Message, type MessageBus } from 'dbus-next';
import { call, connectBus } from '../../src/dbus/bus.js';
import { startPrivateBus, type PrivateBus } from '../helpers/dbus-daemon.js';

export const MACHINED_BIN = fileURLToPath(new URL('../../bin/mctl-machined', import.meta.url));
export const MANAGER = { destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager' };
export const CGROUP_DIRS = ['/sys/fs/cgroup/unified/machine.slice', '/sys/fs/cgroup/systemd/machine.slice', '/sys/fs/cgroup/machine.slice'];

export interface Machined {
  proc: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
  kill9(): Promise<void>;
}

export interface Env {
  bus: PrivateBus;
  stateDir: string;
  env: NodeJS.ProcessEnv;
  client: MessageBus;
  machined: Machined;
  leaders: ChildProcess[];
  startMachined(): Promise<Machined>;
  manager(member: string, signature?: string, body?: unknown[]): Promise<Message>;
  leader(): ChildProcess;
  close(): Promise<void>;
}

async function waitForName(client: MessageBus, present: boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await call(client, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'NameHasOwner', signature: 's', body: ['org.freedesktop.machine1'] });
    if (r.body[0] === present) return;
    if (Date.now() > end) throw new Error(`org.freedesktop.machine1 ${present ? 'did not appear' : 'did not go away'} within ${timeoutMs} ms`);
    await new Promise((r2) => setTimeout(r2, 25));
  }
}

export async function setup(options: { extraEnv?: NodeJS.ProcessEnv } = {}): Promise<Env> {
  const bus = await startPrivateBus();
  const stateDir = mkdtempSync(join(tmpdir(), 'mctl-machined-state-'));
  const pool = mkdtempSync(join(tmpdir(), 'mctl-machined-pool-'));
  const env = { ...bus.env, MCTL_MACHINED_STATE_DIR: stateDir, MCTL_POOL: pool, ...options.extraEnv };
  const client = connectBus(bus.env['DBUS_SYSTEM_BUS_ADDRESS']);
  const leaders: ChildProcess[] = [];

  const startMachined = async (): Promise<Machined> => {
    const proc = spawn(MACHINED_BIN, [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    await Promise.race([
      waitForName(client, true),
      exited.then(() => {
        throw new Error(`mctl-machined exited early: ${err}`);
      }),
    ]);
    const m: Machined = {
      proc,
      stderr: () => err,
      async stop() {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        proc.kill('SIGTERM');
        await exited;
      },
      async kill9() {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        proc.kill('SIGKILL');
        await exited;
        await waitForName(client, false);
      },
    };
    return m;
  };

  const e: Env = {
    bus,
    stateDir,
    env,
    client,
    machined: await startMachined(),
    leaders,
    startMachined,
    manager: (member, signature = '', body = []) => call(client, { ...MANAGER, member, signature, body, timeoutMs: 10_000 }),
    leader() {
      const p = spawn('sleep', ['1000'], { stdio: 'ignore' });
      leaders.push(p);
      return p;
    },
    async close() {
      for (const p of leaders) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      await e.machined.stop();
      client.disconnect();
      await bus.stop();
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(pool, { recursive: true, force: true });
      // Our own cleanup, independent of the service: no test scope may survive the test.
      for (const dir of CGROUP_DIRS) for (const s of scopesIn(dir)) removeTree(join(dir, s));
    },
  };
  return e;
}

/** machine-t-md-*.scope directories (tests' machines) under a machine.slice directory. */
export function scopesIn(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => n.startsWith('machine-t\\x2dmd') && n.endsWith('.scope'));
}

export function testScopes(): string[] {
  return CGROUP_DIRS.flatMap((d) => scopesIn(d));
}

function removeTree(dir: string): void {
  spawnSync('find', [dir, '-depth', '-type', 'd', '-exec', 'rmdir', '{}', ';'], { stdio: 'ignore' });
}

export function createArgs(name: string, leader: number, props: Array<[string, unknown]> = []): unknown[] {
  return [name, Buffer.alloc(0), 'mctl-test', 'container', leader, '', props];
}

export function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  return (async () => {
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
}

/** Collect MachineNew/MachineRemoved signals seen by `client`. */
export async function recordSignals(client: MessageBus): Promise<Array<{ member: string; name: string; path: string }>> {
  const seen: Array<{ member: string; name: string; path: string }> = [];
  await call(client, {
    destination: 'org.freedesktop.DBus',
    path: '/org/freedesktop/DBus',
    interface: 'org.freedesktop.DBus',
    member: 'AddMatch',
    signature: 's',
    body: ["type='signal',interface='org.freedesktop.machine1.Manager'"],
  });
  client.on('message', (msg: Message) => {
    if (msg.type === dbus.MessageType.SIGNAL && msg.interface === 'org.freedesktop.machine1.Manager') {
      seen.push({ member: msg.member ?? '', name: msg.body[0] as string, path: msg.body[1] as string });
    }
  });
  return seen;
}

export async function expectDBusError(p: Promise<unknown>, name: string): Promise<string> {
  try {
    await p;
  } catch (err) {
    const type = (err as { type?: string }).type;
    if (type !== name) throw new Error(`expected ${name}, got ${type ?? String(err)}: ${(err as Error).message}`);
    return (err as Error).message;
  }
  throw new Error(`expected ${name}, but the call succeeded`);
}
