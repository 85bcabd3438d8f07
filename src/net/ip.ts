// A typed wrapper over iproute2 (`ip -j` for queries, `ip -batch -` for changes) for callers
// that want iproute2's own view, e.g. tests checking what the kernel shows. Container network
// setup and clean-up do not run `ip`: the launcher's native helper makes the links
// (src/nspawn/native/net.c) and the clean-up deletes them over rtnetlink (src/sys/netlink.ts).
// Commands can target another network namespace by the PID of a process inside it, or by a
// namespace file.
import { runTool } from './exec.js';

/** Where a command runs: the host's namespace (undefined), a process's netns, or a netns file. */
export type NetnsTarget = { pid: number } | { path: string } | undefined;

function withNetns(argv: string[], target: NetnsTarget): string[] {
  if (!target) return argv;
  const ns = 'pid' in target ? `/proc/${target.pid}/ns/net` : target.path;
  return ['nsenter', `--net=${ns}`, '--', ...argv];
}

export interface Link {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  operstate: string;
  address?: string;
  master?: string;
  link_type: string;
  altnames?: string[];
  linkinfo?: { info_kind?: string };
}

export interface AddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
  scope: string;
}

export interface LinkAddrs {
  ifname: string;
  addr_info: AddrInfo[];
}

export interface Route {
  dst: string;
  gateway?: string;
  dev?: string;
}

export async function ipJson<T>(args: readonly string[], target?: NetnsTarget): Promise<T> {
  const out = await runTool(withNetns(['ip', '-j', ...args], target));
  return (out.trim() === '' ? [] : JSON.parse(out)) as T;
}

/** Run several `ip` commands (one per line, without the leading "ip") in one exec; stops at the first failure. */
export async function ipBatch(lines: readonly string[], target?: NetnsTarget): Promise<void> {
  if (lines.length === 0) return;
  await runTool(withNetns(['ip', '-batch', '-'], target), lines.join('\n') + '\n');
}

export async function listLinks(target?: NetnsTarget): Promise<Link[]> {
  return ipJson<Link[]>(['-d', 'link', 'show'], target);
}

export async function getLink(name: string, target?: NetnsTarget): Promise<Link | null> {
  const links = await listLinks(target);
  return links.find((l) => l.ifname === name || (l.altnames ?? []).includes(name)) ?? null;
}

export async function listAddrs(target?: NetnsTarget): Promise<LinkAddrs[]> {
  return ipJson<LinkAddrs[]>(['addr', 'show'], target);
}

export async function listRoutes(family: 4 | 6, target?: NetnsTarget): Promise<Route[]> {
  return ipJson<Route[]>([`-${family}`, 'route', 'show'], target);
}

/** Delete a link if it exists (deleting one end of a veth removes both). */
export async function deleteLinkIfExists(name: string, target?: NetnsTarget): Promise<boolean> {
  if (!(await getLink(name, target))) return false;
  try {
    await ipBatch([`link del dev ${name}`], target);
    return true;
  } catch (err) {
    if (!(await getLink(name, target))) return false; // raced with the kernel removing it
    throw err;
  }
}

/** Members of a bridge, from sysfs (no exec). */
export async function bridgeMembers(bridge: string): Promise<string[] | null> {
  const { readdir } = await import('node:fs/promises');
  try {
    return await readdir(`/sys/class/net/${bridge}/brif`);
  } catch {
    return null;
  }
}

export function isValidIfname(name: string): boolean {
  return name.length > 0 && Buffer.byteLength(name) <= 15 && !/[\s/:]/.test(name) && name !== '.' && name !== '..';
}
