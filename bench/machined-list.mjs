// Registration service speed: ours (mctl-machined) vs stock systemd-machined 252, same client,
// same host, one run. Measured with a dbus-next client doing low-level calls:
//   - CreateMachine+TerminateMachine round trips per second (each with its own leader process,
//     a real transient scope in machine.slice when systemd is PID 1);
//   - ListMachines latency (median µs) with 1,000 registered machines;
//   - the service's RSS with 1,000 machines.
// The comparison needs systemd as PID 1 (stock systemd-machined cannot run otherwise), so the
// default mode boots the "systemd host in a box" (test/helpers/box.ts) and runs the inner
// measurement in it twice: against stock systemd-machined, then against ours installed as a
// unit. Without the box (--host), only ours is measured, on a private bus (cgroupfs backend).
//
//   node --import tsx bench/machined-list.mjs            # box: ours vs stock, prints ratios
//   MCTL_MACHINED_NODE_FLAGS= node --import tsx bench/machined-list.mjs   # ours without its V8 flags
//   node --import tsx bench/machined-list.mjs --host     # ours only, private bus
//   node bench/machined-list.mjs --inner [--machines N]  # one measurement on the current system bus
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import dbus from 'dbus-next';

const self = fileURLToPath(import.meta.url);
const checkout = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '');
const MANAGER = { destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager' };

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function callManager(bus, member, signature = '', body = []) {
  const msg = new dbus.Message({ ...MANAGER, member, signature, body });
  let timer;
  try {
    return await Promise.race([
      bus.call(msg),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${member}: no reply within 30 s`)), 30_000);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function spawnLeaders(n) {
  // One `sleep` per machine: every machine needs a live leader of its own.
  const procs = [];
  for (let i = 0; i < n; i++) procs.push(spawn('sleep', ['3600'], { stdio: 'ignore' }));
  return procs;
}

function rssKiB(pid) {
  const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function servicePid(bus) {
  const r = await bus.call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetConnectionUnixProcessID', signature: 's', body: [MANAGER.destination] }));
  return r.body[0];
}

const props = () => [];
const createArgs = (name, pid) => [name, Buffer.alloc(0), 'bench', 'container', pid, '', props()];

/** One measurement against whatever owns org.freedesktop.machine1 on the system bus. */
async function inner() {
  const count = Number(arg('--machines', '1000'));
  const pairs = Number(arg('--pairs', '200'));
  const lists = Number(arg('--lists', '200'));
  const prefix = `bench-${process.pid}`;
  const bus = dbus.sessionBus({ busAddress: process.env.DBUS_SYSTEM_BUS_ADDRESS || 'unix:path=/run/dbus/system_bus_socket' });
  const leaders = [];
  try {
    // 1) Create+Terminate round trips.
    const pairLeaders = spawnLeaders(pairs + 10);
    leaders.push(...pairLeaders);
    for (let i = 0; i < 10; i++) {
      await callManager(bus, 'CreateMachine', 'sayssusa(sv)', createArgs(`${prefix}-w${i}`, pairLeaders[i].pid));
      await callManager(bus, 'TerminateMachine', 's', [`${prefix}-w${i}`]);
    }
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < pairs; i++) {
      const name = `${prefix}-p${i}`;
      await callManager(bus, 'CreateMachine', 'sayssusa(sv)', createArgs(name, pairLeaders[10 + i].pid));
      await callManager(bus, 'TerminateMachine', 's', [name]);
    }
    const pairSeconds = Number(process.hrtime.bigint() - t0) / 1e9;

    // 2) ListMachines with `count` machines.
    const listLeaders = spawnLeaders(count);
    leaders.push(...listLeaders);
    const c0 = process.hrtime.bigint();
    for (let i = 0; i < count; i++) await callManager(bus, 'CreateMachine', 'sayssusa(sv)', createArgs(`${prefix}-m${i}`, listLeaders[i].pid));
    const createSeconds = Number(process.hrtime.bigint() - c0) / 1e9;
    const listed = (await callManager(bus, 'ListMachines')).body[0].length;
    const samples = [];
    for (let i = 0; i < lists; i++) {
      const s0 = process.hrtime.bigint();
      await callManager(bus, 'ListMachines');
      samples.push(Number(process.hrtime.bigint() - s0) / 1e3);
    }
    const pid = await servicePid(bus);
    const rss = rssKiB(pid);
    // Clean up: terminate every machine (kills the leaders through their scopes).
    for (let i = 0; i < count; i++) await callManager(bus, 'TerminateMachine', 's', [`${prefix}-m${i}`]).catch(() => undefined);
    return {
      pairsPerSecond: pairs / pairSeconds,
      createPerSecond: count / createSeconds,
      listed,
      listMedianUs: median(samples),
      listP90Us: [...samples].sort((a, b) => a - b)[Math.floor(samples.length * 0.9)],
      rssKiB: rss,
    };
  } finally {
    for (const p of leaders) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    bus.disconnect();
  }
}

function report(label, r) {
  console.log(
    `${label}: ${r.pairsPerSecond.toFixed(0)} Create+Terminate/s, ${r.createPerSecond.toFixed(0)} Create/s, ` +
      `ListMachines(${r.listed}) median ${r.listMedianUs.toFixed(0)} µs (p90 ${r.listP90Us.toFixed(0)} µs), RSS ${(r.rssKiB / 1024).toFixed(1)} MiB`,
  );
}

/** Ours on a private bus on this host (no systemd needed; cgroupfs backend). */
async function host() {
  const { startPrivateBus } = await import('../test/helpers/dbus-daemon.ts');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const bus = await startPrivateBus();
  const stateDir = mkdtempSync('/tmp/mctl-bench-machined-');
  const env = { ...bus.env, MCTL_MACHINED_STATE_DIR: stateDir, MCTL_MACHINED_STOP_TIMEOUT_SEC: '5' };
  const svc = spawn(`${checkout}/bin/mctl-machined`, [], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    for (let i = 0; i < 200; i++) {
      const r = spawnSync('busctl', ['--system', 'status', 'org.freedesktop.machine1'], { env, stdio: 'ignore' });
      if (r.status === 0) break;
      await new Promise((r2) => setTimeout(r2, 50));
    }
    const out = spawnSync(process.execPath, [self, '--inner', ...process.argv.slice(2).filter((a) => a !== '--host')], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (out.status !== 0) throw new Error('inner measurement failed');
    const r = JSON.parse(out.stdout);
    report('mctl-machined (host, private bus, cgroupfs)', r);
    console.log('stock systemd-machined: not measurable on this host (PID 1 is not systemd); run without --host to compare in the box');
    return r;
  } finally {
    svc.kill('SIGTERM');
    await new Promise((r) => svc.once('exit', r));
    await bus.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/** Both services in the systemd host in a box: stock first, then ours as a unit. */
async function inBox() {
  const { Box } = await import('../test/helpers/box.ts');
  const box = await Box.boot();
  try {
    const measure = async (label) => {
      // As a unit of the box's systemd, so the leader processes live in its cgroup tree (a
      // process nsenter'ed from the host is outside it and cannot be moved into a scope).
      const r = await box.run(['systemd-run', '--wait', '--pipe', '--quiet', '-p', 'TasksMax=infinity', process.execPath, self, '--inner', '--machines', arg('--machines', '1000'), '--pairs', arg('--pairs', '200'), '--lists', arg('--lists', '200')], { timeoutMs: 600_000 });
      if (r.status !== 0) throw new Error(`${label}: inner measurement failed: ${r.stderr}`);
      const out = JSON.parse(r.stdout);
      report(label, out);
      return out;
    };
    // Every scope created with AddRef=true makes PID 1 track the creator's bus name with one
    // more match rule on its own connection; dbus-daemon's default of 512 match rules per
    // connection stalls any machined (stock or ours) at ~500 machines. Raise it for 1,000.
    await box.writeFile(
      '/etc/dbus-1/system-local.conf',
      '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n' +
        '<busconfig><limit name="max_match_rules_per_connection">65536</limit></busconfig>\n',
    );
    await box.runOk(['systemctl', 'reload', 'dbus.service']);
    await box.runOk(['systemctl', 'start', 'systemd-machined.service']);
    const reference = await measure('systemd-machined 252 (box)');
    await box.runOk(['systemctl', 'stop', 'systemd-machined.service']);
    await box.runOk(['systemctl', 'mask', '--runtime', 'systemd-machined.service']);
    // MCTL_MACHINED_NODE_FLAGS in our environment reaches the service (A/B of its V8 flags).
    const flags = process.env.MCTL_MACHINED_NODE_FLAGS;
    const env = flags === undefined ? [] : ['-p', `Environment=MCTL_MACHINED_NODE_FLAGS=${flags}`];
    await box.runOk(['systemd-run', '--unit=mctl-machined-bench', '-p', 'Type=dbus', '-p', 'BusName=org.freedesktop.machine1', ...env, `${checkout}/bin/mctl-machined`]);
    const ours = await measure('mctl-machined (box, systemd1 backend)');
    const rows = [
      { name: 'machined Create+Terminate round trips', unit: 'calls/s', ours: ours.pairsPerSecond, reference: reference.pairsPerSecond, lowerIsBetter: false },
      { name: 'machined ListMachines, 1000 machines', unit: 'µs', ours: ours.listMedianUs, reference: reference.listMedianUs, lowerIsBetter: true },
      { name: 'machined RSS, 1000 machines', unit: 'KiB', ours: ours.rssKiB, reference: reference.rssKiB, lowerIsBetter: true },
    ].map((r) => ({ ...r, runs: 1, ratio: r.ours / r.reference }));
    for (const r of rows) console.log(`${r.name}: ours/reference ${r.ratio.toFixed(2)} (${r.lowerIsBetter ? 'lower' : 'higher'} is better)`);
    return rows;
  } finally {
    await box.stop();
  }
}

/** bench/run.mjs entry: re-run this file under tsx (the box helper is TypeScript). */
export default async function run() {
  const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--json'], { cwd: checkout, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 1_800_000 });
  const lines = r.stdout.trim().split('\n');
  for (const l of lines.slice(0, -1)) console.log(l);
  if (r.status !== 0) throw new Error('machined-list benchmark failed');
  return JSON.parse(lines.at(-1));
}

if (process.argv[1] === self) {
  if (process.argv.includes('--inner')) {
    process.stdout.write(JSON.stringify(await inner()) + '\n');
  } else if (process.argv.includes('--host')) {
    await host();
  } else {
    const rows = await inBox();
    if (process.argv.includes('--json')) console.log(JSON.stringify(rows));
  }
}
