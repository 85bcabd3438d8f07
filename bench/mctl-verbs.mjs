// mctl vs stock machinectl, side by side, against the same machine manager (our mctl-machined
// on a private bus, 20 registered machines): list, show NAME, status NAME, list-images.
// Stock machinectl refuses to run unless /run/systemd/system exists, so the measurement runs in
// a private mount namespace with a tmpfs on /run/systemd (the host is not touched).
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { compare } from './lib.mjs';

const self = fileURLToPath(import.meta.url);
const root = fileURLToPath(new URL('..', import.meta.url));
const MACHINES = 20;

export default async function run() {
  // Re-run this file in a private mount namespace; results come back as JSON on stdout.
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', '--', process.execPath, '--import', 'tsx', self, '--inner'], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 600_000,
  });
  if (r.status !== 0) throw new Error(`inner benchmark failed (${r.status ?? r.signal})`);
  const lines = r.stdout.trim().split('\n');
  for (const l of lines.slice(0, -1)) console.log(l);
  return JSON.parse(lines[lines.length - 1]);
}

async function inner() {
  const { startPrivateBus } = await import('../test/helpers/dbus-daemon.ts');
  const { connectBus, call } = await import('../src/dbus/bus.ts');
  spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', '/run/systemd'], { stdio: 'inherit' });
  mkdirSync('/run/systemd/system');
  const bus = await startPrivateBus();
  const pool = mkdtempSync('/tmp/mctl-bench-pool-');
  const state = mkdtempSync('/tmp/mctl-bench-state-');
  for (const n of ['alpha', 'beta', 'gamma']) {
    mkdirSync(`${pool}/${n}/etc`, { recursive: true });
    writeFileSync(`${pool}/${n}/etc/os-release`, 'ID=bench\nVERSION_ID=1\n');
  }
  const env = { ...bus.env, MCTL_POOL: pool, MCTL_MACHINED_STATE_DIR: state, SYSTEMD_COLORS: '0', SYSTEMD_PAGER: '' };
  const daemon = spawn(`${root}/bin/mctl-machined`, [], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const leaders = [];
  const client = connectBus(env.DBUS_SYSTEM_BUS_ADDRESS);
  try {
    for (let i = 0; i < 100; i++) {
      const owned = await call(client, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'NameHasOwner', signature: 's', body: ['org.freedesktop.machine1'] });
      if (owned.body[0]) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    for (let i = 0; i < MACHINES; i++) {
      const leader = spawn('sleep', ['600'], { stdio: 'ignore' });
      leaders.push(leader);
      await call(client, {
        destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager', member: 'RegisterMachine',
        signature: 'sayssus', body: [`bench-${i}`, Buffer.alloc(0), 'bench', 'container', leader.pid, '/'],
      });
    }
    const runs = 10;
    const cmp = (name, mctlArgs, machinectlArgs) =>
      compare({ name, runs, ours: () => time([`${root}/bin/mctl`, ...mctlArgs], env), reference: () => time(['machinectl', '--no-pager', ...machinectlArgs], env) });
    const results = [
      await cmp(`list (${MACHINES} machines) vs machinectl list`, ['list'], ['list']),
      await cmp('show NAME vs machinectl show NAME', ['show', 'bench-0'], ['show', 'bench-0']),
      await cmp('status NAME vs machinectl status NAME', ['status', 'bench-0'], ['status', '-n', '0', 'bench-0']),
      await cmp('list-images vs machinectl list-images', ['list-images'], ['list-images']),
    ];
    console.log(JSON.stringify(results));
  } finally {
    client.disconnect();
    for (const l of leaders) l.kill('SIGKILL');
    daemon.kill('SIGTERM');
    await new Promise((res) => daemon.once('exit', res));
    await bus.stop();
    rmSync(pool, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  }
}

function time(argv, env) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited with ${r.status}: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

if (process.argv.includes('--inner')) await inner();
else if (import.meta.url === `file://${process.argv[1]}`) await run();
