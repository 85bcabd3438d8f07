// Test helpers shared by the launcher's integration tests: the BUILT mctl-machined on a private
// bus, and waiting for a booted container's manager to settle.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { call } from '../../src/dbus/bus.js';
import type { MessageBus } from 'dbus-next';

const MACHINED = fileURLToPath(new URL('../../bin/mctl-machined', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface MachinedProcess {
  readonly child: ChildProcess;
  /** SIGTERM, then SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/** Start bin/mctl-machined with `env` (the private bus) and wait until it owns org.freedesktop.machine1. */
export async function startMachinedProcess(client: MessageBus, env: NodeJS.ProcessEnv, stateDir: string): Promise<MachinedProcess> {
  const child = spawn(MACHINED, [], { env: { ...env, MCTL_MACHINED_STATE_DIR: stateDir }, stdio: ['ignore', 'ignore', 'inherit'] });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([gone, sleep(5000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error('mctl-machined exited at start');
    const r = await call(client, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'NameHasOwner', signature: 's', body: ['org.freedesktop.machine1'] });
    if (r.body[0] === true) return { child, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error('mctl-machined did not take its name');
    }
    await sleep(50);
  }
}

/** `systemctl is-system-running --wait` inside the container; retried while PID 1 has no bus socket yet. */
export async function waitSystemRunning(leader: number, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const r = spawnSync('nsenter', ['-t', String(leader), '-a', 'systemctl', 'is-system-running', '--wait'], { encoding: 'utf8', timeout: timeoutMs });
    last = r.stdout.trim();
    if (!['', 'offline', 'unknown', 'starting', 'initializing'].includes(last)) return last;
    await sleep(50);
  }
  return last;
}
