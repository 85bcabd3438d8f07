// The one typed boundary over libc (through koffi). Every call either returns its result or
// throws SysError carrying the call, the errno name and the path it was about.
//
// Bindings are loaded on first use: `--version` and `--help` must not pay koffi's ~15 ms.
// Thread caveat (see DESIGN.md): unshare/setns/capset/prctl/chdir act on the calling thread
// only; callers that need a whole process in new namespaces use the native launcher instead.
import { SysError } from './errno.js';
import { loadKoffi } from './koffi.js';
import { clearCloexec } from './native-addon.js';

type KoffiFn = (...args: unknown[]) => unknown;
interface Koffi {
  load(path: string): { func(signature: string): KoffiFn; func(name: string, ret: unknown, args: unknown[]): KoffiFn };
  errno(): number;
  struct(name: string, def: Record<string, unknown>): unknown;
  array(type: unknown, n: number): unknown;
  pointer(type: unknown): unknown;
  out(type: unknown): unknown;
  inout(type: unknown): unknown;
}

export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  REMOUNT: 0x20,
  NOATIME: 0x400,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  SILENT: 0x8000,
  UNBINDABLE: 1 << 17,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
  STRICTATIME: 1 << 24,
} as const;

export const MNT = { FORCE: 1, DETACH: 2, EXPIRE: 4 } as const;

export const CLONE = {
  NEWNS: 0x00020000,
  NEWCGROUP: 0x02000000,
  NEWUTS: 0x04000000,
  NEWIPC: 0x08000000,
  NEWUSER: 0x10000000,
  NEWPID: 0x20000000,
  NEWNET: 0x40000000,
  FS: 0x00000200,
} as const;

export const PR = {
  SET_PDEATHSIG: 1,
  SET_NAME: 15,
  GET_NAME: 16,
  CAPBSET_READ: 23,
  CAPBSET_DROP: 24,
  SET_CHILD_SUBREAPER: 36,
  SET_NO_NEW_PRIVS: 38,
  GET_NO_NEW_PRIVS: 39,
} as const;

export const F = { GETFD: 1, SETFD: 2, GETFL: 3, SETFL: 4, FD_CLOEXEC: 1 } as const;

export const MOUNT_ATTR = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  IDMAP: 0x100000,
} as const;

export const OPEN_TREE = { CLONE: 1, CLOEXEC: 0o2000000 } as const;
export const AT = { FDCWD: -100, RECURSIVE: 0x8000, EMPTY_PATH: 0x1000 } as const;
export const MOVE_MOUNT = { F_EMPTY_PATH: 0x4 } as const;

const SYSCALLS: Record<string, Record<string, number>> = {
  x64: { pivot_root: 155, open_tree: 428, move_mount: 429, mount_setattr: 442, pidfd_open: 434, pidfd_send_signal: 424 },
  arm64: { pivot_root: 41, open_tree: 428, move_mount: 429, mount_setattr: 442, pidfd_open: 434, pidfd_send_signal: 424 },
};

function syscallNumber(name: string): number {
  const table = SYSCALLS[process.arch];
  const nr = table?.[name];
  if (nr === undefined) throw new Error(`${name}: no syscall number known for ${process.arch}`);
  return nr;
}

interface Bindings {
  koffi: Koffi;
  mount: KoffiFn;
  umount2: KoffiFn;
  unshare: KoffiFn;
  setns: KoffiFn;
  sethostname: KoffiFn;
  execve: KoffiFn;
  fcntl: KoffiFn;
  ioctlInt: KoffiFn;
  ioctlPtr: KoffiFn;
  prctl: KoffiFn;
  syscall: KoffiFn;
  chdir: KoffiFn;
  chroot: KoffiFn;
  capget: KoffiFn;
  capset: KoffiFn;
  mountAttr: unknown;
}

let cached: Bindings | undefined;

function lib(): Bindings {
  if (cached) return cached;
  const koffi = loadKoffi<Koffi>(); // the native module directly: see koffi.ts
  const c = koffi.load('libc.so.6');
  const capHeader = koffi.struct('mctl_cap_header', { version: 'uint32', pid: 'int' });
  const capData = koffi.struct('mctl_cap_data', { effective: 'uint32', permitted: 'uint32', inheritable: 'uint32' });
  const mountAttr = koffi.struct('mctl_mount_attr', {
    attr_set: 'uint64',
    attr_clr: 'uint64',
    propagation: 'uint64',
    userns_fd: 'uint64',
  });
  cached = {
    koffi,
    mount: c.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
    umount2: c.func('int umount2(const char *target, int flags)'),
    unshare: c.func('int unshare(int flags)'),
    setns: c.func('int setns(int fd, int nstype)'),
    sethostname: c.func('int sethostname(const char *name, size_t len)'),
    execve: c.func('int execve(const char *path, const char **argv, const char **envp)'),
    fcntl: c.func('int fcntl(int fd, int cmd, ...)'),
    ioctlInt: c.func('ioctl', 'int', ['int', 'unsigned long', koffi.inout(koffi.pointer('int'))]),
    ioctlPtr: c.func('ioctl', 'int', ['int', 'unsigned long', 'void *']),
    prctl: c.func('int prctl(int option, ...)'),
    syscall: c.func('long syscall(long number, ...)'),
    chdir: c.func('int chdir(const char *path)'),
    chroot: c.func('int chroot(const char *path)'),
    capget: c.func('capget', 'int', [koffi.pointer(capHeader), koffi.out(koffi.pointer(koffi.array(capData, 2)))]),
    capset: c.func('capset', 'int', [koffi.pointer(capHeader), koffi.pointer(koffi.array(capData, 2))]),
    mountAttr,
  };
  return cached;
}

/** Read errno right after a -1 return: koffi reports the live value, which later calls overwrite. */
function check(ret: unknown, call: string, path?: string): number {
  const n = Number(ret);
  if (n === -1) throw new SysError(call, lib().koffi.errno(), path);
  return n;
}

export function mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null = null): void {
  check(lib().mount(source, target, fstype, flags >>> 0, data), 'mount', target);
}

export function umount2(target: string, flags = 0): void {
  check(lib().umount2(target, flags), 'umount2', target);
}

export function pivotRoot(newRoot: string, putOld: string): void {
  check(lib().syscall(syscallNumber('pivot_root'), 'const char *', newRoot, 'const char *', putOld), 'pivot_root', newRoot);
}

export function unshare(flags: number): void {
  check(lib().unshare(flags), 'unshare');
}

export function setns(fd: number, nstype: number): void {
  check(lib().setns(fd, nstype), 'setns');
}

export function sethostname(name: string): void {
  check(lib().sethostname(name, Buffer.byteLength(name)), 'sethostname', name);
}

export function chdir(path: string): void {
  check(lib().chdir(path), 'chdir', path);
}

export function chroot(path: string): void {
  check(lib().chroot(path), 'chroot', path);
}

export function fcntl(fd: number, cmd: number, arg = 0): number {
  return check(lib().fcntl(fd, cmd, 'int', arg), 'fcntl', `fd ${fd}`);
}

const F_OFD_SETLKW = 38;

let ofdWaitFn: (KoffiFn & { async(...args: unknown[]): void }) | undefined;

/**
 * Wait for an exclusive or shared OFD lock on a worker thread (F_OFD_SETLKW there), so the
 * event loop keeps running and the lock is taken the moment its holder lets go. Resolves false
 * when the wait failed (e.g. EINTR or EDEADLK), and the caller falls back to polling.
 */
export function ofdLockWait(fd: number, kind: 'shared' | 'exclusive'): Promise<boolean> {
  ofdWaitFn ??= lib().koffi.load('libc.so.6').func('int fcntl(int fd, int cmd, void *lock)') as KoffiFn & { async(...args: unknown[]): void };
  const fl = Buffer.alloc(32);
  fl.writeInt16LE(kind === 'shared' ? 0 : 1, 0);
  const fn = ofdWaitFn;
  return new Promise((resolve) => fn.async(fd, F_OFD_SETLKW, fl, (err: unknown, ret: unknown) => resolve(!err && Number(ret) === 0)));
}

/** ioctl with an int in/out argument; returns the (possibly updated) int. */
export function ioctlInt(fd: number, request: number, value = 0): number {
  const box = [value];
  check(lib().ioctlInt(fd, request >>> 0, box), 'ioctl', `fd ${fd}`);
  return box[0] ?? 0;
}

/** ioctl with a raw buffer argument (struct in/out). */
export function ioctlBuffer(fd: number, request: number, buf: Buffer | null): number {
  return check(lib().ioctlPtr(fd, request >>> 0, buf), 'ioctl', `fd ${fd}`);
}

export function prctl(option: number, arg2 = 0): number {
  return check(lib().prctl(option, 'unsigned long', arg2, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0), 'prctl');
}

export function setProcessName(name: string): void {
  check(lib().prctl(PR.SET_NAME, 'const char *', name.slice(0, 15), 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0), 'prctl');
}

/** Replace this process. Clears FD_CLOEXEC on the given fds first (0-2 by default). */
export function execve(path: string, argv: readonly string[], env: Record<string, string>, keepFds: readonly number[] = [0, 1, 2]): never {
  for (const fd of keepFds) clearCloexec(fd);
  const envp = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  lib().execve(path, [...argv, null], [...envp, null]);
  throw new SysError('execve', lib().koffi.errno(), path);
}

export interface Capabilities {
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
}

const CAP_V3 = 0x20080522;

interface CapData {
  effective: number;
  permitted: number;
  inheritable: number;
}

export function capget(pid = 0): Capabilities {
  const out: [CapData[] | null] = [null];
  check(lib().capget({ version: CAP_V3, pid }, out), 'capget');
  const d = out[0] ?? [];
  const join = (k: keyof CapData): bigint => (BigInt((d[1]?.[k] ?? 0) >>> 0) << 32n) | BigInt((d[0]?.[k] ?? 0) >>> 0);
  return { effective: join('effective'), permitted: join('permitted'), inheritable: join('inheritable') };
}

export function capset(caps: Capabilities): void {
  const lo = (v: bigint): number => Number(v & 0xffffffffn);
  const hi = (v: bigint): number => Number((v >> 32n) & 0xffffffffn);
  const data = [
    { effective: lo(caps.effective), permitted: lo(caps.permitted), inheritable: lo(caps.inheritable) },
    { effective: hi(caps.effective), permitted: hi(caps.permitted), inheritable: hi(caps.inheritable) },
  ];
  check(lib().capset({ version: CAP_V3, pid: 0 }, data), 'capset');
}

/** open_tree(2): returns a detached mount fd (with OPEN_TREE_CLONE) for idmapped or moved mounts. */
export function openTree(path: string, flags: number): number {
  return check(lib().syscall(syscallNumber('open_tree'), 'int', AT.FDCWD, 'const char *', path, 'unsigned int', flags >>> 0), 'open_tree', path);
}

export function moveMount(fromFd: number, toPath: string): void {
  check(
    lib().syscall(syscallNumber('move_mount'), 'int', fromFd, 'const char *', '', 'int', AT.FDCWD, 'const char *', toPath, 'unsigned int', MOVE_MOUNT.F_EMPTY_PATH),
    'move_mount',
    toPath,
  );
}

export interface MountAttr {
  attrSet: number;
  attrClr?: number;
  propagation?: number;
  usernsFd?: number;
}

export function mountSetattr(fd: number, flags: number, attr: MountAttr, path = ''): void {
  const b = lib();
  const value = {
    attr_set: BigInt(attr.attrSet),
    attr_clr: BigInt(attr.attrClr ?? 0),
    propagation: BigInt(attr.propagation ?? 0),
    userns_fd: BigInt(attr.usernsFd ?? 0),
  };
  check(
    b.syscall(syscallNumber('mount_setattr'), 'int', fd, 'const char *', path, 'unsigned int', flags >>> 0, b.koffi.pointer(b.mountAttr), value, 'size_t', 32),
    'mount_setattr',
    path || `fd ${fd}`,
  );
}

export function pidfdOpen(pid: number): number {
  return check(lib().syscall(syscallNumber('pidfd_open'), 'int', pid, 'unsigned int', 0), 'pidfd_open', `pid ${pid}`);
}

// ---- process watching and confined path resolution (used by mctl-machined) ----

let pollFn: KoffiFn | undefined;
let eventfdFn: KoffiFn | undefined;

function pollBinding(): KoffiFn {
  if (!pollFn) pollFn = lib().koffi.load('libc.so.6').func('int poll(void *fds, unsigned long nfds, int timeout)');
  return pollFn;
}

const POLLIN = 0x1;

/**
 * poll(2) for readability on a worker thread (koffi async), so the event loop never blocks.
 * Resolves with the fds that became readable (or hung up). A pidfd is readable once its
 * process has exited, which is how a leader's death is noticed without polling /proc.
 */
export function pollReadable(fds: readonly number[], timeoutMs: number): Promise<number[]> {
  const buf = Buffer.alloc(8 * fds.length);
  fds.forEach((fd, i) => {
    buf.writeInt32LE(fd, i * 8);
    buf.writeInt16LE(POLLIN, i * 8 + 4);
  });
  const fn = pollBinding() as KoffiFn & { async(...args: unknown[]): void };
  return new Promise((resolve, reject) => {
    fn.async(buf, fds.length, timeoutMs, (err: unknown, ret: unknown) => {
      if (err) return reject(err instanceof Error ? err : new Error(String(err)));
      if (Number(ret) < 0) return reject(new SysError('poll', lib().koffi.errno()));
      resolve(fds.filter((_, i) => buf.readInt16LE(i * 8 + 6) !== 0));
    });
  });
}

export const EFD = { CLOEXEC: 0o2000000, NONBLOCK: 0o4000 } as const;

/** eventfd(2): a counter fd used to wake a thread blocked in poll(). */
export function eventfd(flags: number = EFD.CLOEXEC | EFD.NONBLOCK): number {
  if (!eventfdFn) eventfdFn = lib().koffi.load('libc.so.6').func('int eventfd(unsigned int initval, int flags)');
  return check(eventfdFn(0, flags), 'eventfd');
}

/** pidfd_send_signal(2): signal exactly the process the pidfd refers to (no PID reuse race). */
export function pidfdSendSignal(pidfd: number, signal: number): void {
  check(
    lib().syscall(syscallNumber('pidfd_send_signal'), 'int', pidfd, 'int', signal, 'void *', null, 'unsigned int', 0),
    'pidfd_send_signal',
    `pidfd ${pidfd}`,
  );
}

export const RESOLVE = { NO_XDEV: 0x01, NO_MAGICLINKS: 0x02, NO_SYMLINKS: 0x04, BENEATH: 0x08, IN_ROOT: 0x10 } as const;
export const O = { RDONLY: 0, WRONLY: 1, RDWR: 2, NOCTTY: 0o400, DIRECTORY: 0o200000, NOFOLLOW: 0o400000, CLOEXEC: 0o2000000, PATH: 0o10000000 } as const;

/**
 * openat2(2) relative to `dirfd` with RESOLVE_* flags. With RESOLVE.IN_ROOT, absolute symlinks
 * and ".." stay inside dirfd: the safe way to follow a path inside a container's tree from the host.
 */
export function openat2(dirfd: number, path: string, flags: number, resolve: number, mode = 0): number {
  const how = Buffer.alloc(24);
  how.writeBigUInt64LE(BigInt(flags >>> 0), 0);
  how.writeBigUInt64LE(BigInt(mode), 8);
  how.writeBigUInt64LE(BigInt(resolve), 16);
  const nr = process.arch === 'x64' || process.arch === 'arm64' ? 437 : syscallNumber('openat2');
  return check(lib().syscall(nr, 'int', dirfd, 'const char *', path, 'void *', how, 'size_t', 24), 'openat2', path);
}

// --- NSS id lookups and extended attributes (user-namespace range checks, UID shifting) ---

interface IdXattrBindings {
  getpwuid: KoffiFn;
  getgrgid: KoffiFn;
  lgetxattr: KoffiFn;
  lsetxattr: KoffiFn;
}

let idXattr: IdXattrBindings | undefined;

function idXattrLib(): IdXattrBindings {
  if (idXattr) return idXattr;
  const c = lib().koffi.load('libc.so.6');
  idXattr = {
    getpwuid: c.func('void *getpwuid(uint32_t uid)'),
    getgrgid: c.func('void *getgrgid(uint32_t gid)'),
    lgetxattr: c.func('long lgetxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)'),
    lsetxattr: c.func('int lsetxattr(const char *path, const char *name, const uint8_t *value, size_t size, int flags)'),
  };
  return idXattr;
}

/** Does NSS know a user with this UID (getpwuid)? */
export function userIdExists(uid: number): boolean {
  return idXattrLib().getpwuid(uid >>> 0) !== null;
}

/** Does NSS know a group with this GID (getgrgid)? */
export function groupIdExists(gid: number): boolean {
  return idXattrLib().getgrgid(gid >>> 0) !== null;
}

const ENODATA = 61;

/** The value of an extended attribute of PATH (not following symlinks), or null if it has none. */
export function lgetxattr(path: string, name: string): Buffer | null {
  const b = idXattrLib();
  let buf = Buffer.alloc(256);
  for (;;) {
    const n = Number(b.lgetxattr(path, name, buf, buf.length));
    if (n >= 0) return buf.subarray(0, n);
    const errno = lib().koffi.errno();
    if (errno === ENODATA || errno === 95 /* EOPNOTSUPP */) return null;
    if (errno === 34 /* ERANGE */ && buf.length < 65536) {
      buf = Buffer.alloc(buf.length * 4);
      continue;
    }
    throw new SysError('lgetxattr', errno, path, name);
  }
}

export function lsetxattr(path: string, name: string, value: Buffer): void {
  check(idXattrLib().lsetxattr(path, name, value, value.length, 0), 'lsetxattr', path);
}


