// Test fixtures for the CLI tests: our machine manager on a private bus, and real containers
// (stock systemd-nspawn booting the cached Debian tree under a tmpfs overlay, so the cached tree
// is never written) registered with it through RegisterMachine, as a launcher would.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import dbus from 'dbus-next';
import { startPrivateBus, type PrivateBus } from '../helpers/dbus-daemon.js';
import { connectBus, call } from '../../src/dbus/bus.js';

export const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
export const MCTL = join(root, 'bin/mctl');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Service {
  bus: PrivateBus;
  pool: string;
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

/** A private bus with mctl-machined on it, serving a temporary image pool. */
export async function startService(): Promise<Service> {
  const bus = await startPrivateBus();
  const pool = mkdtempSync('/tmp/mctl-cli-pool-');
  const state = mkdtempSync('/tmp/mctl-cli-state-');
  const env: NodeJS.ProcessEnv = {
    ...bus.env,
    MCTL_POOL: pool,
    MCTL_MACHINED_STATE_DIR: state,
    MCTL_STATE_DIR: state,
    SYSTEMD_COLORS: '0',
    NO_COLOR: '1',
  };
  const daemon: ChildProcess = spawn(join(root, 'bin/mctl-machined'), [], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  let exited = false;
  daemon.once('exit', () => (exited = true));
  // Ready when the name is owned.
  const probe = connectBus(bus.env['DBUS_SYSTEM_BUS_ADDRESS']);
  try {
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (exited) throw new Error('mctl-machined exited at start');
      const r = await call(probe, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'NameHasOwner', signature: 's', body: ['org.freedesktop.machine1'] });
      if (r.body[0] === true) break;
      if (Date.now() > deadline) throw new Error('mctl-machined did not take its bus name within 15 s');
      await sleep(50);
    }
  } finally {
    probe.disconnect();
  }
  return {
    bus,
    pool,
    env,
    async stop() {
      if (!exited && daemon.pid) {
        const gone = new Promise((r) => daemon.once('exit', r));
        process.kill(daemon.pid, 'SIGTERM');
        await Promise.race([gone, sleep(5000)]);
        if (!exited) process.kill(daemon.pid, 'SIGKILL');
      }
      await bus.stop();
      removeJournalLinksInto(pool);
      rmSync(pool, { recursive: true, force: true });
      rmSync(state, { recursive: true, force: true });
    },
  };
}

/**
 * Machines started by `mctl start` get container@.service's --link-journal=try-guest: the host's
 * /var/log/journal/MACHINE-ID becomes a symlink into the tree (as with systemd-nspawn, it stays
 * after the machine ends). Remove those pointing into a test pool before the pool goes.
 */
function removeJournalLinksInto(pool: string): void {
  const dir = '/var/log/journal';
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir)) {
    try {
      if (readlinkSync(join(dir, entry)).startsWith(`${pool}/`)) unlinkSync(join(dir, entry));
    } catch {
      // not a symlink
    }
  }
}

/** PIDs of the processes started for machine NAME (their argv has `--machine=NAME`): the detached launcher and its restart loop. */
export function launcherPids(name: string): string[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`--machine=${name}\0`);
      } catch {
        return false;
      }
    });
}

/** A small directory image with the identity files image-status reads. */
export function makeTinyImage(pool: string, name: string): string {
  const p = join(pool, name);
  mkdirSync(join(p, 'etc'), { recursive: true });
  mkdirSync(join(p, 'usr/lib'), { recursive: true });
  writeFileSync(join(p, 'etc/hostname'), `${name}-host\n`);
  writeFileSync(join(p, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  writeFileSync(join(p, 'usr/lib/os-release'), 'NAME="Tiny"\nID=tiny\nVERSION_ID=1\nPRETTY_NAME="Tiny Linux 1"\n');
  symlinkSync('../usr/lib/os-release', join(p, 'etc/os-release'));
  return p;
}

/** A writable bootable image in the pool: an overlay over the cached tree (cached tree untouched). */
export function overlayImage(pool: string, name: string, tree: string): { path: string; remove(): void } {
  const base = mkdtempSync(`/tmp/mctl-cli-ovl-${name}-`);
  for (const d of ['upper', 'work']) mkdirSync(join(base, d));
  const path = join(pool, name);
  mkdirSync(path);
  const r = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${tree},upperdir=${base}/upper,workdir=${base}/work`, path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`overlay mount failed: ${r.stderr}`);
  return {
    path,
    remove() {
      spawnSync('umount', ['-l', path]);
      rmSync(path, { recursive: true, force: true });
      rmSync(base, { recursive: true, force: true });
    },
  };
}

function cgroupRoots(): string[] {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return ['/sys/fs/cgroup'];
  return ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd'].filter((p) => existsSync(join(p, 'cgroup.procs')));
}

function removeCgroup(path: string): void {
  for (let attempt = 0; attempt < 100 && existsSync(path); attempt++) {
    try {
      for (const e of readdirSync(path, { withFileTypes: true })) if (e.isDirectory()) removeCgroup(join(path, e.name));
      rmdirSync(path);
    } catch {
      spawnSync('sleep', ['0.05']);
    }
  }
}

function childNamed(parent: number, comm: string): number | undefined {
  try {
    for (const t of readdirSync(`/proc/${parent}/task`)) {
      for (const c of readFileSync(`/proc/${parent}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
        if (readFileSync(`/proc/${c}/comm`, 'utf8').trim() === comm) return Number(c);
      }
    }
  } catch {
    return undefined;
  }
  return undefined;
}

export interface TestMachine {
  name: string;
  leader: number;
  nspawnPid: number;
  output(): string;
  /** nspawn's exit status once it exited, else undefined. */
  exitStatus(): number | null | undefined;
  stop(): Promise<void>;
}

/** Boot the Debian tree with stock nspawn (no registration of its own) and register it with RegisterMachine. */
export async function bootRegistered(service: Service, name: string, tree: string): Promise<TestMachine> {
  const cgroups = cgroupRoots().map((r) => join(r, `mctl-cli-${name}`));
  for (const cg of cgroups) mkdirSync(cg, { recursive: true });
  const join1 = cgroups.map((cg) => `echo $$ > '${cg}/cgroup.procs'`).join(' && ');
  const args = ['--register=no', '--keep-unit', '--volatile=overlay', '--private-network', `--machine=${name}`, '--boot', `--directory=${tree}`, '--console=passive'];
  const child = spawn('sh', ['-c', `${join1} && exec setpriv --pdeathsig TERM -- systemd-nspawn "$@"`, 'sh', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env['PATH'], SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1', SYSTEMD_COLORS: '0' },
    detached: true,
  });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out = (out + c.toString()).slice(-16384)));
  child.stderr?.on('data', (c: Buffer) => (out = (out + c.toString()).slice(-16384)));
  let exited = false;
  let status: number | null | undefined;
  child.once('exit', (code) => {
    exited = true;
    status = code;
  });
  const nspawnPid = child.pid ?? 0;

  const stop = async (): Promise<void> => {
    if (!exited) {
      const gone = new Promise((r) => child.once('exit', r));
      process.kill(nspawnPid, 'SIGTERM');
      await Promise.race([gone, sleep(15_000)]);
      if (!exited) {
        process.kill(nspawnPid, 'SIGKILL');
        await gone;
      }
    }
    for (const cg of cgroups) removeCgroup(cg);
    rmSync(`/run/systemd/nspawn/propagate/${name}`, { recursive: true, force: true });
  };

  try {
    const deadline = Date.now() + 60_000;
    let leader = 0;
    while (!leader) {
      if (exited) throw new Error(`systemd-nspawn exited: ${out}`);
      if (Date.now() > deadline) throw new Error('no container leader within 60 s');
      leader = childNamed(nspawnPid, 'systemd') ?? 0;
      if (!leader) await sleep(10);
    }
    for (;;) {
      const r = spawnSync('nsenter', ['-t', String(leader), '-a', '--', 'systemctl', 'is-system-running', '--wait'], { encoding: 'utf8', timeout: 30_000 });
      const said = (r.stdout ?? '').trim();
      if (said === 'running' || said === 'degraded') break;
      if (Date.now() > deadline) throw new Error(`container did not finish booting (${said})`);
      await sleep(50);
    }
    const bus = connectBus(service.env['DBUS_SYSTEM_BUS_ADDRESS']);
    try {
      await call(bus, {
        destination: 'org.freedesktop.machine1',
        path: '/org/freedesktop/machine1',
        interface: 'org.freedesktop.machine1.Manager',
        member: 'RegisterMachine',
        signature: 'sayssus',
        body: [name, randomBytes(16), 'systemd-nspawn', 'container', leader, tree],
      });
    } finally {
      bus.disconnect();
    }
    return { name, leader, nspawnPid, output: () => out, exitStatus: () => status, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run the built bin/mctl with the service's environment. */
export function mctl(service: Service | { env: NodeJS.ProcessEnv }, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): RunResult {
  const r = spawnSync(process.execPath, [MCTL, ...args], {
    env: { ...service.env, ...opts.env },
    encoding: 'utf8',
    input: opts.input ?? '',
    timeout: opts.timeoutMs ?? 60_000,
  });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export { dbus };

/** A command on a real PTY (util-linux `script`), driven by what it prints. */
export interface PtySession {
  output(): string;
  send(text: string): void;
  waitFor(re: RegExp, ms?: number): Promise<string>;
  exit: Promise<number | null>;
  kill(): void;
}

export function ptySpawn(command: string[], env: NodeJS.ProcessEnv): PtySession {
  const quoted = command.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('script', ['-q', '-e', '-c', quoted, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { TERM: 'dumb', ...env } });
  let out = '';
  let from = 0;
  const waiters: (() => void)[] = [];
  const wakeAll = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  const onData = (c: Buffer): void => {
    out += c.toString('utf8');
    wakeAll();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      wakeAll();
      resolve(code);
    }),
  );
  return {
    output: () => out,
    send: (text) => void child.stdin.write(text),
    kill: () => {
      if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
    },
    exit,
    waitFor(re, ms = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}; output: ${JSON.stringify(out.slice(-600))}`)), ms);
        const check = (): void => {
          const m = re.exec(out.slice(from));
          if (m) {
            from += m.index + m[0].length;
            clearTimeout(timer);
            resolve(m[0]);
          } else if (child.exitCode !== null) {
            clearTimeout(timer);
            reject(new Error(`exited while waiting for ${re}; output: ${JSON.stringify(out.slice(-600))}`));
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}
