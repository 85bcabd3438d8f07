// ContainerSpec: the contract between the option layer (argv, .nspawn files, mount plan) and
// the runtime (launch.ts + the native helper). Plain data only, so it can be printed, compared
// in unit tests and handed to the native helper without knowing where it came from.
//
// Everything the runtime does is driven from here; the runtime adds nothing the spec does not ask
// for except the fixed "container world" that systemd-nspawn always builds (API filesystems,
// /dev nodes, devpts, /run/host, cgroup namespace; see docs/nspawn-internals.md).

/** How the container's console is wired (systemd-nspawn --console=). */
export type ConsoleMode =
  /** a pty; our stdin/stdout are relayed in raw mode; ^]^]^] within 1 s leaves */
  | 'interactive'
  /** a pty; its output is relayed, our stdin is not */
  | 'read-only'
  /** a pty nobody reads or writes (/dev/console exists, output discarded) */
  | 'passive'
  /** no pty: the payload inherits our stdin/stdout/stderr as they are; no /dev/console */
  | 'pipe';

/** The program to run as the container's first process. */
export interface PayloadSpec {
  /**
   * `boot` searches init as nspawn does (/usr/lib/systemd/systemd, /lib/systemd/systemd,
   * /sbin/init) inside the root and passes `argv` as init's arguments.
   * `command` runs argv[0] (searched in PATH inside the container when it has no '/');
   * an empty argv means a login shell (bash, falling back to sh) as nspawn does.
   */
  kind: 'boot' | 'command';
  argv: string[];
  /** --as-pid2: run the payload as PID 2 under a minimal stub init (reaps, forwards signals). */
  asPid2: boolean;
  /** -u/--user: user name (resolved from the container's /etc/passwd) or numeric uid; null = root. */
  user: string | null;
  /** --chdir: working directory inside the container; null = the user's home (or /). */
  chdir: string | null;
  /**
   * Extra environment (--setenv and .nspawn Environment=), applied after the defaults
   * (PATH, container=, container_uuid=, HOME, USER, LOGNAME, TERM, NOTIFY_SOCKET).
   */
  env: Record<string, string>;
}

/** A user namespace with a fixed mapping: container ids 0..range-1 are host ids shift..shift+range-1. */
export interface UserNamespaceSpec {
  uidShift: number;
  uidRange: number;
  /** Let the native helper pick a free 64 Ki range (locks in this directory; uidShift is ignored). */
  pickLockDir?: string;
  /** The root as the container sees it: an idmapped or plain clone of the tree, attached at `at` inside its mount namespace only. */
  rootView?: { kind: 'idmap' | 'bind'; at: string };
}

export interface NamespaceSpec {
  /** A private network namespace (only lo inside unless an afterNamespaces hook adds links). */
  privateNetwork: boolean;
  /** A private user namespace with a fixed map written before the payload gains privileges; null = none. */
  userNamespace: UserNamespaceSpec | null;
}

/** Mount flags shared by the mount operations. */
export interface BindMountOp {
  kind: 'bind';
  /** Absolute host path (resolved before launch; must exist). */
  source: string;
  /** Absolute path inside the container; created (as dir or file, matching the source) if missing. */
  destination: string;
  readOnly: boolean;
  /** true = rbind (nspawn's default), false = norbind. */
  recursive: boolean;
}

export interface TmpfsMountOp {
  kind: 'tmpfs';
  destination: string;
  /** tmpfs options, e.g. "mode=0755,size=10%"; nosuid,nodev are always added (as nspawn does). */
  options: string;
}

export interface OverlayMountOp {
  kind: 'overlay';
  destination: string;
  /** Host paths, top-most first (overlayfs lowerdir order). */
  lowerDirs: string[];
  /** Host path of the writable upper layer; null = read-only overlay of the lower dirs. */
  upperDir: string | null;
  /** Host path of overlayfs' work dir (same filesystem as upperDir); null when upperDir is null. */
  workDir: string | null;
  /**
   * (added by nspawn-options) --overlay with an empty upper: upperDir/workDir are null and the
   * runtime makes them on a fresh tmpfs inside the container's mount namespace, so the
   * layer is writable and disappears with the namespace (nothing on the host, even after SIGKILL).
   */
  temporaryUpper?: boolean;
}

export interface InaccessibleMountOp {
  kind: 'inaccessible';
  /** Path inside the container over-mounted with an empty, mode-0 node of the same type. */
  destination: string;
}

/** Extra mounts, applied in order inside the new root after the API filesystems are set up. */
export type MountOp = BindMountOp | TmpfsMountOp | OverlayMountOp | InaccessibleMountOp;

/** A file written into the container's /run/host (a tmpfs made read-only after writing). */
export interface HostFile {
  /** Relative to /run/host, e.g. "container-manager". No "..". */
  path: string;
  content: string;
  mode: number;
  /** (added by nspawn-options) 'base64' = content is base64 of binary data (credentials); default utf8. */
  encoding?: 'utf8' | 'base64';
  /** (added by nspawn-options) mode of the directories created for `path` (credentials/ is 0500); default 0755. */
  dirMode?: number;
}

export interface CapabilitySpec {
  /** Capability numbers kept in the bounding set; everything else is dropped (nspawn's default list). */
  bounding: number[];
  /** Ambient capabilities for a non-root payload (--ambient-capability). */
  ambient: number[];
}

export interface ContainerSpec {
  /** Absolute path of the directory that becomes the container's / (already prepared: image mounted, ephemeral copy made). */
  root: string;
  /**
   * The root is mounted read-only (--read-only); the mount plan's ops still apply on top.
   * API filesystems (/proc, /sys, /dev, /run, /tmp) are mounted regardless.
   */
  readOnlyRoot: boolean;
  /**
   * (added by nspawn-options) How the root is assembled from `root` inside the container's
   * mount namespace, before the API filesystems. Done there rather than on the host so a
   * throw-away layer dies with the namespace, even when the launcher is SIGKILLed.
   *  - 'plain' (default): `root` as it is.
   *  - 'overlay': overlayfs, lower = `root`, upper + work on a fresh tmpfs
   *    (-x/--ephemeral of a directory, --volatile=overlay): all writes are discarded at exit.
   *  - 'volatile': a fresh tmpfs (mode 0755) as /, with `root`/usr bind-mounted read-only on /usr
   *    (--volatile=yes).
   * readOnlyRoot applies to the assembled root ('volatile' keeps / writable and /usr read-only).
   */
  rootLayer?: 'plain' | 'overlay' | 'volatile';
  /** Machine name (a valid hostname); used for the cgroup name and messages. */
  machineName: string;
  /** Hostname set in the UTS namespace (--hostname, default the machine name). */
  hostname: string;
  /** 32 lowercase hex digits; exported as $container_uuid and /run/host/container-uuid. */
  uuid: string;
  payload: PayloadSpec;
  console: ConsoleMode;
  /** Signal number sent to the container's PID 1 when we are asked to stop (SIGTERM/SIGINT to the launcher). */
  killSignal: number;
  namespaces: NamespaceSpec;
  /**
   * --port forwards the supervisor serves on the host's [::1] (TCP), relaying to the container's
   * IPv6 address: nftables cannot DNAT ::1 (see native/proxy.c).
   */
  loopbackForwards?: ReadonlyArray<{ hostPort: number; address: string; port: number }>;
  mounts: MountOp[];
  capabilities: CapabilitySpec;
  /** PR_SET_NO_NEW_PRIVS for the payload (--no-new-privileges). */
  noNewPrivileges: boolean;
  /** --suppress-sync: sync calls are no-ops, O_SYNC/O_DSYNC opens fail (seccomp). */
  suppressSync?: boolean;
  /** --system-call-filter: names and @groups added to / removed from the seccomp allow-list. */
  syscallFilter?: { allow: string[]; deny: string[] };
  /** Install the default seccomp filter (nspawn 252's allow-list); false only for debugging. */
  seccomp: boolean;
  /** Files placed in /run/host besides os-release, container-manager and container-uuid (added by the runtime). */
  hostFiles: HostFile[];
  /**
   * --notify-ready: report READY=1 to our $NOTIFY_SOCKET only when the payload sends READY=1;
   * false = report READY=1 as soon as the payload has been started (nspawn's default).
   */
  notifyReady: boolean;
  /**
   * Cgroup the container is placed into (path relative to the cgroup root, e.g. "/machine.slice/machine-foo.scope"),
   * or null: a fresh sub-cgroup "<our cgroup>/mctl-<name>-<pid>" is created and removed at exit.
   */
  cgroup: string | null;
  /** The value of $container (nspawn uses "systemd-nspawn"). */
  containerManager: string;
  /** -q: do not print the "Spawning container" / "Container X exited" lines. */
  quiet: boolean;
  /**
   * --rlimit: limits for the container's PID 1 (resource = Linux RLIMIT_* number, null = infinity).
   * Without a NOFILE entry the runtime lowers the soft NOFILE limit to 1024, as nspawn does.
   */
  rlimits?: RlimitSpec[];
  /** --oom-score-adjust for the container's PID 1; undefined = inherit. */
  oomScoreAdjust?: number;
  /** --cpu-affinity: the CPUs PID 1 (and so everything in the container) may run on; undefined or empty = inherit. */
  cpuAffinity?: number[];
  /** --personality: the architecture uname(2) reports inside; undefined = the host's. */
  personality?: 'x86' | 'x86-64';
}

export interface RlimitSpec {
  resource: number;
  soft: bigint | null;
  hard: bigint | null;
}

/** Environment defaults of PID 1 in the container, in nspawn's order; spec.payload.env is applied over them. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Init candidates for --boot, in nspawn's search order. */
export const INIT_CANDIDATES = ['/usr/lib/systemd/systemd', '/lib/systemd/systemd', '/sbin/init'] as const;
