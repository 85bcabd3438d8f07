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
  for (const pid of watcherPids()) killQuietly(pid);
  await env?.close();
  await collect(name, cfg).catch(() => undefined);
  run(['nft', 'delete', 'table', 'inet', cfg.table]);
  rmSync(netDir, { recursive: true, force: true });
  const scope = `machine-${name.replace(/-/g, '\\x2d')}.scope`;
  for (const dir of CGROUP_DIRS) if (existsSync(join(dir, scope))) run(['rmdir', join(dir, scope)]);
});

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** The launcher's watcher: `sh -c 'flock -x LOCK true; exec collector'` and its flock(1) child. */
function watcherPids(): number[] {
  const lock = machineLockPath(name, cfg);
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes(lock) && (argv[0] === 'sh' || argv[0]?.endsWith('flock'))) pids.push(Number(entry));
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

test('launcher and watcher SIGKILLed: mctl-machined collects links, nft rules and state', async () => {
  debianTree();
  env = await setup({ extraEnv: netEnv });
  const signals = await recordSignals(env.client);
  const ct = spawn(nspawn, ['-q', '--register=yes', '--read-only', '--console=pipe', '-D', debianTree(), '-M', name, '--network-veth', '-p', `tcp:${hostPort}:80`, '/bin/sleep', '120'], {
    env: { ...process.env, ...env.env, ...netEnv },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  procs.push(ct);
  let ctErr = '';
  ct.stderr?.on('data', (d: Buffer) => (ctErr += d.toString()));

  await waitFor(() => signals.some((s) => s.member === 'MachineNew' && s.name === name) || ct.exitCode !== null, 15_000, 'the machine to register');
  assert.equal(ct.exitCode, null, `launcher exited early: ${ctErr}`);
  await waitFor(() => watcherPids().length >= 2, 5000, 'the launcher to start its watcher');
  const state = readMachineNetState(name, cfg);
  assert.ok(state?.hostIf && state.ipv4, 'the launcher recorded its network');
  const hostIf = state.hostIf;
  assert.ok(linkNames().includes(hostIf), `${hostIf} exists while the machine runs`);
  assert.match(nftTable().text, new RegExp(`dport ${hostPort} .*mctl:${name}`), 'the port forward is in our table');

  // Only the service may clean up now: first the watcher (else it would collect), then the launcher.
  for (const pid of watcherPids()) killQuietly(pid);
  await waitFor(() => watcherPids().length === 0, 2000, 'the watcher to die');
  ct.kill('SIGKILL');
  await new Promise((res) => (ct.exitCode !== null || ct.signalCode !== null ? res(null) : ct.once('exit', res)));

  await waitFor(() => signals.some((s) => s.member === 'MachineRemoved' && s.name === name), 10_000, 'MachineRemoved');
  await waitFor(() => readMachineNetState(name, cfg) === null, 10_000, 'the service to collect the network');
  assert.ok(!linkNames().includes(hostIf), `ip link: ${hostIf} is gone`);
  const table = nftTable();
  assert.notEqual(table.status, 0, `nft list table inet ${cfg.table} fails (table deleted): ${table.text}`);
  const left = existsSync(join(netDir, 'machines')) ? readdirSync(join(netDir, 'machines')).filter((f) => f.startsWith(name)) : [];
  assert.deepEqual(left, [], 'no state or lock file of the machine');
  await waitFor(() => env!.machined.stderr().includes(`Removed the network of machine ${name}.`), 2000, 'the service to log the collection');
  assert.equal(await collect(name, cfg), 'absent');
});
