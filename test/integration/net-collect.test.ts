// "Rules disappear with the machine, also after the launcher was killed": a veth container with a
// port forward registered with the BUILT mctl-machined on a private bus; the launcher's own
// watcher and then the launcher are SIGKILLed, so only the service can clean up. Once it drops
// the machine, `ip link`, our nft table and the net state directory show nothing of it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { collect, machineLockPath, netConfig, readMachineNetState } from '../../src/net/index.js';
import { debianTree } from '../helpers/images.js';
import { run } from '../helpers/netns.js';
import { CGROUP_DIRS, setup, waitFor, recordSignals, type Env } from './machined-harness.js';

const nspawn = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const id = randomBytes(2).toString('hex');
const r = parseInt(id.slice(0, 2), 16);
const netDir = mkdtempSync('/tmp/mctl-ncol-');
const netEnv = {
  MCTL_NET_STATE_DIR: netDir,
  MCTL_NET_TABLE: `tncol${id}`,
  MCTL_NET_POOL4: `10.243.${r}.0/24`,
  MCTL_NET_POOL6: `fd6d:6374:${(0x3000 + r).toString(16)}::/48`,
};
const cfg = netConfig(netEnv);
const name = `t-ncol-${id}`;
const hostPort = 23000 + ((r * 7 + parseInt(id.slice(2), 16)) % 5000);
const procs: ChildProcess[] = [];
let env: Env | undefined;

after(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const machine of [name, `${name}-r`]) for (const pid of watcherPids(machine)) killQuietly(pid);
  await env?.close();
  for (const machine of [name, `${name}-r`]) await collect(machine, cfg).catch(() => undefined);
  run(['nft', 'delete', 'table', 'inet', cfg.table]);
  rmSync(netDir, { recursive: true, force: true });
  for (const machine of [name, `${name}-r`]) {
    const scope = `machine-${machine.replace(/-/g, '\\x2d')}.scope`;
    for (const dir of CGROUP_DIRS) if (existsSync(join(dir, scope))) run(['rmdir', join(dir, scope)]);
  }
});

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** The launcher's watcher: `sh -c 'flock -x LOCK true; exec collector'` and its flock(1) child. */
function watcherPids(machine: string): number[] {
  const lock = machineLockPath(machine, cfg);
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes(lock) && /(^|\/)(sh|flock)$/.test(argv[0] ?? '')) pids.push(Number(entry));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

function linkNames(): string[] {
  const links = JSON.parse(run(['ip', '-j', 'link', 'show']).stdout || '[]') as Array<{ ifname: string; altnames?: string[] }>;
  return links.flatMap((l) => [l.ifname, ...(l.altnames ?? [])]);
}

function nftTable(): { status: number | null; text: string } {
  const res = run(['nft', 'list', 'table', 'inet', cfg.table]);
  return { status: res.status, text: res.stdout };
}

/** Start a registered veth container with a port forward; resolves once it and its watcher run. */
async function startContainer(e: Env, machine: string, port: number, signals: Array<{ member: string; name: string }>): Promise<{ ct: ChildProcess; hostIf: string }> {
  const ct = spawn(nspawn, ['-q', '--register=yes', '--read-only', '--console=pipe', '-D', debianTree(), '-M', machine, '--network-veth', '-p', `tcp:${port}:80`, '/bin/sleep', '120'], {
    env: { ...process.env, ...e.env, ...netEnv },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  procs.push(ct);
  let ctErr = '';
  ct.stderr?.on('data', (d: Buffer) => (ctErr += d.toString()));
  await waitFor(() => signals.some((s) => s.member === 'MachineNew' && s.name === machine) || ct.exitCode !== null, 15_000, 'the machine to register');
  assert.equal(ct.exitCode, null, `launcher exited early: ${ctErr}`);
  await waitFor(() => watcherPids(machine).length >= 2, 5000, 'the launcher to start its watcher');
  const state = readMachineNetState(machine, cfg);
  assert.ok(state?.hostIf && state.ipv4, 'the launcher recorded its network');
  assert.ok(linkNames().includes(state.hostIf), `${state.hostIf} exists while the machine runs`);
  assert.match(nftTable().text, new RegExp(`dport ${port} .*mctl:${machine}`), 'the port forward is in our table');
  return { ct, hostIf: state.hostIf };
}

/** Only the service may clean up now: first the watcher (else it would collect), then the launcher. */
async function killLauncherAndWatcher(machine: string, ct: ChildProcess): Promise<void> {
  for (const pid of watcherPids(machine)) killQuietly(pid);
  await waitFor(() => watcherPids(machine).length === 0, 2000, 'the watcher to die');
  ct.kill('SIGKILL');
  await new Promise((res) => (ct.exitCode !== null || ct.signalCode !== null ? res(null) : ct.once('exit', res)));
}

/** What `ip link`, our nft table and the state directory still show of the machine. */
async function assertNothingLeft(e: Env, machine: string, hostIf: string): Promise<void> {
  // The service logs this once collect() has finished (state, lock, links, rules, table).
  await waitFor(() => e.machined.stderr().includes(`Removed the network of machine ${machine}.`), 10_000, 'the service to collect the network');
  assert.ok(!linkNames().includes(hostIf), `ip link: ${hostIf} is gone`);
  const table = nftTable();
  assert.notEqual(table.status, 0, `nft list table inet ${cfg.table} fails (table deleted): ${table.text}`);
  const left = existsSync(join(netDir, 'machines')) ? readdirSync(join(netDir, 'machines')).filter((f) => f.startsWith(`${machine}.`)) : [];
  assert.deepEqual(left, [], 'no state or lock file of the machine');
  assert.equal(await collect(machine, cfg), 'absent');
}

test('launcher and watcher SIGKILLed: mctl-machined collects links, nft rules and state', async () => {
  debianTree();
  env = await setup({ extraEnv: netEnv });
  const signals = await recordSignals(env.client);
  const { ct, hostIf } = await startContainer(env, name, hostPort, signals);
  await killLauncherAndWatcher(name, ct);
  await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === name), 10_000, 'MachineRemoved');
  await assertNothingLeft(env, name, hostIf);
});

test('the machine died while the service was down: the restarted service collects its network', async () => {
  assert.ok(env, 'the first test set up the service');
  const machine = `${name}-r`;
  const signals = await recordSignals(env.client);
  const { ct, hostIf } = await startContainer(env, machine, hostPort + 1, signals);
  await env.machined.kill9();
  await killLauncherAndWatcher(machine, ct);
  assert.ok(readMachineNetState(machine, cfg), 'nobody has collected yet');
  env.machined = await env.startMachined();
  await assertNothingLeft(env, machine, hostIf);
});
