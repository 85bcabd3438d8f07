// The links, addresses, routes and rules of one container, as tokens for the native helper
// (src/nspawn/native/net.c), which makes them itself: inside the launcher's own helper process
// (run/prepare: the container's side is created right in its network namespace while the
// container mounts) or, for a process that already exists, as `mctl-nsexec net PID`. Nothing of
// this runs in Node: that would cost koffi (~10 ms to load) on every networked start.
import { nativeFile, spawnWithReport } from '../sys/native-addon.js';
import type { AddressPair } from './machine.js';

export interface VethPlan {
  name: string;
  altName?: string;
  mac: string;
  peer: string;
  peerMac: string;
}

export interface LinkPlan {
  /** The main veth (ve-NAME / vb-NAME, host0 inside). */
  main: VethPlan | null;
  /** --network-veth-extra pairs. */
  extras: VethPlan[];
  /** The zone bridge, created unless it exists. */
  createBridge: { name: string; altName?: string } | null;
  /** The bridge the main veth joins (zone bridge or --network-bridge). */
  bridge: string | null;
  /** Gateway addresses for the host side of the link (ve-NAME or the zone bridge), unless the zone has them. */
  gateway: { ifname: string; ipv4: AddressPair; ipv6: AddressPair } | null;
  /** Addresses and default routes of host0 (mctl's automatic addressing). */
  container: { ipv4: AddressPair; ipv6: AddressPair } | null;
  interfaces: string[];
  macvlan: Array<{ parent: string; name: string; mac: string }>;
  ipvlan: Array<{ parent: string; name: string }>;
  /** Written under /proc/sys/net once the links exist (they may name them). */
  sysctls: ReadonlyArray<readonly [string, string]>;
  /** The nft transaction (libnftables' input language), or null. */
  nft: string | null;
  /** Started detached: waits for this lock (flock(1)), then runs argv (the collector). */
  watcher: { lock: string; argv: readonly string[] } | null;
}

const dash = (v: string | null | undefined): string => v || '-';

/** The helper's net-* tokens for PLAN (see net_config_key in native/net.c). */
export function linkPlanArgs(p: LinkPlan): string[] {
  const a: string[] = [];
  if (p.createBridge) a.push('net-bridge', p.createBridge.name, dash(p.createBridge.altName));
  if (p.main) a.push('net-veth', p.main.name, p.main.mac, p.main.peer, p.main.peerMac, dash(p.bridge), dash(p.main.altName));
  for (const x of p.extras) a.push('net-veth', x.name, x.mac, x.peer, x.peerMac, '-', dash(x.altName));
  if (p.gateway) {
    for (const g of [p.gateway.ipv4, p.gateway.ipv6]) a.push('net-addr', 'host', p.gateway.ifname, g.gateway, String(g.prefix));
  }
  if (p.container && p.main) {
    for (const c of [p.container.ipv4, p.container.ipv6]) a.push('net-addr', 'container', p.main.peer, c.address, String(c.prefix));
    for (const c of [p.container.ipv4, p.container.ipv6]) a.push('net-route', p.main.peer, c.gateway);
  }
  for (const i of p.interfaces) a.push('net-move', i);
  for (const m of p.macvlan) a.push('net-macvlan', m.parent, m.name, m.mac);
  for (const m of p.ipvlan) a.push('net-ipvlan', m.parent, m.name);
  for (const [key, value] of p.sysctls) a.push('net-sysctl', key, value);
  if (p.nft) a.push('net-nft', p.nft);
  if (p.watcher) {
    a.push('net-watch', p.watcher.lock);
    for (const arg of p.watcher.argv) a.push('net-collector', arg);
  }
  return a;
}

/** A failed `mctl-nsexec net`: the helper's one line ("network setup for 'x' failed: …"). */
export class LinkSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LinkSetupError';
  }
}

/**
 * Make the links of an existing process's network namespace (`mctl-nsexec net PID`); returns
 * the host-side interface indices. On failure the helper has removed the links it made.
 */
export async function applyLinkPlan(machine: string, leaderPid: number, plan: LinkPlan): Promise<number[]> {
  const helper = nativeFile('mctl-nsexec');
  if (!helper) throw new Error('the native helper mctl-nsexec is missing (run npm run build)');
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  const { status, report } = await spawnWithReport(helper, ['mctl-nsexec', 'net', String(leaderPid), 'name', machine, ...linkPlanArgs(plan), '--'], env);
  if (status !== 0) throw new LinkSetupError(/^mctl-nspawn: (.+)$/m.exec(report)?.[1] ?? `mctl-nsexec net failed (status ${status})`);
  return parseIfindices(report.trim());
}

/** The helper's "1,2" (or "-") list of host-side interface indices. */
export function parseIfindices(text: string): number[] {
  return text === '-' || text === '' ? [] : text.split(',').map(Number).filter((n) => n > 0);
}
