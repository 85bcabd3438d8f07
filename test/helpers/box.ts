// The "systemd host in a box" for the system test tier: stock systemd-nspawn boots the cached
// test-host tree with real systemd as PID 1 and a real system bus, so tests can exercise unit
// files, StartTransientUnit scopes under machine.slice, stock machinectl and nested containers on
// a host whose own PID 1 is not systemd.
//
// Design (measured on the dev VM, ext4, hybrid cgroups):
// - The cached tree is never written: `--volatile=overlay` stacks a tmpfs over it inside nspawn's
//   own mount namespace. Boot to `running` ≈ 0.4 s; `--ephemeral` copies the whole tree on
//   non-btrfs file systems and takes 4–5 s.
// - `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1` gives the box a pure cgroup2 tree even on a hybrid host,
//   like every current systemd host; `machine.slice` scopes then get real cgroup2 delegation.
// - nspawn runs in a cgroup of its own (created here, one per box, on every systemd-controller
//   hierarchy of the host), because with `--keep-unit` it splits *its current* cgroup into
//   `payload`/`supervisor`; doing that in the host's root cgroup would collide between boxes.
// - `SYSTEMD_SECCOMP=0`: no outer seccomp filter (a real host has none; nspawn's allow-list
//   blocks pidfd_getfd and friends for everything started by the box's systemd).
// - `--private-network`: nested containers' veths and nft rules live and die with the box.
// - Images for nested containers are writable overlays over cached trees, mounted on the host in
//   the box's work dir and bound in at /var/lib/machines/NAME.
// - Teardown always runs (test hooks, SIGINT/SIGTERM, process exit) and only ever signals the
//   nspawn process this module started, by PID. nspawn itself gets PDEATHSIG=TERM, and a box whose
//   test process died without teardown is reaped by the next boot from its state file.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { before, after, afterEach } from 'node:test';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { testhostTree } from './images.js';

/** The checkout root; bound read-only into the box at the same path, so bin/, dist/ and node_modules work inside. */
export const checkoutRoot = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

/** One JSON file per live box (BoxState), for the reaper and for tests that watch other processes' boxes. */
export const STATE_DIR = '/run/mctl-test-box';
const BOOT_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
const OUTPUT_KEEP = 64 * 1024;
/** A clean environment for commands in the box: nothing from the host's test env leaks in. */
const BOX_ENV: NodeJS.ProcessEnv = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
  TERM: 'dumb',
  SYSTEMD_PAGER: '',
  SYSTEMD_COLORS: '0',
};

export interface BoxBind {
  source: string;
  /** Path inside the box; defaults to the source path. */
  target?: string;
  readOnly?: boolean;
}

export interface BoxOptions {
  /** Extra binds on top of the checkout and /usr/bin/node. */
  binds?: BoxBind[];
  /**
   * Trees to offer as writable images at /var/lib/machines/NAME: an overlay over the cached tree
   * (instant), or with `{ tree, copy: true }` a real copy on the host's file system (≈2 s for the
   * Debian tree) where an overlay would not behave like a plain pool directory: idmapped mounts
   * (EINVAL on overlayfs) and chown of device nodes (copy-up = mknod, refused by DevicePolicy=).
   */
  machines?: Record<string, string | { tree: string; copy: boolean }>;
  /** false: keep the host's cgroup layout (hybrid here) instead of forcing cgroup2 in the box. */
  unifiedCgroups?: boolean;
  bootTimeoutMs?: number;
}

export interface RunOptions {
  /** Extra environment on top of a clean one. */
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
  /** Namespaces to enter (nsenter flags); default all (-a). */
  namespaces?: string[];
}

export interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface BoxState {
  name: string;
  ownerPid: number;
  nspawnPid: number;
  workDir: string;
  cgroups: string[];
  overlays: string[];
  /** Set once systemd in the box said running/degraded. */
  booted?: boolean;
}

const liveBoxes = new Set<Box>();

export class Box {
  /** Leader = PID of systemd (PID 1 of the box) as seen from the host. */
  leader = 0;
  /** Milliseconds from spawning nspawn to `is-system-running` answering running/degraded. */
  bootMs = 0;
  /** What `systemctl is-system-running` said when boot finished. */
  bootState = '';
  private output = '';
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly name: string,
    readonly workDir: string,
    private readonly state: BoxState,
  ) {}

  get nspawnPid(): number {
    return this.state.nspawnPid;
  }

  /** nspawn's console output so far (capped), for error messages. */
  get consoleOutput(): string {
    return this.output;
  }

  static async boot(options: BoxOptions = {}): Promise<Box> {
    reapStaleBoxes();
    const tree = testhostTree();
    const name = `t-box-${randomBytes(3).toString('hex')}`;
    mkdirSync(STATE_DIR, { recursive: true });
    const workDir = mkdtempSync(`/tmp/mctl-box-${name}-`);
    const state: BoxState = { name, ownerPid: process.pid, nspawnPid: 0, workDir, cgroups: [], overlays: [] };
    const box = new Box(name, workDir, state);
    liveBoxes.add(box);
    installExitHandlers();
    try {
      box.saveState();
      await box.start(tree, options);
      return box;
    } catch (err) {
      const tail = box.output.split('\n').slice(-40).join('\n');
      await box.stop();
      throw new Error(`box ${name} did not boot: ${(err as Error).message}\n--- nspawn output (tail) ---\n${tail}`);
    }
  }

  private saveState(): void {
    mkdirSync(STATE_DIR, { recursive: true }); // another box's teardown may have removed it
    writeFileSync(join(STATE_DIR, `${this.name}.json`), JSON.stringify(this.state));
  }

  private async start(tree: string, options: BoxOptions): Promise<void> {
    const args = [
      '--register=no',
      '--keep-unit',
      '--capability=all',
      '--volatile=overlay',
      '--private-network',
      `--machine=${this.name}`,
      '--boot',
      `--directory=${tree}`,
      `--bind-ro=${checkoutRoot}`,
      '--bind-ro=/usr/bin/node',
    ];
    for (const [machine, source] of Object.entries(options.machines ?? {})) {
      const { tree: lower, copy } = typeof source === 'string' ? { tree: source, copy: false } : source;
      const image = copy ? this.copyTree(machine, lower) : this.mountOverlay(machine, lower);
      args.push(`--bind=${image}:/var/lib/machines/${machine}`);
    }
    for (const b of options.binds ?? []) {
      args.push(`${b.readOnly ? '--bind-ro' : '--bind'}=${b.source}:${b.target ?? b.source}`);
    }

    this.state.cgroups = createBoxCgroups(this.name);
    this.saveState();
    // The shell moves itself into the box's cgroups, then execs nspawn (same PID): nspawn starts in
    // them, and PDEATHSIG stops it if this test process dies without tearing down.
    const enterCgroups = this.state.cgroups.map((cg) => `echo $$ > '${cg}/cgroup.procs'`).join(' && ');
    const env: NodeJS.ProcessEnv = { ...BOX_ENV };
    if (options.unifiedCgroups !== false) env.SYSTEMD_NSPAWN_UNIFIED_HIERARCHY = '1';
    // No nspawn seccomp filter on the box: a real host has none, and nspawn 252's allow-list
    // refuses syscalls the software under test needs (pidfd_getfd → EPERM). Units in the box
    // still get their own SystemCallFilter=; this only affects the box's outer layer.
    env.SYSTEMD_SECCOMP = '0';
    const started = Date.now();
    const child = spawn('sh', ['-c', `${enterCgroups} && exec setpriv --pdeathsig TERM -- systemd-nspawn "$@"`, 'sh', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
      detached: true, // own process group: Ctrl-C reaches this process, which tears the box down in order
    });
    this.state.nspawnPid = child.pid ?? 0;
    this.saveState();
    const keep = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString('utf8')).slice(-OUTPUT_KEEP);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    let exited: string | undefined;
    child.once('exit', (code, signal) => {
      exited = `systemd-nspawn exited (${signal ?? `status ${code}`})`;
    });

    const deadline = started + (options.bootTimeoutMs ?? BOOT_TIMEOUT_MS);
    const check = (): void => {
      if (exited) throw new Error(exited);
      if (Date.now() > deadline) throw new Error(`timed out after ${options.bootTimeoutMs ?? BOOT_TIMEOUT_MS} ms (leader ${this.leader || 'not found'})`);
    };
    // The leader is the nspawn child that has exec'd systemd (before that it is nspawn's own child).
    while (!this.leader) {
      check();
      this.leader = findChild(this.state.nspawnPid, 'systemd') ?? 0;
      if (!this.leader) await sleep(10);
    }
    // `--wait` waits for the boot to finish, but says "offline" until PID 1's bus is up: retry.
    for (;;) {
      check();
      const r = await this.run(['systemctl', 'is-system-running', '--wait'], { timeoutMs: Math.max(1000, deadline - Date.now()) });
      const said = r.stdout.trim();
      if (said === 'running' || said === 'degraded') {
        this.bootState = said;
        break;
      }
      await sleep(20);
    }
    this.bootMs = Date.now() - started;
    this.state.booted = true;
    this.saveState();
  }

  /** A writable view of a cached tree: overlay with upper/work dirs in the box's work dir. */
  private mountOverlay(machine: string, lower: string): string {
    const base = join(this.workDir, 'machines', machine);
    for (const d of ['upper', 'work', 'merged']) mkdirSync(join(base, d), { recursive: true });
    const merged = join(base, 'merged');
    execOk('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${base}/upper,workdir=${base}/work`, merged]);
    this.state.overlays.push(merged);
    this.saveState();
    return merged;
  }

  /** A private copy of a cached tree in the box's work dir (removed with it). */
  private copyTree(machine: string, tree: string): string {
    const dest = join(this.workDir, 'machines', machine);
    mkdirSync(dirname(dest), { recursive: true });
    execOk('cp', ['-a', '--reflink=auto', tree, dest]);
    return dest;
  }

  /** Run a command inside the box (all its namespaces) with a clean environment. Never throws for a non-zero exit. */
  run(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
    if (!this.leader) return Promise.reject(new Error(`box ${this.name} is not running`));
    const ns = opts.namespaces ?? ['-a'];
    return new Promise((resolve, reject) => {
      const child = spawn('nsenter', ['-t', String(this.leader), ...ns, '--', ...cmd], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...BOX_ENV, ...opts.env },
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (c: Buffer) => out.push(c));
      child.stderr.on('data', (c: Buffer) => err.push(c));
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.once('close', (status, signal) => {
        clearTimeout(timer);
        resolve({ status, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
      });
      child.stdin.on('error', () => {}); // the command may exit without reading its input
      child.stdin.end(opts.input ?? '');
    });
  }

  /** Like run(), but throws (with the command, status and stderr) unless it exits 0; returns stdout. */
  async runOk(cmd: string[], opts: RunOptions = {}): Promise<string> {
    const r = await this.run(cmd, opts);
    if (r.status !== 0) {
      throw new Error(`in box: ${cmd.join(' ')} → ${r.signal ?? `status ${r.status}`}\n${r.stderr.trim()}\n${r.stdout.trim()}`.trim());
    }
    return r.stdout;
  }

  /** Run a shell snippet inside the box (sh -ec). */
  sh(script: string, opts: RunOptions = {}): Promise<RunResult> {
    return this.run(['sh', '-ec', script], opts);
  }

  /** Copy a host file or directory into the box as DEST (parents created), keeping modes. */
  async copyIn(hostPath: string, boxPath: string): Promise<void> {
    // tar through the box's mount namespace: writing via /proc/LEADER/root would follow absolute
    // symlinks (e.g. /var/run) on the host side.
    const tar = spawnSync('tar', ['-C', dirname(hostPath), '-cf', '-', basename(hostPath)], { maxBuffer: 1 << 30 });
    if (tar.status !== 0) throw new Error(`copyIn: tar of ${hostPath} failed: ${tar.stderr.toString().trim()}`);
    const tmp = `/tmp/.copyin-${randomBytes(4).toString('hex')}`;
    await this.runOk(
      ['sh', '-ec', 'mkdir -p "$1" "$(dirname "$2")"; tar -C "$1" -xf -; rm -rf "$2"; mv "$1/$3" "$2"; rmdir "$1"', 'sh', tmp, boxPath, basename(hostPath)],
      { input: tar.stdout },
    );
  }

  /** Write a file inside the box (parents created). */
  async writeFile(boxPath: string, content: string, mode = '0644'): Promise<void> {
    await this.runOk(['sh', '-ec', 'mkdir -p "$(dirname "$1")"; cat > "$1"; chmod "$2" "$1"', 'sh', boxPath, mode], { input: content });
  }

  /** The box's journal of this boot. */
  async journal(): Promise<string> {
    const r = await this.run(['journalctl', '-b', '--no-pager', '-o', 'short-monotonic'], { timeoutMs: 20_000 });
    return r.stdout + r.stderr;
  }

  /** Stop the box and remove everything it left on the host. Idempotent; never throws. */
  stop(): Promise<void> {
    this.stopping ??= this.teardown();
    return this.stopping;
  }

  /**
   * Synchronous teardown for signal handlers and process exit, where the event loop cannot be
   * relied on (the test runner may close our pipes or kill us next): an orderly stop of a booted
   * box within graceMs, else SIGKILL to nspawn by PID; then the host-side cleanup.
   */
  stopSync(graceMs = 0): void {
    const pid = this.state.nspawnPid;
    if (pid && isAlive(pid)) {
      const deadline = Date.now() + graceMs;
      if (this.bootState !== '' && graceMs > 0) signalPid(pid, 'SIGTERM');
      while (isAlive(pid) && Date.now() < deadline) spawnSync('sleep', ['0.02']);
      if (isAlive(pid)) signalPid(pid, 'SIGKILL');
      for (let i = 0; i < 100 && isAlive(pid); i++) spawnSync('sleep', ['0.02']);
    }
    this.leader = 0;
    cleanupHost(this.state);
    liveBoxes.delete(this);
  }

  private async teardown(): Promise<void> {
    const pid = this.state.nspawnPid;
    // Poll /proc rather than wait for the 'exit' event: the process may already be a zombie.
    if (pid && isAlive(pid)) {
      // SIGTERM makes nspawn shut a booted box down in order (SIGRTMIN+3 to its systemd). During
      // boot PID 1 may not handle that signal yet, so a box that never booted is killed at once
      // (its leftover processes then go with its cgroup, see removeCgroup).
      const booted = this.bootState !== '';
      if (booted) signalPid(pid, 'SIGTERM');
      if (!booted || !(await until(() => !isAlive(pid), STOP_TIMEOUT_MS))) {
        signalPid(pid, 'SIGKILL');
        await until(() => !isAlive(pid), 5_000);
      }
    }
    this.leader = 0;
    cleanupHost(this.state);
    liveBoxes.delete(this);
  }
}

/** Boot a box. Call stop() (or use useBox()) — always. */
export const bootBox = (options?: BoxOptions): Promise<Box> => Box.boot(options);

/**
 * node:test wiring for one box per test file: boots in before(), dumps the box's journal into the
 * test output after any failed test, stops in after(). `setup` runs once after boot (install units…).
 * Tests read the box from the returned holder.
 */
export function useBox(options?: BoxOptions, setup?: (box: Box) => Promise<void>): { readonly box: Box } {
  let current: Box | undefined;
  // One hook for boot and setup: node:test does not wait for one top-level before() to finish
  // before starting the next.
  before(async () => {
    const box = await bootBox(options);
    process.stdout.write(`# box ${box.name} booted to ${box.bootState} in ${box.bootMs} ms (leader ${box.leader})\n`);
    try {
      await setup?.(box);
    } catch (err) {
      process.stdout.write(`# ----- journal of box ${box.name} after its setup failed -----\n${(await box.journal()).replace(/^/gm, '# ')}\n`);
      await box.stop();
      throw err;
    }
    current = box;
  }, { timeout: (options?.bootTimeoutMs ?? BOOT_TIMEOUT_MS) + 30_000 });
  afterEach(async (t) => {
    // `passed` is in Node ≥ 20.12's TestContext, not yet in @types/node 20.
    if (current && (t as { passed?: boolean }).passed === false) {
      const journal = await current.journal().catch((e: Error) => `(journal unavailable: ${e.message})`);
      process.stdout.write(`\n# ----- journal of box ${current.name} after failed test "${t.name}" -----\n${journal.replace(/^/gm, '# ')}\n`);
    }
  });
  after(async () => {
    await current?.stop();
  });
  return {
    get box(): Box {
      if (!current) throw new Error('box not booted (before() hook failed?)');
      return current;
    },
  };
}

/** What is left on the host from a box; empty when teardown was complete. */
export function leftovers(box: Pick<Box, 'name' | 'workDir' | 'nspawnPid'>): string[] {
  const found: string[] = [];
  if (box.nspawnPid && isAlive(box.nspawnPid) && readProc(box.nspawnPid, 'cmdline').includes(box.name)) {
    found.push(`process ${box.nspawnPid}`);
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mountPoint = line.split(' ')[4];
    if (mountPoint?.startsWith(box.workDir)) found.push(`mount ${mountPoint}`);
  }
  for (const cg of cgroupRoots()) if (existsSync(join(cg, `mctl-${box.name}`))) found.push(`cgroup ${join(cg, `mctl-${box.name}`)}`);
  if (existsSync(box.workDir)) found.push(`dir ${box.workDir}`);
  if (existsSync(join(STATE_DIR, `${box.name}.json`))) found.push(`state ${join(STATE_DIR, `${box.name}.json`)}`);
  for (const dev of existsSync('/sys/block') ? readdirSync('/sys/block') : []) {
    const backing = `/sys/block/${dev}/loop/backing_file`;
    if (existsSync(backing) && readFileSync(backing, 'utf8').startsWith(box.workDir)) found.push(`loop /dev/${dev}`);
  }
  const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout ?? '';
  for (const l of links.split('\n')) if (l.includes(box.name)) found.push(`link ${l.split(':')[1]?.trim()}`);
  return found;
}

/**
 * Install mctl into the box the way the units' comments tell an administrator to: executables on
 * PATH in /usr/local/bin (links into the read-only checkout, built beforehand with npm run build),
 * unit files in /etc/systemd/system, the D-Bus policy and tmpfiles entries. With `machined`,
 * systemd-machined is masked and mctl-machined enabled and started: it then owns
 * org.freedesktop.machine1 for every client in the box.
 */
export async function installMctl(box: Box, opts: { machined?: boolean } = {}): Promise<void> {
  const units = `${checkoutRoot}/units`;
  await box.runOk(['sh', '-ec', `
    for b in mctl mctl-nspawn mctl-machined; do ln -sf ${checkoutRoot}/bin/$b /usr/local/bin/$b; done
    cp ${units}/mctl-machined.service ${units}/container@.service ${units}/machines.target /etc/systemd/system/
    cp ${units}/org.freedesktop.machine1.conf /etc/dbus-1/system.d/
    cp ${units}/mctl-machined.tmpfiles /etc/tmpfiles.d/mctl-machined.conf
    systemd-tmpfiles --create /etc/tmpfiles.d/mctl-machined.conf
    systemctl daemon-reload
    systemctl reload dbus.service
  `]);
  if (opts.machined) await useMctlMachined(box);
}

/** Replace systemd-machined by mctl-machined as the owner of org.freedesktop.machine1. */
export async function useMctlMachined(box: Box): Promise<void> {
  await box.runOk(['sh', '-ec', `
    systemctl mask --now systemd-machined.service
    systemctl enable --now mctl-machined.service
  `]);
}

/** Back to stock systemd-machined (bus-activated again on first use). */
export async function useSystemdMachined(box: Box): Promise<void> {
  await box.runOk(['sh', '-ec', `
    systemctl disable --now mctl-machined.service
    systemctl unmask systemd-machined.service
    systemctl start systemd-machined.service
  `]);
}

/** `systemctl show` / `machinectl show` output (KEY=VALUE lines) as a record. */
export function parseProps(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/**
 * `systemctl [--machine=M] is-system-running --wait`, retried while PID 1's bus is not up yet
 * (systemctl then fails at once instead of waiting). Returns the final state.
 */
export async function waitSystemRunning(box: Box, machine?: string, ms = 30_000): Promise<string> {
  const deadline = Date.now() + ms;
  const cmd = ['systemctl', ...(machine ? [`--machine=${machine}`] : []), 'is-system-running', '--wait'];
  for (;;) {
    const said = (await box.run(cmd, { timeoutMs: Math.max(1000, deadline - Date.now()) })).stdout.trim();
    if (said === 'running' || said === 'degraded' || said === 'maintenance' || said === 'stopping') return said;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${machine ?? 'the box'} to finish booting (last: ${said || 'no bus'})`);
    await sleep(50);
  }
}

/** Poll pred every 100 ms until it holds; throws naming WHAT after ms. */
export async function waitFor(pred: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await sleep(100);
  }
}

// ---- host-side plumbing ----

function cgroupRoots(): string[] {
  // Unified host: cgroup2 at /sys/fs/cgroup. Hybrid: cgroup2 at unified/ plus v1 name=systemd.
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return ['/sys/fs/cgroup'];
  return ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd'].filter((p) => existsSync(join(p, 'cgroup.procs')));
}

function createBoxCgroups(name: string): string[] {
  const made = cgroupRoots().map((root) => join(root, `mctl-${name}`));
  for (const cg of made) mkdirSync(cg);
  return made;
}

/**
 * Remove the box's own cgroup subtree. nspawn killed before it set up its signal handling (a boot
 * that times out at once) leaves the box's processes running, so whatever is still in the box's
 * cgroup is killed first — only processes of this box, which this module started.
 */
function removeCgroup(path: string): boolean {
  if (!existsSync(path)) return true;
  const deadline = Date.now() + 5_000;
  for (;;) {
    const pids = cgroupPids(path);
    if (pids.length > 0) {
      if (existsSync(join(path, 'cgroup.kill'))) writeFileSync(join(path, 'cgroup.kill'), '1');
      else for (const pid of pids) signalPid(pid, 'SIGKILL');
    }
    try {
      for (const dir of subdirsDeepestFirst(path)) rmdirSync(dir);
      return true;
    } catch {
      if (Date.now() > deadline) return false;
      spawnSync('sleep', ['0.05']);
    }
  }
}

function cgroupPids(path: string): number[] {
  return subdirsDeepestFirst(path).flatMap((dir) => {
    try {
      return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  });
}

function subdirsDeepestFirst(path: string): string[] {
  const out: string[] = [];
  try {
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      if (entry.isDirectory()) out.push(...subdirsDeepestFirst(join(path, entry.name)));
    }
  } catch {
    return out;
  }
  out.push(path);
  return out;
}

function cleanupHost(state: BoxState): void {
  for (const merged of state.overlays.slice().reverse()) {
    if (isMounted(merged)) spawnSync('umount', [merged]);
  }
  for (const cg of state.cgroups) removeCgroup(cg);
  // nspawn cannot remove its propagation dir when the host's /run is not a tmpfs (as here).
  rmSync(`/run/systemd/nspawn/propagate/${state.name}`, { recursive: true, force: true });
  if (!state.overlays.some(isMounted)) rmSync(state.workDir, { recursive: true, force: true });
  rmSync(join(STATE_DIR, `${state.name}.json`), { force: true });
  try {
    rmdirSync(STATE_DIR); // only when no other box is up
  } catch {
    // not empty, or gone
  }
}

/** Boxes whose test process died without teardown (SIGKILL, crash): stop their nspawn and clean up. */
export function reapStaleBoxes(): void {
  if (!existsSync(STATE_DIR)) return;
  for (const file of readdirSync(STATE_DIR)) {
    if (!file.endsWith('.json')) continue;
    let state: BoxState;
    try {
      state = JSON.parse(readFileSync(join(STATE_DIR, file), 'utf8')) as BoxState;
    } catch {
      continue;
    }
    if (existsSync(`/proc/${state.ownerPid}`)) continue;
    // Only a process that is still that box's nspawn (PIDs get reused).
    if (state.nspawnPid && readProc(state.nspawnPid, 'cmdline').includes(`--machine=${state.name}`)) {
      signalPid(state.nspawnPid, 'SIGKILL');
      for (let i = 0; i < 100 && isAlive(state.nspawnPid); i++) spawnSync('sleep', ['0.05']);
    }
    cleanupHost(state);
  }
}

let handlersInstalled = false;
function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const onSignal = (signal: NodeJS.Signals): void => {
    // Synchronous on purpose: on Ctrl-C the test runner closes our pipes and may kill us soon.
    for (const box of [...liveBoxes]) box.stopSync(5_000);
    try {
      process.stderr.write(`\nbox: ${signal}, boxes torn down\n`);
    } catch {
      // stderr may be gone
    }
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.stderr.on('error', () => {}); // EPIPE after the runner went away must not abort teardown
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Last resort on a plain exit with a box still up: only synchronous work is possible here.
  process.once('exit', () => {
    for (const box of [...liveBoxes]) box.stopSync();
  });
}

function findChild(parent: number, comm: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProc(Number(entry), 'stat');
    // pid (comm) state ppid …; comm may contain spaces, so split after the last ')'.
    const close = stat.lastIndexOf(')');
    if (close < 0) continue;
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    if (ppid === parent && stat.slice(stat.indexOf('(') + 1, close) === comm) return Number(entry);
  }
  return undefined;
}

/** Running and not a zombie (a killed child of ours stays a zombie until Node reaps it). */
function isAlive(pid: number): boolean {
  const stat = readProc(pid, 'stat');
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

function readProc(pid: number, file: string): string {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return '';
  }
}

function isMounted(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === path);
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

function execOk(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

/**
 * A user's terminal in the box: util-linux `script` gives the command a PTY inside the box, and
 * the test types and reads like a user (login and interactive shells need a terminal to forward).
 */
export class BoxTerminal {
  private out = '';
  private cursor = 0;
  private readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<number | null>;

  constructor(box: Box, command: string) {
    // `timeout` inside the box: killing nsenter would not end what it started in there.
    this.child = spawn('nsenter', ['-t', String(box.leader), '-a', '--', 'timeout', '30', 'script', '-qfec', command, '/dev/null'], { env: BOX_ENV });
    const keep = (c: Buffer): void => {
      this.out += c.toString('utf8');
    };
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    this.child.stdin.on('error', () => {});
    this.exited = new Promise((resolve) => this.child.once('close', (code) => resolve(code)));
  }

  get output(): string {
    return this.out;
  }

  /** Wait until RE shows up after what earlier expects consumed; returns the match. */
  async expect(re: RegExp, ms = 15_000): Promise<RegExpExecArray> {
    let m: RegExpExecArray | null = null;
    await waitFor(async () => (m = re.exec(this.out.slice(this.cursor))) !== null, ms, `${re} on the terminal; got:\n${this.out}`);
    const found = m as unknown as RegExpExecArray;
    this.cursor += found.index + found[0].length;
    return found;
  }

  type(text: string): void {
    this.child.stdin.write(text);
  }

  /** End our side (EOF) and wait for the client to exit. */
  async close(): Promise<number | null> {
    this.child.stdin.end();
    return this.exited;
  }
}
