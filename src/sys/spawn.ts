// Starting a detached helper process without forking Node. child_process.spawn forks the whole
// Node process (copying its page tables: 1–3 ms idle, far more on a loaded host) before it
// execs; glibc's posix_spawn uses a vfork-style clone that shares memory until the exec, so it
// costs a fraction of that. Only for fire-and-forget children that run no JavaScript before
// their exec: the child gets its own session, /dev/null as stdio and default signal handling
// (Node ignores SIGPIPE, which an exec would otherwise pass on). Nobody in this process waits
// for it; whoever ends up as its parent reaps it.
import { SysError } from './errno.js';
import { loadKoffi } from './koffi.js';

type KoffiFn = (...args: unknown[]) => unknown;
interface Koffi {
  load(path: string): { func(signature: string): KoffiFn };
  errno(): number;
}

interface SpawnCalls {
  attrInit: KoffiFn;
  attrDestroy: KoffiFn;
  attrSetFlags: KoffiFn;
  attrSetSigmask: KoffiFn;
  attrSetSigdefault: KoffiFn;
  actionsInit: KoffiFn;
  actionsDestroy: KoffiFn;
  addOpen: KoffiFn;
  addDup2: KoffiFn;
  sigemptyset: KoffiFn;
  sigfillset: KoffiFn;
  spawnp: KoffiFn;
}

let calls: SpawnCalls | undefined;

function spawnCalls(): SpawnCalls {
  if (calls) return calls;
  const c = loadKoffi<Koffi>().load('libc.so.6');
  calls = {
    attrInit: c.func('int posix_spawnattr_init(void *attr)'),
    attrDestroy: c.func('int posix_spawnattr_destroy(void *attr)'),
    attrSetFlags: c.func('int posix_spawnattr_setflags(void *attr, short flags)'),
    attrSetSigmask: c.func('int posix_spawnattr_setsigmask(void *attr, const void *set)'),
    attrSetSigdefault: c.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)'),
    actionsInit: c.func('int posix_spawn_file_actions_init(void *actions)'),
    actionsDestroy: c.func('int posix_spawn_file_actions_destroy(void *actions)'),
    addOpen: c.func('int posix_spawn_file_actions_addopen(void *actions, int fd, const char *path, int flags, uint32_t mode)'),
    addDup2: c.func('int posix_spawn_file_actions_adddup2(void *actions, int fd, int newfd)'),
    sigemptyset: c.func('int sigemptyset(void *set)'),
    sigfillset: c.func('int sigfillset(void *set)'),
    spawnp: c.func('int posix_spawnp(_Out_ int *pid, const char *file, const void *actions, const void *attr, const char **argv, const char **envp)'),
  };
  return calls;
}

const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;
const O_RDWR = 2;
// Larger than glibc's posix_spawnattr_t (336 bytes), posix_spawn_file_actions_t (80) and sigset_t (128).
const OPAQUE_SIZE = 1024;

/** Start argv[0] (looked up in PATH) detached: new session, stdio on /dev/null. Returns its PID. */
export function spawnDetached(argv: readonly string[], env: Record<string, string>): number {
  const c = spawnCalls();
  const [file] = argv;
  if (!file) throw new Error('spawnDetached: empty argv');
  const attr = Buffer.alloc(OPAQUE_SIZE);
  const actions = Buffer.alloc(OPAQUE_SIZE);
  const none = Buffer.alloc(OPAQUE_SIZE);
  const all = Buffer.alloc(OPAQUE_SIZE);
  c.attrInit(attr);
  c.actionsInit(actions);
  try {
    c.sigemptyset(none);
    c.sigfillset(all);
    c.attrSetFlags(attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    c.attrSetSigmask(attr, none);
    c.attrSetSigdefault(attr, all);
    c.addOpen(actions, 0, '/dev/null', O_RDWR, 0);
    c.addDup2(actions, 0, 1);
    c.addDup2(actions, 0, 2);
    const pid = [0];
    const envp = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const rc = Number(c.spawnp(pid, file, actions, attr, [...argv, null], [...envp, null]));
    // posix_spawn returns the error number instead of setting errno.
    if (rc !== 0) throw new SysError('posix_spawn', rc, file);
    return pid[0] ?? 0;
  } finally {
    c.actionsDestroy(actions);
    c.attrDestroy(attr);
  }
}
