// The launcher's network and user-namespace options: parsing (command line and .nspawn
// [Network]/PrivateUsers keys), nspawn's conflict rules, and the reservation whose plan the
// native helper carries out (its net-* tokens) when it creates the container. The mechanics live in src/net (links, nft, pools) and
// src/nspawn/userns.ts (ranges, ownership); this file only connects them to the launcher.
import { UserError } from '../common/errors.js';
// Only the light parsers are loaded up front; the machinery is imported when a container needs it.
import { isValidIfname } from '../net/ip.js';
import { isValidZoneName } from '../net/names.js';
import { parsePortForward, assertNoDuplicatePorts, type PortForward } from '../net/ports.js';
import type { VethExtra, MachineLinks, MachineNetwork, MachineNetworkReservation } from '../net/machine.js';
import { parsePrivateUsers, parseOwnership, type PrivateUsers, type Ownership } from './userns.js';
import type { NetworkSettings as FileNetworkKeys } from './settings.js';
import type { UserNamespaceSpec } from './spec.js';

/** Network settings as given (undefined = not given, for the .nspawn merge: nspawn treats them as one group). */
export interface NetworkSettings {
  privateNetwork?: boolean;
  veth?: boolean;
  vethExtra?: VethExtra[];
  bridge?: string;
  zone?: string;
  interfaces?: string[];
  macvlan?: string[];
  ipvlan?: string[];
  namespacePath?: string;
  ports?: PortForward[];
  /** mctl's own addresses/routes/NAT for veth and zone links (default on). */
  auto?: boolean;
}

export interface UsernsSettings {
  privateUsers?: PrivateUsers;
  ownership?: Ownership;
}

function parseBool(v: string, what: string): boolean {
  if (['yes', 'true', 'on', '1', 'y', 't'].includes(v)) return true;
  if (['no', 'false', 'off', '0', 'n', 'f'].includes(v)) return false;
  throw new UserError(`invalid ${what} '${v}'`, { hint: 'expected yes or no' });
}

function ifname(v: string, what: string): string {
  if (!isValidIfname(v)) throw new UserError(`invalid interface name '${v}' for ${what}`);
  return v;
}

export function parseVethExtra(v: string): VethExtra {
  const [host, container, ...rest] = v.split(':');
  if (!host || rest.length) throw new UserError(`invalid --network-veth-extra '${v}'`, { hint: 'expected HOSTIF[:CONTAINERIF]' });
  return { host: ifname(host, '--network-veth-extra'), container: ifname(container || host, '--network-veth-extra') };
}

const add = <T>(cur: T[] | undefined, v: T): T[] => [...(cur ?? []), v];

export interface NetOptionDef {
  long: string;
  short?: string;
  arg: 'none' | 'required' | 'optional';
  apply(net: NetworkSettings, users: UsernsSettings, value: string | undefined): void;
}

/** Option definitions for the launcher's parser (options.ts maps them onto its own table). */
export const NETWORK_OPTIONS: NetOptionDef[] = [
  { long: 'private-network', arg: 'none', apply: (n) => void (n.privateNetwork = true) },
  { long: 'network-veth', short: 'n', arg: 'none', apply: (n) => void (n.veth = true) },
  { long: 'network-veth-extra', arg: 'required', apply: (n, _u, v) => void (n.vethExtra = add(n.vethExtra, parseVethExtra(v ?? ''))) },
  { long: 'network-bridge', arg: 'required', apply: (n, _u, v) => void (n.bridge = ifname(v ?? '', '--network-bridge')) },
  {
    long: 'network-zone',
    arg: 'required',
    apply: (n, _u, v) => {
      if (!v || !isValidZoneName(v) || !isValidIfname(`vz-${v}`.slice(0, 15))) throw new UserError(`invalid network zone name '${v ?? ''}'`);
      n.zone = v;
    },
  },
  { long: 'network-interface', arg: 'required', apply: (n, _u, v) => void (n.interfaces = add(n.interfaces, ifname(v ?? '', '--network-interface'))) },
  { long: 'network-macvlan', arg: 'required', apply: (n, _u, v) => void (n.macvlan = add(n.macvlan, ifname(v ?? '', '--network-macvlan'))) },
  { long: 'network-ipvlan', arg: 'required', apply: (n, _u, v) => void (n.ipvlan = add(n.ipvlan, ifname(v ?? '', '--network-ipvlan'))) },
  {
    long: 'network-namespace-path',
    arg: 'required',
    apply: (n, _u, v) => {
      if (!v || !v.startsWith('/')) throw new UserError(`invalid --network-namespace-path '${v ?? ''}': not an absolute path`);
      n.namespacePath = v;
    },
  },
  { long: 'port', short: 'p', arg: 'required', apply: (n, _u, v) => void (n.ports = add(n.ports, parsePortForward(v ?? ''))) },
  { long: 'network-auto', arg: 'required', apply: (n, _u, v) => void (n.auto = parseBool(v ?? '', '--network-auto')) },
  { long: 'private-users', arg: 'optional', apply: (_n, u, v) => void (u.privateUsers = parsePrivateUsers(v ?? 'yes')) },
  { long: 'private-users-ownership', arg: 'required', apply: (_n, u, v) => void (u.ownership = parseOwnership(v ?? '')) },
  // Older spelling kept by nspawn: --private-users-chown = ownership chown.
  { long: 'private-users-chown', arg: 'none', apply: (_n, u) => void (u.ownership = 'chown') },
  {
    long: 'U', // no long form in nspawn; a one-letter long name marks short-only options in options.ts
    short: 'U',
    arg: 'none',
    apply: (_n, u) => {
      u.privateUsers = { mode: 'pick' };
      u.ownership = 'auto';
    },
  },
];

export const NETWORK_HELP = `
Networking:
     --private-network      Disable network in container (only lo)
     --network-interface=INTERFACE
                            Move an existing network interface into the container
     --network-macvlan=INTERFACE
                            Create a macvlan interface (mv-INTERFACE) based on INTERFACE
     --network-ipvlan=INTERFACE
                            Create an ipvlan interface (iv-INTERFACE) based on INTERFACE
  -n --network-veth         Add a virtual Ethernet link: ve-NAME on the host, host0 inside
     --network-veth-extra=HOSTIF[:CONTAINERIF]
                            Add an additional virtual Ethernet link
     --network-bridge=BRIDGE
                            Add the veth (vb-NAME) to an existing bridge
     --network-zone=NAME    Join the zone bridge vz-NAME (created on demand, removed with its last member)
     --network-namespace-path=PATH
                            Run in the network namespace at PATH
  -p --port=[tcp|udp:]HOST[:CONTAINER]
                            Forward a host port to the container (IPv4 and IPv6, also from
                            127.0.0.1 and, for TCP, [::1])
     --network-auto=BOOL    Give veth/zone containers addresses, default routes, NAT and a
                            resolv.conf (default yes; say no when systemd-networkd does it)

User namespacing:
     --private-users=no|yes|pick|identity|UID[:COUNT]
                            Run in a user namespace (pick = allocate a free 64K range)
     --private-users-ownership=off|chown|map|auto
                            Adjust file ownership to the range (map = idmapped mount)
  -U                        Equivalent to --private-users=pick --private-users-ownership=auto
`;

/** A network setting group with every field resolved. */
export interface NetworkPlan extends MachineLinks {
  privateNetwork: boolean;
  namespacePath: string | null;
}

/** Apply nspawn's implications and refuse its conflicting combinations. */
export function resolveNetwork(s: NetworkSettings = {}): NetworkPlan {
  const p: NetworkPlan = {
    privateNetwork: s.privateNetwork ?? false,
    veth: s.veth ?? false,
    vethExtra: s.vethExtra ?? [],
    bridge: s.bridge ?? null,
    zone: s.zone ?? null,
    interfaces: s.interfaces ?? [],
    macvlan: s.macvlan ?? [],
    ipvlan: s.ipvlan ?? [],
    namespacePath: s.namespacePath ?? null,
    ports: s.ports ?? [],
    auto: s.auto ?? true,
  };
  if (p.bridge && p.zone) throw new UserError('--network-bridge= and --network-zone= may not be combined');
  if (p.bridge || p.zone) p.veth = true;
  const others = p.veth || p.vethExtra.length > 0 || p.interfaces.length > 0 || p.macvlan.length > 0 || p.ipvlan.length > 0;
  if (p.namespacePath && (others || p.ports.length > 0)) {
    throw new UserError('--network-namespace-path= may not be combined with other network options (except --private-network)');
  }
  if (others) p.privateNetwork = true;
  // A joined namespace is not one the runtime creates (no CLONE_NEWNET): to the runtime this is
  // "no private network", and the container gets no CAP_NET_ADMIN over someone else's namespace.
  if (p.namespacePath) p.privateNetwork = false;
  if (p.ports.length > 0 && !p.privateNetwork) throw new UserError('--port= needs private networking (e.g. --network-veth)');
  if (p.ports.length > 0 && !(p.veth && p.auto && !p.bridge)) {
    throw new UserError('--port= needs a veth or zone link with automatic addressing', { hint: 'use --network-veth or --network-zone, without --network-auto=no' });
  }
  assertNoDuplicatePorts(p.ports);
  if (new Set(p.interfaces).size !== p.interfaces.length) throw new UserError('--network-interface: an interface was given twice');
  return p;
}

/** Whether the plan needs anything done from the host once the namespaces exist. */
export function needsHostSetup(p: NetworkPlan): boolean {
  return p.veth || p.vethExtra.length > 0 || p.interfaces.length > 0 || p.macvlan.length > 0 || p.ipvlan.length > 0;
}

/** A forward from [::1]:hostPort to the container's address:port (src/nspawn/native/proxy.c). */
export interface LoopbackForward {
  hostPort: number;
  address: string;
  port: number;
}

export interface NetworkRuntime {
  /** Before the container exists: allocation, state file, and the plan the native helper carries out. */
  reserve(): Promise<void>;
  /** The helper's net-* tokens (handOver: this process execs into the helper, see MachineNetworkReservation). */
  helperArgs(handOver: boolean): string[];
  /** The helper's `prepare` made the links (their host-side ifindices); the machine lock goes on to the supervisor. */
  prepared(): void;
  /** For LaunchHooks.onAbort and for the normal stop: undo everything (idempotent). */
  teardown(): Promise<void>;
  /** What was set up (addresses for registration / status), once prepared. */
  network(): MachineNetwork | null;
  /** TCP forwards the supervisor serves on [::1] (the kernel cannot DNAT it), once reserved. */
  loopbackForwards(): LoopbackForward[];
}

export function networkRuntime(machine: string, plan: NetworkPlan): NetworkRuntime {
  let reservation: MachineNetworkReservation | null = null;
  let net: MachineNetwork | null = null;
  // Loaded as soon as the launcher knows it needs it, while the rest of the start is prepared.
  const machinery = needsHostSetup(plan) ? import('../net/machine.js') : null;
  machinery?.catch(() => undefined); // reported by reserve()
  return {
    async reserve() {
      if (!machinery) return;
      const { reserveMachineNetwork } = await machinery;
      const { privateNetwork: _private, namespacePath: _path, ...links } = plan;
      reservation = await reserveMachineNetwork({ ...links, machine, collector: true });
    },
    helperArgs: (handOver: boolean) => reservation?.helperArgs(handOver) ?? [],
    prepared() {
      const r = reservation;
      reservation = null;
      if (r) net = r.attached();
      net?.lock.keepAcrossExec();
    },
    async teardown() {
      const n = net;
      const r = reservation;
      net = null;
      reservation = null;
      if (n) await n.teardown();
      else if (r) await r.abandon();
    },
    network: () => net,
    loopbackForwards: () => {
      const state = reservation?.state ?? net?.state;
      const to = state?.ipv6?.address;
      return to ? (state?.ports ?? []).filter((p) => p.protocol === 'tcp').map((p) => ({ hostPort: p.hostPort, address: to, port: p.containerPort })) : [];
    },
  };
}

/** For the service: remove what a killed launcher of MACHINE left behind. */
export async function collectMachineNetwork(machine: string): Promise<'collected' | 'running' | 'absent'> {
  const { collect } = await import('../net/machine.js');
  return collect(machine);
}

// ---------------------------------------------------------------------------------------------
// Launcher glue: one call from main.ts turns the settings into namespace flags, the root to
// use, hooks and the helper's network tokens; everything it creates is undone on failure and
// handed to the supervisor on success (lock fds kept across execve; the helper starts a flock(1)
// watcher that collects after the end).

export interface NetUsernsSetup {
  privateNetwork: boolean;
  /** veth/zone with mctl's addressing: the container reaches what the host reaches (resolv.conf like the host's). */
  hostLikeConnectivity: boolean;
  /** The map (or the request to pick one) and the container-only root view the helper attaches. */
  userNamespace: UserNamespaceSpec | null;
  /** The root to hand to the runtime (the tree itself: the helper redirects to the view). */
  root: string;
  afterNamespaces: Array<(leaderPid: number) => Promise<void>>;
  onAbort: Array<() => Promise<void>>;
  /** For ContainerSpec.loopbackForwards. */
  loopbackForwards: LoopbackForward[];
  /** For LaunchHooks.network: what the helper makes of the network, null without host-side links. */
  network: NetworkRuntime | null;
  /** Undo for a failure before launch() was reached. */
  cleanup(): Promise<void>;
}

export interface NetUsernsInput {
  machineName: string;
  root: string;
  network?: NetworkSettings;
  userns?: UsernsSettings;
  /** The tree may be changed (ownership=chown needs it). */
  treeWritable: boolean;
}

export async function prepareNetworkAndUserns(input: NetUsernsInput): Promise<NetUsernsSetup> {
  const plan = resolveNetwork(input.network);
  if (plan.namespacePath) {
    // This thread enters the namespace now; the runtime started from it inherits it (see src/net/netns.ts).
    const { joinNetworkNamespace } = await import('../net/netns.js');
    joinNetworkNamespace(plan.namespacePath);
  }
  // Created first: it starts loading the network machinery while the user namespace is prepared.
  const runtime = needsHostSetup(plan) ? networkRuntime(input.machineName, plan) : null;
  const privateUsers = input.userns?.privateUsers ?? { mode: 'no' as const };
  const undo: Array<() => Promise<void> | void> = [];
  const cleanup = async (): Promise<void> => {
    for (const u of undo.splice(0).reverse()) {
      try {
        await u();
      } catch {
        /* keep undoing */
      }
    }
  };
  const setup: NetUsernsSetup = {
    privateNetwork: plan.privateNetwork,
    hostLikeConnectivity: plan.veth && plan.auto && !plan.bridge,
    userNamespace: null,
    root: input.root,
    afterNamespaces: [],
    onAbort: [cleanup],
    loopbackForwards: [],
    network: runtime,
    cleanup,
  };
  try {
    if (privateUsers.mode !== 'no') {
      // The range lock (pick) is taken and held by the native helper, the root view made by it
      // inside the container's mount namespace: nothing here to undo or hand over.
      const { planUserNamespace } = await import('./userns.js');
      const users = await planUserNamespace(privateUsers, input.userns?.ownership, input.root, input.treeWritable);
      if (users) {
        setup.userNamespace = users.userNamespace;
        if (users.afterNamespaces) setup.afterNamespaces.push(users.afterNamespaces);
      }
    }
    if (runtime) {
      undo.push(() => runtime.teardown());
      await runtime.reserve();
      setup.loopbackForwards = runtime.loopbackForwards();
    }
    return setup;
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** [Network] keys of a .nspawn file (as settings.ts keeps them) in the command line's terms. */
export function networkFromFile(k: FileNetworkKeys): NetworkSettings | undefined {
  if (Object.keys(k).length === 0) return undefined;
  const n: NetworkSettings = {};
  if (k.private !== undefined) n.privateNetwork = k.private;
  if (k.virtualEthernet !== undefined) n.veth = k.virtualEthernet;
  if (k.virtualEthernetExtra?.length) n.vethExtra = k.virtualEthernetExtra.map(parseVethExtra);
  if (k.interface?.length) n.interfaces = k.interface.map((i) => ifname(i, 'Interface='));
  if (k.macvlan?.length) n.macvlan = k.macvlan.map((i) => ifname(i, 'MACVLAN='));
  if (k.ipvlan?.length) n.ipvlan = k.ipvlan.map((i) => ifname(i, 'IPVLAN='));
  if (k.bridge) n.bridge = ifname(k.bridge, 'Bridge=');
  if (k.zone) {
    if (!isValidZoneName(k.zone)) throw new UserError(`invalid network zone name '${k.zone}'`);
    n.zone = k.zone;
  }
  if (k.port?.length) n.ports = k.port.map(parsePortForward);
  return n;
}

export function usernsFromFile(k: { privateUsers?: string; privateUsersOwnership?: string }): UsernsSettings | undefined {
  const u: UsernsSettings = {};
  if (k.privateUsers !== undefined) u.privateUsers = parsePrivateUsers(k.privateUsers);
  if (k.privateUsersOwnership !== undefined) u.ownership = parseOwnership(k.privateUsersOwnership);
  return Object.keys(u).length ? u : undefined;
}
