// A machine's network, end to end: host-side links (veth, zone bridge member, bridge member,
// extra veths, moved/macvlan/ipvlan interfaces), automatic addressing and NAT, port forwards,
// and the state + lock files that let anyone clean up after a launcher that was killed.
//
// Files under cfg.stateDir:
//   alloc.lock            serialises allocation, zone bridge create/remove and nft table changes
//                         (a launcher holds it from its reservation until the links exist)
//   machines/NAME.json    what was set up for NAME (written BEFORE anything is created)
//   machines/NAME.lock    held (flock, so flock(1) can wait for it) by the launcher, then by
//                         its supervisor, for the container's whole life
// A state file whose lock is free belongs to a dead launcher: collect() undoes it, and every
// allocation collects such leftovers first, so a SIGKILLed launcher never leaks addresses.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../common/errors.js';
import { siphash24, hexKey } from './siphash.js';
import { generateMac, hostVethName, zoneBridgeName, MAC_KEYS, isValidZoneName, shortenIfname } from './names.js';
import { bridgeMembers, isValidIfname } from './ip.js';
import { machineRulesScript, removeMachineRules, type MachineRule } from './nft.js';
import { applyLinkPlan, linkPlanArgs, LinkSetupError, type LinkPlan } from './links.js';
import { LockFile, isLockFree } from './lockfile.js';
import { netConfig, slotCount, slotSubnet, formatIPv4, formatIPv6, type NetConfig } from './config.js';
import { portForwardRules, assertNoDuplicatePorts, type PortForward } from './ports.js';
import { SysError } from '../sys/errno.js';
import { NftError } from '../sys/nftables.js';
import { clearCloexec } from '../sys/native-addon.js';
import { RtNetlink } from '../sys/netlink.js';

export interface VethExtra {
  host: string;
  container: string;
}

/** The links and forwards of one machine, as the option layer resolved them. */
export interface MachineLinks {
  veth: boolean;
  vethExtra: VethExtra[];
  /** --network-bridge: an existing bridge the vb-NAME veth joins. */
  bridge: string | null;
  /** --network-zone: vz-ZONE, created on demand. */
  zone: string | null;
  interfaces: string[];
  macvlan: string[];
  ipvlan: string[];
  ports: PortForward[];
  /** Addresses, default routes and NAT from mctl (false: leave it to networkd or the admin). */
  auto: boolean;
}

/** What the launcher asks for (already parsed and checked for conflicts by the option layer). */
export interface MachineNetworkRequest extends MachineLinks {
  machine: string;
  /** A process inside the container's network namespace (the container's leader). */
  leaderPid: number;
  /** Start the watcher that collects after the launcher's end (spawnCollector); the launcher wants it. */
  collector?: boolean;
}

export interface AddressPair {
  address: string;
  gateway: string;
  prefix: number;
}

export interface MachineNetState {
  machine: string;
  table: string;
  mode: 'veth' | 'zone' | 'bridge' | 'none';
  /** Host side of the main veth (ve-NAME / vb-NAME), null without one. */
  hostIf: string | null;
  zone: string | null;
  /** Bridge the host side is enslaved to (the zone's vz-ZONE or --network-bridge). */
  bridge: string | null;
  /** Whether this machine created the zone bridge (informational; removal checks membership). */
  slot: number | null;
  slots: number;
  ipv4: AddressPair | null;
  ipv6: AddressPair | null;
  ports: PortForward[];
  extraHostIfs: string[];
  leaderPid: number;
}

export interface MachineNetwork {
  state: MachineNetState;
  /** The machine lock; keep its fd open (keepAcrossExec) for as long as the container lives. */
  lock: LockFile;
  /** Undo everything (the launcher calls it when the container stops). */
  teardown(): Promise<void>;
}

const SLOT_KEY = hexKey('6d63746c2d6e65742d736c6f742d6b31'); // first-guess key for address slots
const ZONE_SLOTS = 16;

function machinesDir(cfg: NetConfig): string {
  return join(cfg.stateDir, 'machines');
}

function statePath(cfg: NetConfig, machine: string): string {
  return join(machinesDir(cfg), `${machine}.json`);
}

export function machineLockPath(machine: string, cfg: NetConfig = netConfig()): string {
  return lockPath(cfg, machine);
}

function lockPath(cfg: NetConfig, machine: string): string {
  return join(machinesDir(cfg), `${machine}.lock`);
}

function writeState(cfg: NetConfig, state: MachineNetState): void {
  mkdirSync(machinesDir(cfg), { recursive: true, mode: 0o755 });
  const tmp = `${statePath(cfg, state.machine)}.tmp`;
  writeFileSync(tmp, JSON.stringify(state) + '\n', { mode: 0o644 });
  renameSync(tmp, statePath(cfg, state.machine));
}

export function readMachineNetState(machine: string, cfg: NetConfig = netConfig()): MachineNetState | null {
  try {
    return JSON.parse(readFileSync(statePath(cfg, machine), 'utf8')) as MachineNetState;
  } catch {
    return null;
  }
}

function listStates(cfg: NetConfig): MachineNetState[] {
  let names: string[];
  try {
    names = readdirSync(machinesDir(cfg));
  } catch {
    return [];
  }
  return names.filter((n) => n.endsWith('.json')).flatMap((n) => {
    const s = readMachineNetState(n.slice(0, -5), cfg);
    return s ? [s] : [];
  });
}

/** Undo a state: rules, links, zone bridge. Caller holds alloc.lock and the machine is dead or ours. */
async function undoState(cfg: NetConfig, s: MachineNetState): Promise<void> {
  const errors: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  // With no other machine on the table, the table goes in the same transaction as the rules.
  const last = !listStates(cfg).some((o) => o.table === s.table && o.machine !== s.machine);
  await attempt('nft', () => removeMachineRules(s.table, s.machine, last));
  for (const link of [s.hostIf, ...s.extraHostIfs]) if (link) await attempt(link, () => deleteLinkIfExists(link));
  if (s.zone && s.bridge) {
    const bridge = s.bridge;
    await attempt(bridge, async () => {
      const members = await bridgeMembers(bridge);
      if (members !== null && members.length === 0) await deleteLinkIfExists(bridge);
    });
  }
  try {
    unlinkSync(statePath(cfg, s.machine));
  } catch {
    /* gone */
  }
  if (errors.length) throw new Error(`cleaning up the network of ${s.machine}: ${errors.join('; ')}`);
}

async function withAllocLock<T>(cfg: NetConfig, fn: () => Promise<T>): Promise<T> {
  // Async: the service may collect two machines at once, and must keep answering the bus meanwhile.
  const lock = await LockFile.acquireAsync(join(cfg.stateDir, 'alloc.lock'));
  try {
    return await fn();
  } finally {
    lock.release(false);
  }
}

/** Collect leftovers of launchers that died (state file present, machine lock free). Under alloc.lock. */
async function collectStale(cfg: NetConfig): Promise<void> {
  for (const s of listStates(cfg)) {
    const lp = lockPath(cfg, s.machine);
    const lock = LockFile.tryAcquire(lp, 'flock');
    if (!lock) continue;
    try {
      await undoState(cfg, s);
    } finally {
      lock.release(true);
    }
  }
}

export type CollectResult = 'collected' | 'running' | 'absent';

/**
 * Remove what a machine's launcher set up when that launcher is gone (killed, crashed). A machine
 * whose launcher still holds its lock is left alone ('running'). Safe to call any time.
 */
export async function collect(machine: string, cfg: NetConfig = netConfig()): Promise<CollectResult> {
  return withAllocLock(cfg, async () => {
    const s = readMachineNetState(machine, cfg);
    if (!s) return 'absent';
    const lock = LockFile.tryAcquire(lockPath(cfg, machine), 'flock');
    if (!lock) return 'running';
    try {
      await undoState(cfg, s);
    } finally {
      lock.release(true);
    }
    return 'collected';
  });
}

/** Pick `slots` free consecutive aligned slots; the first guess hashes the owner's name so addresses are stable. */
function pickSlot(cfg: NetConfig, owner: string, slots: number, used: ReadonlyArray<[number, number]>): number {
  const total = slotCount(cfg);
  const want = Math.min(slots, total);
  const candidates = Math.floor(total / want);
  const start = Number(siphash24(owner, SLOT_KEY) % BigInt(candidates));
  for (let i = 0; i < candidates; i++) {
    const slot = ((start + i) % candidates) * want;
    if (used.every(([s, n]) => slot + want <= s || s + n <= slot)) return slot;
  }
  throw new UserError('the container address pool is exhausted', { hint: 'set a larger pool with MCTL_NET_POOL4' });
}

function hostAddr(net4: number, n: number): string {
  return formatIPv4((net4 + n) >>> 0);
}

async function deleteLinkIfExists(name: string): Promise<boolean> {
  const nl = RtNetlink.open();
  try {
    return await nl.deleteLink(name);
  } finally {
    nl.close();
  }
}

// sysfs, not rtnetlink: these run on every networked start, and rtnetlink from Node means koffi.
function checkLinkExists(name: string, what: string, kind?: 'bridge'): void {
  if (!existsSync(`/sys/class/net/${name}`)) throw new UserError(`${what} '${name}' does not exist`);
  if (kind && !existsSync(`/sys/class/net/${name}/bridge`)) throw new UserError(`${what} '${name}' is not a ${kind}`);
}

/** Set a sysctl under /proc/sys/net unless it already has the value (an unchanged host stays untouched). */
function writeSysctl(path: string, value: string): void {
  const file = `/proc/sys/net/${path}`;
  if (readFileSync(file, 'utf8').trim() !== value) writeFileSync(file, value);
}

/** What the launcher asks for before the container exists (the PID comes with attach()). */
export type MachineNetworkPlan = Omit<MachineNetworkRequest, 'leaderPid'>;

/**
 * The first half of setupMachineNetwork, done before the container exists: the machine lock,
 * the address allocation, the state file, and the plan of links and rules, which the native
 * helper carries out (src/net/links.ts). alloc.lock is held from here until the links exist,
 * so a zone's bridge and addresses cannot change underneath.
 */
export interface MachineNetworkReservation {
  readonly state: MachineNetState;
  /**
   * The helper's net-* tokens. With handOver (the launcher's run mode: this process becomes the
   * helper) both locks go with them: the helper releases alloc.lock once the links exist, holds
   * the machine lock for the container's life and collects itself after a failure.
   */
  helperArgs(handOver: boolean): string[];
  /** The helper made the links (prepare, or the hand-over): let go of alloc.lock, own the result. */
  attached(): MachineNetwork;
  /** For a process that exists already: make the links now (`mctl-nsexec net`). */
  attach(leaderPid: number): Promise<MachineNetwork>;
  abandon(): Promise<void>;
}

export async function reserveMachineNetwork(req: MachineNetworkPlan, cfg: NetConfig = netConfig()): Promise<MachineNetworkReservation> {
  const { machine } = req;
  assertNoDuplicatePorts(req.ports);
  if (req.zone !== null && !isValidZoneName(req.zone)) throw new UserError(`invalid network zone name '${req.zone}'`);
  for (const x of req.vethExtra) {
    for (const n of [x.host, x.container]) if (!isValidIfname(n)) throw new UserError(`invalid interface name '${n}' in --network-veth-extra`);
  }
  if (req.bridge) checkLinkExists(req.bridge, 'bridge', 'bridge');
  for (const i of [...req.interfaces, ...req.macvlan, ...req.ipvlan]) checkLinkExists(i, 'network interface');
  const mode: MachineNetState['mode'] = req.zone ? 'zone' : req.bridge ? 'bridge' : req.veth ? 'veth' : 'none';
  const autoAddr = req.auto && (mode === 'veth' || mode === 'zone');
  if (req.ports.length > 0 && !autoAddr) {
    throw new UserError('--port needs a veth or zone link with automatic addressing', { hint: 'use --network-veth or --network-zone, without --network-auto=no' });
  }

  // A collector cleaning up after the previous run of this name holds the lock for a moment.
  const lock = await LockFile.acquireWithin(lockPath(cfg, machine), 'flock', 3000);
  if (!lock) throw new UserError(`machine '${machine}' already has a network set up by a running launcher`);
  let alloc: LockFile | null = null;
  let settled = false;
  // Undo what the plan recorded (the state file, else `fallback`) and let go of both locks. The
  // helper removed the links it made itself (it alone knows which names were free): here only
  // rules, state and an emptied zone bridge remain.
  const undoReservation = async (fallback: MachineNetState | null): Promise<void> => {
    settled = true;
    try {
      const recorded = readMachineNetState(machine, cfg) ?? fallback;
      const s = recorded && { ...recorded, hostIf: null, extraHostIfs: [] };
      if (s && alloc) await undoState(cfg, s);
      else if (s) await withAllocLock(cfg, () => undoState(cfg, s));
    } finally {
      alloc?.release(false);
      alloc = null;
      lock.release(true);
    }
  };
  const fail = async (err: unknown): Promise<never> => {
    await undoReservation(null).catch(() => undefined);
    if (err instanceof LinkSetupError) throw new UserError(err.message);
    if (err instanceof SysError || err instanceof NftError) throw new UserError(`network setup for '${machine}' failed: ${err.message}`);
    throw err;
  };

  let s: MachineNetState;
  let plan: LinkPlan;
  try {
    // Async: the service may collect two machines at once, and must keep answering the bus meanwhile.
    alloc = await LockFile.acquireAsync(join(cfg.stateDir, 'alloc.lock'));
    const old = readMachineNetState(machine, cfg);
    if (old) await undoState(cfg, old); // leftover of an earlier, killed launcher of the same name
    await collectStale(cfg);

    const main = mode === 'none' ? null : hostVethName(machine, mode === 'veth' ? 'veth' : 'bridge-member');
    // A name taken by someone else's link stays theirs: refused here, so nothing (a collector
    // after a failed start included) ever deletes a link of that name on our behalf.
    for (const taken of [main?.name, ...req.vethExtra.map((x) => x.host)]) {
      if (taken && existsSync(`/sys/class/net/${taken}`)) throw new UserError(`network setup for '${machine}' failed: network interface '${taken}' already exists`);
    }
    const zoneBridge = req.zone ? zoneBridgeName(req.zone) : null;
    const bridge = zoneBridge?.name ?? req.bridge;
    const others = listStates(cfg);
    let slot: number | null = null;
    let slots = 1;
    let hostNo = 2;
    if (autoAddr) {
      const zoneMate = req.zone ? others.find((o) => o.zone === req.zone && o.slot !== null) : undefined;
      if (zoneMate && zoneMate.slot !== null) {
        slot = zoneMate.slot;
        slots = zoneMate.slots;
        const taken = new Set(others.filter((o) => o.zone === req.zone).map((o) => o.ipv4?.address));
        const sub = slotSubnet(cfg, slot, slots);
        while (taken.has(hostAddr(sub.net4, hostNo))) hostNo++;
        if (hostNo >= 16 * slots - 1) throw new UserError(`network zone '${req.zone}' is full`);
      } else {
        slots = req.zone ? Math.min(ZONE_SLOTS, slotCount(cfg)) : 1;
        const used = others.flatMap((o): Array<[number, number]> => (o.slot === null ? [] : [[o.slot, o.slots]]));
        slot = pickSlot(cfg, req.zone ? `zone:${req.zone}` : machine, slots, used);
      }
    }
    const sub = slot === null ? null : slotSubnet(cfg, slot, slots);
    s = {
      machine,
      table: cfg.table,
      mode,
      hostIf: main?.name ?? null,
      zone: req.zone,
      bridge,
      slot,
      slots,
      ipv4: sub ? { address: hostAddr(sub.net4, hostNo), gateway: hostAddr(sub.net4, 1), prefix: sub.prefix4 } : null,
      ipv6: sub ? { address: formatIPv6(sub.net6 + BigInt(hostNo)), gateway: formatIPv6(sub.net6 + 1n), prefix: 64 } : null,
      ports: req.ports,
      extraHostIfs: req.vethExtra.map((x) => x.host),
      leaderPid: 0, // known at attach(); stays 0 when the launcher hands over (it never learns it)
    };
    // Recorded before anything exists, so a crash half-way is still collectable.
    writeState(cfg, s);

    const gwIf = zoneBridge?.name ?? main?.name ?? null;
    const auto = sub && s.ipv4 && s.ipv6 && gwIf ? { ipv4: s.ipv4, ipv6: s.ipv6, gwIf, sub } : null;
    // The first member of a zone gives the bridge its gateway addresses.
    const zoneHasAddresses = zoneBridge ? others.some((o) => o.zone === req.zone && o.slot !== null) : false;
    let rules: MachineRule[] = [];
    if (auto) {
      const net4 = `${formatIPv4(auto.sub.net4)}/${auto.sub.prefix4}`;
      const net6 = `${formatIPv6(auto.sub.net6)}/64`;
      rules = [
        { chain: 'postrouting', rule: `ip saddr ${net4} ip daddr != ${net4} masquerade` },
        { chain: 'postrouting', rule: `ip6 saddr ${net6} ip6 daddr != ${net6} masquerade` },
        ...portForwardRules(req.ports, { ipv4: auto.ipv4.address, ipv6: auto.ipv6.address, hostIf: auto.gwIf }),
      ];
    }
    if (auto) {
      // Routing between the container links and the uplink (see docs/networking.md, "What mctl changes on the host").
      writeSysctl('ipv4/ip_forward', '1');
      writeSysctl('ipv6/conf/all/forwarding', '1');
    }
    plan = {
      main: main ? { ...main, mac: generateMac(machine, MAC_KEYS.host), peer: 'host0', peerMac: generateMac(machine, MAC_KEYS.container) } : null,
      extras: req.vethExtra.map((x, idx) => ({ name: x.host, mac: generateMac(machine, MAC_KEYS.extraHost, idx), peer: x.container, peerMac: generateMac(machine, MAC_KEYS.extraContainer, idx) })),
      // (the helper leaves an existing zone bridge alone)
      createBridge: zoneBridge,
      bridge,
      gateway: auto && !zoneHasAddresses ? { ifname: auto.gwIf, ipv4: auto.ipv4, ipv6: auto.ipv6 } : null,
      container: auto ? { ipv4: auto.ipv4, ipv6: auto.ipv6 } : null,
      interfaces: req.interfaces,
      macvlan: req.macvlan.map((i) => ({ parent: i, name: shortenIfname(`mv-${i}`).name, mac: generateMac(`${machine}${i}`, MAC_KEYS.macvlan) })),
      ipvlan: req.ipvlan.map((i) => ({ parent: i, name: shortenIfname(`iv-${i}`).name })),
      // Loopback-sourced forwards: IPv4 refuses 127/8 on a non-loopback link without this.
      sysctls: auto && req.ports.length > 0 ? [[`ipv4/conf/${auto.gwIf}/route_localnet`, '1']] : [],
      // The rules match links by name, which need not exist yet: the helper runs the transaction
      // in a worker process while it makes the links.
      nft: machineRulesScript(cfg.table, machine, rules),
      watcher: req.collector ? collectorCommand(machine, cfg) : null,
    };
  } catch (err) {
    return fail(err);
  }
  const state = s;
  const network = (): MachineNetwork => {
    settled = true;
    alloc?.release(false);
    alloc = null;
    return {
      state,
      lock,
      teardown: async () => {
        try {
          await withAllocLock(cfg, async () => undoState(cfg, readMachineNetState(machine, cfg) ?? state));
        } finally {
          lock.release(true);
        }
      },
    };
  };
  return {
    state,
    helperArgs: (handOver: boolean): string[] => {
      const args = linkPlanArgs(plan);
      if (!handOver || !alloc) return args;
      clearCloexec(alloc.fd);
      clearCloexec(lock.fd);
      return [...args, 'net-alloc-lock', String(alloc.fd), 'net-machine-lock', String(lock.fd)];
    },
    attached: network,
    attach: async (leaderPid: number): Promise<MachineNetwork> => {
      if (settled) throw new Error(`the network reservation of ${machine} is already used`);
      try {
        state.leaderPid = leaderPid;
        writeState(cfg, state);
        await applyLinkPlan(machine, leaderPid, plan);
      } catch (err) {
        return fail(err);
      }
      return network();
    },
    abandon: async () => {
      if (!settled) await undoReservation(state);
    },
  };
}

/** Set up everything for one machine whose network namespace exists (leaderPid is inside it). */
export async function setupMachineNetwork(req: MachineNetworkRequest, cfg: NetConfig = netConfig()): Promise<MachineNetwork> {
  const reservation = await reserveMachineNetwork(req, cfg);
  return reservation.attach(req.leaderPid);
}

/** Addresses mctl gave the machine (for GetMachineAddresses when the namespace cannot be read). */
export function machineAddresses(machine: string, cfg: NetConfig = netConfig()): string[] {
  const s = readMachineNetState(machine, cfg);
  return s ? [s.ipv4?.address, s.ipv6?.address].filter((a): a is string => typeof a === 'string') : [];
}

export { isLockFree };

/**
 * The watcher that cleans up after this machine's launcher (the native helper starts it): a
 * detached `sh` + `flock(1)` waiting for the machine lock (held by the launcher, later by the
 * native supervisor), which then runs collect(). Two sleeping tiny processes, no Node until the end.
 */
export function collectorCommand(machine: string, cfg: NetConfig = netConfig()): { lock: string; argv: string[] } {
  const script = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './collect-main.ts' : './collect-main.js', import.meta.url));
  const node = script.endsWith('.ts') ? [process.execPath, '--import', 'tsx', script] : [process.execPath, script];
  // The helper runs it with its own environment: the configuration travels in the command.
  return { lock: lockPath(cfg, machine), argv: ['/usr/bin/env', `MCTL_NET_STATE_DIR=${cfg.stateDir}`, `MCTL_NET_TABLE=${cfg.table}`, ...node, machine] };
}
