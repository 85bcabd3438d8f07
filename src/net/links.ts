// The whole network setup of one container, in-process: links, addresses and routes over
// rtnetlink (src/sys/netlink.ts) on the host and, through a socket opened inside the
// container's network namespace, on the container's side; the nft transaction (libnftables on a
// worker thread, started by the caller) meanwhile (the rules match links by name, so they need not
// wait for them); then the watcher that collects after the launcher's end. No program runs in
// the critical path; the watcher is started with posix_spawn (no fork of Node) and not waited for.
import { writeFileSync } from 'node:fs';
import { RtNetlink } from '../sys/netlink.js';
import { spawnDetached } from '../sys/spawn.js';
import type { AddressPair } from './machine.js';

export interface VethPlan {
  name: string;
  altName?: string;
  mac: string;
  peer: string;
  peerMac: string;
}

export interface LinkPlan {
  /** A process inside the container's network namespace. */
  leaderPid: number;
  /** The main veth (ve-NAME / vb-NAME, host0 inside). */
  main: VethPlan | null;
  /** --network-veth-extra pairs. */
  extras: VethPlan[];
  /** The zone bridge to create (it does not exist yet). */
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
  /** The nft transaction, already running (the caller started it as early as it could), or null. */
  nft: Promise<unknown> | null;
  /** Started detached at the end: waits for this lock, then runs argv (the collector). */
  watcher: { lock: string; argv: readonly string[]; env: Record<string, string> } | null;
}

function linkIndex(nl: RtNetlink, name: string): number {
  const link = nl.getLink(name);
  if (!link) throw new Error(`link ${name} vanished during setup`);
  return link.index;
}

function configureHost(nl: RtNetlink, p: LinkPlan, created: Set<string>): void {
  if (p.createBridge) {
    nl.createBridge(p.createBridge.name, true);
    created.add(p.createBridge.name);
    if (p.createBridge.altName) nl.addAltName(p.createBridge.name, p.createBridge.altName);
  }
  const master = p.bridge ? linkIndex(nl, p.bridge) : undefined;
  if (p.main) {
    nl.createVeth({ name: p.main.name, mac: p.main.mac, peer: { name: p.main.peer, mac: p.main.peerMac, netnsPid: p.leaderPid }, master, up: true });
    created.add(p.main.name);
    if (p.main.altName) nl.addAltName(p.main.name, p.main.altName);
  }
  for (const x of p.extras) {
    nl.createVeth({ name: x.name, mac: x.mac, peer: { name: x.peer, mac: x.peerMac, netnsPid: p.leaderPid }, up: true });
    created.add(x.name);
  }
  if (p.gateway) {
    const index = linkIndex(nl, p.gateway.ifname);
    nl.addAddress(index, p.gateway.ifname, p.gateway.ipv4.gateway, p.gateway.ipv4.prefix, { replace: true });
    nl.addAddress(index, p.gateway.ifname, p.gateway.ipv6.gateway, p.gateway.ipv6.prefix, { replace: true, nodad: true });
  }
  for (const i of p.interfaces) nl.setLink(i, { netnsPid: p.leaderPid });
  for (const m of p.macvlan) nl.createVlanLike('macvlan', m.name, linkIndex(nl, m.parent), p.leaderPid, m.mac);
  for (const m of p.ipvlan) nl.createVlanLike('ipvlan', m.name, linkIndex(nl, m.parent), p.leaderPid);
}

function configureContainer(p: LinkPlan): void {
  const nl = RtNetlink.open(`/proc/${p.leaderPid}/ns/net`);
  try {
    // lo always (as nspawn's loopback_setup does); host0 with its addresses and routes with auto.
    nl.setLink('lo', { up: true });
    if (!p.container || !p.main) return;
    const { ipv4, ipv6 } = p.container;
    nl.setLink(p.main.peer, { up: true });
    const index = linkIndex(nl, p.main.peer);
    nl.addAddress(index, p.main.peer, ipv4.address, ipv4.prefix);
    nl.addAddress(index, p.main.peer, ipv6.address, ipv6.prefix, { nodad: true });
    nl.addDefaultRoute(index, p.main.peer, ipv4.gateway);
    nl.addDefaultRoute(index, p.main.peer, ipv6.gateway);
  } finally {
    nl.close();
  }
}

/** The watcher: `sh` waiting in flock(1) for the machine lock, then exec'ing the collector. */
export function startWatcher(w: NonNullable<LinkPlan['watcher']>): number {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  // flock(1) keeps holding the lock while its command runs, so wait with `true` and only then collect.
  // /bin/sh, not sh: no PATH walk while posix_spawn's vfork holds this process
  return spawnDetached(['/bin/sh', '-c', 'flock -x "$0" true; exec "$@"', w.lock, ...w.argv], { ...env, ...w.env });
}

/**
 * Apply the plan. On failure, throws after the nft transaction settled (so undo sees all of it);
 * `created` then names the host-side links this run made (a name that was taken by someone
 * else's link is not ours to delete).
 */
export async function applyLinkPlan(p: LinkPlan, created: Set<string> = new Set()): Promise<void> {
  const rules = p.nft ?? Promise.resolve();
  try {
    const nl = RtNetlink.open();
    try {
      configureHost(nl, p, created);
    } finally {
      nl.close();
    }
    for (const [key, value] of p.sysctls) writeFileSync(`/proc/sys/net/${key}`, value);
    configureContainer(p);
  } catch (err) {
    await rules.catch(() => undefined);
    throw err;
  }
  await rules;
  if (p.watcher) startWatcher(p.watcher);
}
