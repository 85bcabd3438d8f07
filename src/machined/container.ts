// Operations that reach into a running machine: os-release, addresses, UID shift, PTYs,
// login and shell through the container's own system bus, bind mounts, copies and its root
// directory. Paths inside the container are always resolved with openat2(RESOLVE_IN_ROOT)
// from its root, so a symlink planted in the container can never lead us onto host files.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, dirname, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import dbus from 'dbus-next';
import { call, connectBus } from '../dbus/bus.js';
import { AT, ioctlInt, mountSetattr, MOUNT_ATTR, O, openat2, openTree, OPEN_TREE, RESOLVE } from '../sys/libc.js';
import { BusError, ERR, errnoError } from './errors.js';
import { HOST_NAME, type Machine } from './machine.js';

const TIOCGPTN = 0x80045430;
const TIOCSPTLCK = 0x40045431;
const AF_INET = 2;
const AF_INET6 = 10;

function isHost(m: Machine): boolean {
  return m.name === HOST_NAME;
}

function requireLeader(m: Machine): number {
  if (m.leader <= 0) throw new BusError(ERR.Failed, `Machine ${m.name} has no known leader process.`);
  return m.leader;
}

/** An O_PATH fd on the machine's root directory (the leader's root). Caller closes it. */
function openRoot(m: Machine): number {
  if (isHost(m)) return openSync('/', O.PATH | O.DIRECTORY | O.CLOEXEC);
  try {
    return openSync(`/proc/${requireLeader(m)}/root`, O.PATH | O.DIRECTORY | O.CLOEXEC);
  } catch (err) {
    throw errnoError((err as NodeJS.ErrnoException).code ?? 'ESRCH', `Failed to open root directory of machine ${m.name}: leader is gone`);
  }
}

function withRoot<T>(m: Machine, fn: (rootFd: number) => T): T {
  const rootFd = openRoot(m);
  try {
    return fn(rootFd);
  } finally {
    closeSync(rootFd);
  }
}

/** Open `path` inside the machine's tree, confined to it. */
function openIn(rootFd: number, path: string, flags: number): number {
  return openat2(rootFd, path, flags | O.CLOEXEC, RESOLVE.IN_ROOT);
}

function mapSysError(err: unknown, what: string): BusError {
  const code = (err as { code?: string }).code ?? 'EIO';
  return errnoError(code, `${what}: ${code}`);
}

/** os-release syntax: KEY=VALUE with shell-style quoting and comments. */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) continue;
    let value = line.slice(eq + 1).trim();
    if ((value.startsWith('"') && value.endsWith('"')) || (value.startsWith("'") && value.endsWith("'"))) {
      const quote = value[0];
      value = value.slice(1, -1);
      if (quote === '"') value = value.replace(/\\(["\\$`])/g, '$1');
    }
    out[key] = value;
  }
  return out;
}

export function osRelease(m: Machine): Record<string, string> {
  return withRoot(m, (rootFd) => {
    for (const p of ['/etc/os-release', '/usr/lib/os-release']) {
      let fd: number;
      try {
        fd = openIn(rootFd, p, O.RDONLY);
      } catch {
        continue;
      }
      try {
        return parseEnvFile(readFileSync(fd, 'utf8'));
      } finally {
        closeSync(fd);
      }
    }
    throw errnoError('ENOENT', `Machine ${m.name} has no os-release file`);
  });
}

interface IpAddrInfo {
  ifindex?: number;
  addr_info?: Array<{ family?: string; local?: string; scope?: string }>;
}

export function ipBytes(family: number, text: string): Buffer | undefined {
  if (family === AF_INET) {
    const parts = text.split('.').map(Number);
    return parts.length === 4 && parts.every((n) => n >= 0 && n <= 255) ? Buffer.from(parts) : undefined;
  }
  const [head = '', tail] = text.split('::');
  const groups = (s: string): number[] => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill(0), ...t];
  if (all.length !== 8 || all.some((g) => !Number.isInteger(g))) return undefined;
  const buf = Buffer.alloc(16);
  all.forEach((g, i) => buf.writeUInt16BE(g, i * 2));
  return buf;
}

function run(cmd: string, args: string[], options: { stdio?: Array<'ignore' | 'pipe' | number> } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errText = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (errText += d.toString()));
    child.on('error', (e) => reject(new BusError(ERR.Failed, `${cmd}: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new BusError(ERR.Failed, `${cmd} failed: ${errText.trim().split('\n').pop() || `exit status ${code}`}`));
    });
  });
}

/** GetMachineAddresses: addresses of the machine's own network namespace (not loopback). */
export async function addresses(m: Machine): Promise<Array<[number, Buffer]>> {
  let args = ['-j', 'addr', 'show'];
  let cmd = 'ip';
  if (!isHost(m)) {
    const leader = requireLeader(m);
    let own: string;
    let theirs: string;
    try {
      own = readlinkSync('/proc/self/ns/net');
      theirs = readlinkSync(`/proc/${leader}/ns/net`);
    } catch {
      throw errnoError('ESRCH', `Leader of machine ${m.name} is gone`);
    }
    if (own === theirs) throw new BusError(ERR.NoPrivateNetworking, `Machine ${m.name} does not use private networking`);
    cmd = 'nsenter';
    args = [`--net=/proc/${leader}/ns/net`, '--', 'ip', ...args];
  }
  const links = JSON.parse(await run(cmd, args)) as IpAddrInfo[];
  const out: Array<[number, Buffer]> = [];
  for (const link of links) {
    for (const a of link.addr_info ?? []) {
      if (a.scope === 'host' || !a.local) continue;
      const family = a.family === 'inet' ? AF_INET : a.family === 'inet6' ? AF_INET6 : 0;
      const bytes = family ? ipBytes(family, a.local) : undefined;
      if (bytes) out.push([family, bytes]);
    }
  }
  return out;
}

/** First line of the leader's uid_map: the host UID that container UID 0 maps to. */
export function uidShift(m: Machine): number {
  if (isHost(m)) return 0;
  let text: string;
  try {
    text = readFileSync(`/proc/${requireLeader(m)}/uid_map`, 'utf8');
  } catch {
    return 0;
  }
  const first = text.split('\n')[0]?.trim().split(/\s+/).map(Number) ?? [];
  const [inner, outer, count] = first;
  if (inner === undefined || outer === undefined || count === undefined) return 0;
  if (inner === 0 && outer === 0 && count === 4294967295) return 0;
  if (inner !== 0 || count < 65534) throw errnoError('ENXIO', `Machine ${m.name} uses a UID mapping that cannot be expressed as a shift`);
  return outer;
}

/** Map a UID inside the machine to the host (and back), from its uid_map/gid_map. */
export function mapIds(m: Machine, kind: 'uid' | 'gid', id: number, direction: 'from' | 'to'): number | undefined {
  if (isHost(m)) return id;
  let text: string;
  try {
    text = readFileSync(`/proc/${requireLeader(m)}/${kind}_map`, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [inner, outer, count] = line.trim().split(/\s+/).map(Number);
    if (inner === undefined || outer === undefined || count === undefined || Number.isNaN(count)) continue;
    if (direction === 'from' && id >= inner && id < inner + count) return outer + (id - inner);
    if (direction === 'to' && id >= outer && id < outer + count) return inner + (id - outer);
  }
  return undefined;
}

export interface Pty {
  fd: number;
  /** Path of the slave inside the machine (/dev/pts/N). */
  path: string;
  number: number;
}

/** A PTY pair in the machine's own devpts instance: open its ptmx, unlock, learn N. */
export function openPty(m: Machine): Pty {
  return withRoot(m, (rootFd) => {
    let fd: number;
    try {
      fd = openIn(rootFd, '/dev/pts/ptmx', O.RDWR | O.NOCTTY);
    } catch (err) {
      throw mapSysError(err, `Failed to open PTY master in machine ${m.name}`);
    }
    try {
      const n = ioctlInt(fd, TIOCGPTN, 0);
      ioctlInt(fd, TIOCSPTLCK, 0);
      return { fd, path: `/dev/pts/${n}`, number: n };
    } catch (err) {
      closeSync(fd);
      throw mapSysError(err, 'Failed to set up PTY');
    }
  });
}

/** The machine's own system bus (its /run/dbus/system_bus_socket), for login and shell. */
async function withContainerBus<T>(m: Machine, fn: (bus: dbus.MessageBus) => Promise<T>): Promise<T> {
  let address: string;
  if (isHost(m)) {
    address = process.env['DBUS_SYSTEM_BUS_ADDRESS'] || 'unix:path=/run/dbus/system_bus_socket';
  } else {
    const socket = `/proc/${requireLeader(m)}/root/run/dbus/system_bus_socket`;
    if (!existsSync(socket)) throw new BusError(ERR.NotSupported, `There is no system bus in container ${m.name}.`);
    address = `unix:path=${socket}`;
  }
  const bus = connectBus(address);
  bus.on('error', () => undefined);
  try {
    // Finish the handshake before the real call: dbus-next's pre-connect queue is unreliable.
    await call(bus, { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId', timeoutMs: 10_000 });
    return await fn(bus);
  } finally {
    bus.disconnect();
  }
}

const SYSTEMD = { destination: 'org.freedesktop.systemd1', path: '/org/freedesktop/systemd1', interface: 'org.freedesktop.systemd1.Manager' };

/** OpenMachineLogin: a PTY, and container-getty@N.service started on it by the machine's systemd. */
export async function openLogin(m: Machine): Promise<Pty> {
  const pty = openPty(m);
  try {
    await withContainerBus(m, (bus) =>
      call(bus, { ...SYSTEMD, member: 'StartUnit', signature: 'ss', body: [`container-getty@${pty.number}.service`, 'replace'], timeoutMs: 15_000 }),
    );
    return pty;
  } catch (err) {
    closeSync(pty.fd);
    throw err;
  }
}

export interface ShellRequest {
  user: string;
  path: string;
  args: string[];
  environment: string[];
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** OpenMachineShell: a transient container-shell@N.service on the machine's systemd, on a new PTY. */
export async function openShell(m: Machine, req: ShellRequest): Promise<Pty> {
  const user = req.user || 'root';
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(user) || user.length > 256) throw new BusError(ERR.InvalidArgs, 'Invalid user name');
  let path = req.path;
  let args = req.args;
  if (!path) {
    path = '/bin/sh';
    args = ['sh', '-c', `shell=$(getent passwd ${shellQuote(user)} 2>/dev/null | { IFS=: read _ _ _ _ _ _ x; echo "$x"; })\nexec "\${shell:-/bin/sh}" -l`];
  } else {
    if (!path.startsWith('/')) throw new BusError(ERR.InvalidArgs, 'Specified path is not absolute');
    if (args.length === 0) args = [path];
  }
  for (const e of req.environment) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(e)) throw new BusError(ERR.InvalidArgs, 'Invalid environment assignment');
  }
  const pty = openPty(m);
  let slave = -1;
  try {
    // Like systemd-machined: the service gets an fd of the PTY slave that we hold open until its
    // start job is queued. With only TTYPath=, nothing held the slave between systemd's TTYReset
    // open/close and the service's own open, so the client's master read EIO in that gap,
    // machinectl ended the session and the service then failed with ENOENT (output lost).
    slave = withRoot(m, (rootFd) => {
      try {
        return openIn(rootFd, pty.path, O.RDWR | O.NOCTTY);
      } catch (err) {
        throw mapSysError(err, `Failed to open PTY slave ${pty.path} in machine ${m.name}`);
      }
    });
    const V = dbus.Variant;
    const props: Array<[string, InstanceType<typeof V>]> = [
      ['Description', new V('s', `Shell for User ${user}`)],
      ['StandardInputFileDescriptor', new V('h', slave)],
      ['StandardOutputFileDescriptor', new V('h', slave)],
      ['StandardErrorFileDescriptor', new V('h', slave)],
      ['SendSIGHUP', new V('b', true)],
      ['IgnoreSIGPIPE', new V('b', false)],
      ['KillMode', new V('s', 'mixed')],
      ['TTYPath', new V('s', pty.path)],
      ['TTYReset', new V('b', true)],
      ['UtmpIdentifier', new V('s', `pts/${pty.number}`)],
      ['UtmpMode', new V('s', 'user')],
      ['PAMName', new V('s', 'login')],
      ['WorkingDirectory', new V('s', '-~')],
      ['User', new V('s', user)],
      ['Environment', new V('as', req.environment)],
      ['ExecStart', new V('a(sasb)', [[path, args, true]])],
    ];
    // withContainerBus finishes the handshake first: dbus-next can lose fd-carrying messages
    // queued before it, not seen once connected (0 in 240, docs/machined.md).
    await withContainerBus(m, (bus) =>
      call(bus, { ...SYSTEMD, member: 'StartTransientUnit', signature: 'ssa(sv)a(sa(sv))', body: [`container-shell@${pty.number}.service`, 'fail', props, []], timeoutMs: 15_000 }),
    );
    return pty;
  } catch (err) {
    closeSync(pty.fd);
    throw err;
  } finally {
    // systemd holds its own copy once the call returned (the reply comes after it was received).
    if (slave >= 0) closeSync(slave);
  }
}

/** OpenMachineRootDirectory: a directory fd on the machine's root, for the caller to keep. */
export function openRootDirectory(m: Machine): number {
  if (isHost(m)) return openSync('/', O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  try {
    return openSync(`/proc/${requireLeader(m)}/root`, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  } catch (err) {
    throw mapSysError(err, `Failed to open root directory of machine ${m.name}`);
  }
}

function requireAbsolute(p: string, what: string): string {
  if (!p.startsWith('/') || p.includes('\0')) throw new BusError(ERR.InvalidArgs, `${what} path must be absolute`);
  const n = posix.normalize(p);
  if (n.split('/').includes('..')) throw new BusError(ERR.InvalidArgs, `${what} path must be normalized`);
  return n;
}

/** mkdir -p inside the machine's tree, one confined component at a time. */
function mkdirInRoot(rootFd: number, path: string): void {
  let prefix = '';
  for (const part of path.split('/').filter(Boolean)) {
    prefix += `/${part}`;
    try {
      closeSync(openIn(rootFd, prefix, O.PATH | O.DIRECTORY));
    } catch {
      const parent = openIn(rootFd, dirname(prefix), O.PATH | O.DIRECTORY);
      try {
        mkdirSync(`/proc/self/fd/${parent}/${part}`, { mode: 0o755 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        closeSync(parent);
      }
    }
  }
}

const helperPath = fileURLToPath(new URL('./ns-helper.js', import.meta.url));

/**
 * BindMountMachine: clone the host directory as a detached mount (open_tree), optionally make it
 * read-only, and attach it at the destination inside the machine's mount namespace through a
 * short-lived helper started in that namespace.
 */
export async function bindMount(m: Machine, source: string, destination: string, readOnly: boolean, mkdir: boolean): Promise<void> {
  if (isHost(m)) throw new BusError(ERR.NotSupported, "Can't bind mount on the host machine");
  const src = requireAbsolute(source, 'Source');
  const dst = requireAbsolute(destination || source, 'Destination');
  if (uidShift(m) !== 0) throw new BusError(ERR.NotSupported, "Can't bind mount on container with user namespacing applied.");
  const leader = requireLeader(m);
  let tree = -1;
  let target = -1;
  try {
    try {
      tree = openTree(src, OPEN_TREE.CLONE | OPEN_TREE.CLOEXEC | AT.RECURSIVE);
      if (readOnly) mountSetattr(tree, AT.EMPTY_PATH | AT.RECURSIVE, { attrSet: MOUNT_ATTR.RDONLY });
    } catch (err) {
      throw mapSysError(err, `Failed to open ${src}`);
    }
    withRoot(m, (rootFd) => {
      try {
        if (mkdir) mkdirInRoot(rootFd, dst);
        target = openIn(rootFd, dst, O.PATH);
      } catch (err) {
        throw mapSysError(err, `Failed to open ${dst} in machine ${m.name}`);
      }
    });
    await run('nsenter', [`--mount=/proc/${leader}/ns/mnt`, '--root=/', '--wd=/', '--', process.execPath, helperPath, 'move-mount'], {
      stdio: ['ignore', 'ignore', 'pipe', tree, target],
    });
  } finally {
    if (tree >= 0) closeSync(tree);
    if (target >= 0) closeSync(target);
  }
}

export const COPY_REPLACE = 1n;

/**
 * Copy{From,To}Machine: GNU cp with reflinks, the machine side reached through an fd opened
 * with RESOLVE_IN_ROOT and passed to cp as /proc/self/fd/3.
 */
export async function copy(m: Machine, direction: 'from' | 'to', source: string, destination: string, flags: bigint): Promise<void> {
  if (isHost(m)) throw new BusError(ERR.NotSupported, "Can't copy files from/to the host machine");
  if ((flags & ~COPY_REPLACE) !== 0n) throw new BusError(ERR.InvalidArgs, 'Unknown copy flags');
  const replace = (flags & COPY_REPLACE) !== 0n;
  const src = requireAbsolute(source, 'Source');
  const dst = requireAbsolute(destination || source, 'Destination');
  const cpFlags = ['-a', '-T', '--reflink=auto', ...(replace ? ['--remove-destination'] : [])];
  let fd = -1;
  try {
    if (direction === 'from') {
      if (!replace && existsSync(dst)) throw errnoError('EEXIST', `${dst} already exists`);
      withRoot(m, (rootFd) => {
        try {
          fd = openIn(rootFd, src, O.PATH);
        } catch (err) {
          throw mapSysError(err, `Failed to open ${src} in machine ${m.name}`);
        }
      });
      await run('cp', [...cpFlags, '-H', '--', '/proc/self/fd/3', dst], { stdio: ['ignore', 'ignore', 'pipe', fd] });
    } else {
      if (!existsSync(src)) throw errnoError('ENOENT', `${src} does not exist`);
      withRoot(m, (rootFd) => {
        try {
          fd = openIn(rootFd, dirname(dst), O.PATH | O.DIRECTORY);
        } catch (err) {
          throw mapSysError(err, `Failed to open ${dirname(dst)} in machine ${m.name}`);
        }
        let exists = false;
        try {
          closeSync(openat2(fd, basename(dst), O.PATH | O.NOFOLLOW | O.CLOEXEC, RESOLVE.BENEATH));
          exists = true;
        } catch {
          exists = false;
        }
        if (exists && !replace) throw errnoError('EEXIST', `${dst} already exists in machine ${m.name}`);
      });
      await run('cp', [...cpFlags, '--', src, `/proc/self/fd/3/${basename(dst)}`], { stdio: ['ignore', 'ignore', 'pipe', fd] });
    }
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
