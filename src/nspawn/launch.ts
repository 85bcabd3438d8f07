// launch(spec, hooks): run a ContainerSpec with the native helper (dist/native/mctl-nsexec).
//
// Without hooks this process execve()s straight into `mctl-nsexec run`, which clones the
// container and stays as its small supervisor: same PID, no Node left per container.
// With hooks (veth, registration) the helper first clones the container as our own child
// (`prepare`: CLONE_PARENT) where it waits; we run the hooks with its PID, then execve() into
// `mctl-nsexec supervise`, which takes the child's socket end over with pidfd_getfd and
// releases it. Details and measurements: docs/nspawn-internals.md.
import { existsSync, lstatSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import { UserError } from '../common/errors.js';
import { capabilityMask } from './capabilities.js';
import { loadExecve, nativeFile, spawnWithReport } from '../sys/native-addon.js';
import { containerEnvironment, formatUuid, resolveUser, ROOT_USER, type ResolvedUser } from './payload-env.js';
import { INIT_CANDIDATES, type ContainerSpec } from './spec.js';
import { formatCpuList } from './process-attrs.js';
import { parseIfindices } from '../net/links.js';

/**
 * Called after the container's namespaces exist and (with a user namespace) its uid/gid maps
 * are written, before any mount is made inside and before the payload runs. `leaderPid` is the
 * container's PID 1 as seen from the host. Used for veth moves and machine registration.
 * A hook that throws aborts the start: the container is killed and nothing is left behind.
 */
export interface LaunchHooks {
  afterNamespaces?: Array<(leaderPid: number) => Promise<void>>;
  /** Undo for what the hooks did, run when the start fails after them (reverse order). */
  onAbort?: Array<() => Promise<void>>;
  /** Make the supervisor a D-Bus scope controller (answers Scope.RequestStop); see BusController. */
  busController?: BusController;
  /**
   * Lock files whose fds the supervisor inherits (FD_CLOEXEC cleared by a hook) and holds for the
   * container's life; it removes each at its end when it can take it exclusively, as systemd's
   * release_lock_file() does.
   */
  lockFiles?: ReadonlyArray<{ fd: number; path: string }>;
  /**
   * The container's network, which the helper makes itself (net-* tokens, native/net.c): in
   * `run` while the container mounts (handOver: the locks go with this process), in `prepare`
   * before it reports, after which prepared() is called and netifIndices holds the host-side
   * interface indices (for registration hooks).
   */
  network?: { helperArgs(handOver: boolean): string[]; prepared(): void } | null;
  netifIndices?: number[];
}

/**
 * The supervisor's own bus connection, so it can be the scope's Controller= as systemd-nspawn
 * is: `prepare` connects to `address` before the hooks run and `uniqueName` is filled in (null
 * when it could not connect); a hook registers the scope with it and fills `trustedSenders`:
 * the well-known names allowed to send RequestStop (org.freedesktop.systemd1, …machine1) with
 * their current owners; the supervisor follows later owner changes itself.
 */
export interface BusController {
  address: string;
  uniqueName: string | null;
  trustedSenders: Array<{ name: string; owner: string }>;
}

export type { ContainerSpec };

export function helperPath(): string {
  const p = nativeFile('mctl-nsexec');
  if (!p) throw new UserError('the native helper mctl-nsexec is missing', { hint: 'run npm run build' });
  return p;
}

const hex = (n: bigint): string => n.toString(16);

/** The helper's configuration tokens (see native/config.c); pure, so unit tests can read it. */
export function helperArgs(spec: ContainerSpec, user: ResolvedUser, env: readonly string[]): string[] {
  const a: string[] = [
    'root', spec.root,
    'read-only', spec.readOnlyRoot ? '1' : '0',
    'root-layer', spec.rootLayer ?? 'plain',
    'name', spec.machineName,
    'hostname', spec.hostname,
    'uuid', formatUuid(spec.uuid),
    'boot', spec.payload.kind === 'boot' ? '1' : '0',
    'as-pid2', spec.payload.asPid2 ? '1' : '0',
    'console', spec.console,
    'kill-signal', String(spec.killSignal),
    'private-network', spec.namespaces.privateNetwork ? '1' : '0',
    'caps', hex(capabilityMask(spec.capabilities.bounding)),
    'ambient', hex(capabilityMask(spec.capabilities.ambient)),
    'no-new-privs', spec.noNewPrivileges ? '1' : '0',
    'seccomp', spec.seccomp ? '1' : '0',
    'suppress-sync', spec.suppressSync ? '1' : '0',
    'notify-ready', spec.notifyReady ? '1' : '0',
    'quiet', spec.quiet ? '1' : '0',
    'cgroup', spec.cgroup ?? '',
    'uid', String(user.uid),
    'gid', String(user.gid),
    'chdir', spec.payload.chdir ?? (spec.payload.kind === 'command' && spec.payload.argv.length === 0 ? user.home : '/'),
  ];
  const limit = (v: bigint | null): string => (v === null ? 'infinity' : v.toString());
  for (const r of spec.rlimits ?? []) a.push('rlimit', String(r.resource), limit(r.soft), limit(r.hard));
  if (spec.oomScoreAdjust !== undefined) a.push('oom-score-adjust', String(spec.oomScoreAdjust));
  if (spec.cpuAffinity?.length) a.push('cpu-affinity', formatCpuList(spec.cpuAffinity));
  for (const item of spec.syscallFilter?.allow ?? []) a.push('syscall-allow', item);
  for (const item of spec.syscallFilter?.deny ?? []) a.push('syscall-deny', item);
  // personality(2) values: PER_LINUX32 (x86 on an x86-64 host), PER_LINUX
  if (spec.personality) a.push('personality', spec.personality === 'x86' ? '8' : '0');
  const userns = spec.namespaces.userNamespace;
  if (userns) a.push(...(userns.pickLockDir ? ['userns-pick', userns.pickLockDir] : ['userns', String(userns.uidShift), String(userns.uidRange)]));
  if (userns?.rootView) a.push('userns-root', userns.rootView.kind, userns.rootView.at);
  for (const g of user.groups) a.push('group', String(g));
  for (const e of env) a.push('env', e);
  a.push('host-file', 'container-manager', '644', '755', 't', `${spec.containerManager}\n`);
  for (const f of spec.hostFiles) {
    if (f.path.split('/').includes('..') || f.path.startsWith('/')) throw new UserError(`invalid /run/host file name '${f.path}'`);
    const dirMode = (f.dirMode ?? 0o755).toString(8);
    // argv cannot carry NUL bytes: binary content travels as hex
    if (f.encoding === 'base64') a.push('host-file', f.path, f.mode.toString(8), dirMode, 'x', Buffer.from(f.content, 'base64').toString('hex'));
    else a.push('host-file', f.path, f.mode.toString(8), dirMode, 't', f.content);
  }
  for (const m of spec.mounts) {
    switch (m.kind) {
      case 'bind':
        a.push('bind', `${m.readOnly ? 'ro' : 'rw'}${m.recursive ? '' : ',norec'}`, m.source, m.destination);
        break;
      case 'tmpfs':
        a.push('tmpfs', m.destination, m.options);
        break;
      case 'overlay':
        if (m.temporaryUpper) {
          a.push('overlay-tmp', m.destination, m.lowerDirs.join(':'));
          break;
        }
        a.push('overlay', m.destination, m.lowerDirs.join(':'), m.upperDir ?? '', m.workDir ?? '');
        break;
      case 'inaccessible':
        a.push('inaccessible', m.destination);
        break;
    }
  }
  for (const f of spec.loopbackForwards ?? []) a.push('proxy6', String(f.hostPort), f.address, String(f.port));
  a.push('--', ...spec.payload.argv);
  return a;
}

function readOptional(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** Checks that are cheap here and give a clear line, before anything is created. */
export function checkSpec(spec: ContainerSpec): void {
  let st;
  try {
    st = statSync(spec.root);
  } catch {
    throw new UserError(`directory ${spec.root} does not exist`);
  }
  if (!st.isDirectory()) throw new UserError(`${spec.root} is not a directory`);
  if (spec.payload.kind === 'boot') {
    const found = INIT_CANDIDATES.some((p) => {
      try {
        lstatSync(spec.root + p);
        return true;
      } catch {
        return false;
      }
    });
    if (!found) throw new UserError(`no init found in ${spec.root}`, { hint: `looked for ${INIT_CANDIDATES.join(', ')}` });
  }
  for (const m of spec.mounts) {
    if (!m.destination.startsWith('/')) throw new UserError(`mount destination '${m.destination}' is not an absolute path`);
    if (m.kind === 'bind' && !existsSync(m.source)) throw new UserError(`bind mount source ${m.source} does not exist`);
  }
}

/** Everything the helper needs, computed without touching the system (besides reading files). */
export function prepareHelperArgs(spec: ContainerSpec): string[] {
  checkSpec(spec);
  const user =
    spec.payload.user === null
      ? ROOT_USER
      : resolveUser(spec.payload.user, readOptional(`${spec.root}/etc/passwd`), readOptional(`${spec.root}/etc/group`));
  return helperArgs(spec, user, containerEnvironment(spec, user, process.env['TERM']));
}

/** rmdir a cgroup once the processes just killed in it are gone (their exit takes a moment). */
async function removeEmptiedCgroup(dir: string): Promise<void> {
  for (let tries = 0; tries < 400; tries++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') return;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Start the container and become its supervisor. Does not return on success: this process is
 * replaced by the native supervisor and exits with the container's status.
 */
export async function launch(spec: ContainerSpec, hooks: LaunchHooks = {}): Promise<never> {
  const args = prepareHelperArgs(spec);
  const helper = helperPath();
  const execve = await loadExecve();
  const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  const afterNamespaces = hooks.afterNamespaces ?? [];
  const network = hooks.network ?? null;
  if (afterNamespaces.length === 0) execve(helper, ['mctl-nsexec', 'run', ...(network?.helperArgs(true) ?? []), ...args], env);

  const controller = hooks.busController;
  const prepareArgs = [...(controller ? ['bus', controller.address] : []), ...(network?.helperArgs(false) ?? []), ...args];
  const { status, report } = await spawnWithReport(helper, ['mctl-nsexec', 'prepare', ...prepareArgs], env);
  if (status !== 0) {
    // the helper's own line (a failed pick, idmap or mount) comes through the report pipe
    const said = /^mctl-nspawn: (.+)$/m.exec(report);
    throw new UserError(said?.[1] ?? 'failed to create the container', { exitCode: 1 });
  }
  const m = /^(\d+) (\d+) (-?\d+) (\S+) (\S+) (\S+)\n$/.exec(report);
  if (!m) throw new Error(`unexpected report from mctl-nsexec: '${report}'`);
  const pid = Number(m[1]);
  const fd = m[2] ?? '';
  const busFd = Number(m[3]);
  if (controller) controller.uniqueName = busFd >= 0 && m[4] !== '-' ? m[4]! : null;
  // the cgroup2 directory prepare started the container in (the supervisor adopts it)
  const cgroupDir = m[5] !== '-' ? m[5] : undefined;
  hooks.netifIndices?.push(...parseIfindices(m[6] ?? '-'));
  network?.prepared();
  try {
    for (const hook of afterNamespaces) await hook(pid);
  } catch (err) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    for (const undo of [...(hooks.onAbort ?? [])].reverse()) {
      try {
        await undo();
      } catch {
        // keep undoing the rest
      }
    }
    if (cgroupDir) await removeEmptiedCgroup(cgroupDir);
    throw err;
  }
  const busArgs = controller?.uniqueName && controller.trustedSenders.length > 0 ? ['bus-fd', String(busFd), ...controller.trustedSenders.flatMap((t) => ['bus-trust', t.name, t.owner])] : [];
  const lockArgs = (hooks.lockFiles ?? []).flatMap((l) => ['lock-file', String(l.fd), l.path]);
  execve(helper, ['mctl-nsexec', 'supervise', String(pid), fd, ...busArgs, ...lockArgs, ...args], env);
  throw new Error('unreachable: execve returned');
}
