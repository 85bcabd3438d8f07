// rtnetlink in-process: the link, address and route changes `ip` would make, sent on a
// NETLINK_ROUTE socket over koffi. One request costs two system calls (send + recv of the
// ack) instead of a fork + exec of iproute2, which is what keeps container network setup
// within a few milliseconds. A socket can be opened inside another network namespace (the
// calling thread enters it just for socket(2) and returns at once: only the socket lives on
// there), so a container's side is configured from the host without nsenter.
//
// Failures are NetlinkError (a SysError): the operation, the object, the errno name and the
// kernel's extended-ack text when it sent one, e.g. `create veth(ve-x): EEXIST (File exists)`.
import { closeSync, openSync, constants as fsConstants } from 'node:fs';
import { getSystemErrorMap } from 'node:util';
import { loadKoffi } from './koffi.js';
import { SysError, errnoNumber } from './errno.js';
import { setns, CLONE } from './libc.js';

type KoffiFn = ((...args: unknown[]) => unknown) & { async(...args: unknown[]): void };
interface Koffi {
  load(path: string): { func(signature: string): KoffiFn };
  errno(): number;
}

interface SocketCalls {
  koffi: Koffi;
  socket: KoffiFn;
  setsockopt: KoffiFn;
  send: KoffiFn;
  recv: KoffiFn;
}

let calls: SocketCalls | undefined;

function socketCalls(): SocketCalls {
  if (calls) return calls;
  const koffi = loadKoffi<Koffi>();
  const c = koffi.load('libc.so.6');
  calls = {
    koffi,
    socket: c.func('int socket(int domain, int type, int protocol)'),
    setsockopt: c.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
    send: c.func('long send(int fd, const void *buf, size_t len, int flags)'),
    recv: c.func('long recv(int fd, void *buf, size_t len, int flags)'),
  };
  return calls;
}

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;

export const AF = { UNSPEC: 0, INET: 2, BRIDGE: 7, INET6: 10 } as const;
export const RTM = { NEWLINK: 16, DELLINK: 17, GETLINK: 18, NEWADDR: 20, NEWROUTE: 24, NEWLINKPROP: 108 } as const;
export const NLM_F = { REQUEST: 0x1, MULTI: 0x2, ACK: 0x4, REPLACE: 0x100, EXCL: 0x200, CREATE: 0x400 } as const;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;
const NLA_F_NESTED = 0x8000;

export const IFLA = {
  ADDRESS: 1,
  IFNAME: 3,
  LINK: 5,
  MASTER: 10,
  LINKINFO: 18,
  NET_NS_PID: 19,
  NET_NS_FD: 28,
  PROP_LIST: 52,
  ALT_IFNAME: 53,
} as const;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
const IFLA_MACVLAN_MODE = 1;
const MACVLAN_MODE_BRIDGE = 4;
const IFLA_IPVLAN_MODE = 1;
const IPVLAN_MODE_L2 = 0;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_F_NODAD = 0x02;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RT_TABLE_MAIN = 254;
const RTPROT_BOOT = 3;
const RT_SCOPE_UNIVERSE = 0;
const RTN_UNICAST = 1;
export const IFF_UP = 0x1;

/** A netlink attribute: raw bytes, or nested attributes. */
export interface Attr {
  type: number;
  value: Buffer | Attr[];
}

export const attr = {
  u32(type: number, v: number): Attr {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return { type, value: b };
  },
  str(type: number, s: string): Attr {
    return { type, value: Buffer.from(`${s}\0`, 'utf8') };
  },
  mac(type: number, mac: string): Attr {
    return { type, value: Buffer.from(mac.replace(/:/g, ''), 'hex') };
  },
  nest(type: number, children: Attr[]): Attr {
    return { type, value: children };
  },
};

const align4 = (n: number): number => (n + 3) & ~3;

export function encodeAttrs(attrs: readonly Attr[]): Buffer {
  const parts: Buffer[] = [];
  for (const a of attrs) {
    const payload = Buffer.isBuffer(a.value) ? a.value : encodeAttrs(a.value);
    const head = Buffer.alloc(4);
    head.writeUInt16LE(4 + payload.length, 0);
    head.writeUInt16LE(a.type, 2);
    parts.push(head, payload, Buffer.alloc(align4(payload.length) - payload.length));
  }
  return Buffer.concat(parts);
}

/** Attributes of a payload by type (the last one wins; nested ones are parsed on demand). */
export function decodeAttrs(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let off = 0; off + 4 <= buf.length; ) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > buf.length) break;
    out.set(buf.readUInt16LE(off + 2) & ~NLA_F_NESTED & 0x7fff, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}

/** struct ifinfomsg: family, type, index, flags, change. */
export function ifinfomsg(index = 0, flags = 0, change = 0, family: number = AF.UNSPEC): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.writeUInt32LE(change >>> 0, 12);
  return b;
}

function ifaddrmsg(family: number, prefixlen: number, flags: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefixlen, 1);
  b.writeUInt8(flags, 2);
  b.writeUInt8(RT_SCOPE_UNIVERSE, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

function rtmsg(family: number, dstLen: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeUInt8(dstLen, 1);
  b.writeUInt8(RT_TABLE_MAIN, 4);
  b.writeUInt8(RTPROT_BOOT, 5);
  b.writeUInt8(RT_SCOPE_UNIVERSE, 6);
  b.writeUInt8(RTN_UNICAST, 7);
  return b;
}

/** An IPv4 or IPv6 address in network byte order. */
export function addressBytes(text: string): { family: number; bytes: Buffer } {
  if (text.includes(':')) {
    const halves = text.split('::');
    const [head = '', tail] = halves;
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const missing = 8 - h.length - t.length;
    const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(missing, 0)).fill('0'), ...t];
    if (halves.length > 2 || groups.length !== 8 || groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) throw new Error(`not an IPv6 address: ${text}`);
    const b = Buffer.alloc(16);
    groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
    return { family: AF.INET6, bytes: b };
  }
  const parts = text.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`not an IPv4 address: ${text}`);
  return { family: AF.INET, bytes: Buffer.from(parts) };
}

export class NetlinkError extends SysError {
  constructor(what: string, object: string, errno: number, extack?: string) {
    super(what, errno, object, extack || getSystemErrorMap().get(-errno)?.[1]);
    this.name = 'NetlinkError';
  }
}

export interface LinkInfo {
  index: number;
  name: string;
  flags: number;
  /** IFLA_INFO_KIND ("veth", "bridge" …), null for links without one (e.g. physical). */
  kind: string | null;
  master: number | null;
}

export interface VethSpec {
  name: string;
  mac?: string;
  peer: { name: string; mac?: string; netnsPid?: number; netnsFd?: number };
  /** Enslave the host side to this bridge (ifindex) at creation. */
  master?: number;
  up?: boolean;
}

const RECV_SIZE = 65536;

/** A NETLINK_ROUTE socket; requests are synchronous (rtnetlink answers inside send()). */
export class RtNetlink {
  private fdValue: number | null;
  private seq = 1;
  private readonly rbuf = Buffer.alloc(RECV_SIZE);

  private constructor(fd: number) {
    this.fdValue = fd;
  }

  /** A socket in this thread's network namespace, or in the one of `netns` (a /proc/PID/ns/net or bind-mounted nsfs path). */
  static open(netns?: string): RtNetlink {
    const c = socketCalls();
    const make = (): number => {
      const fd = Number(c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
      if (fd < 0) throw new SysError('socket', c.koffi.errno(), 'AF_NETLINK');
      return fd;
    };
    const fd = netns === undefined ? make() : inNetns(netns, make);
    const one = Buffer.alloc(4);
    one.writeInt32LE(1);
    // Errors carry the kernel's explanation; acks do not echo the whole request back.
    c.setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
    c.setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, one, 4);
    return new RtNetlink(fd);
  }

  private get fd(): number {
    if (this.fdValue === null) throw new Error('netlink socket closed');
    return this.fdValue;
  }

  close(): void {
    if (this.fdValue !== null) closeSync(this.fdValue);
    this.fdValue = null;
  }

  private frame(type: number, flags: number, header: Buffer, attrs: readonly Attr[]): { msg: Buffer; seq: number } {
    const body = Buffer.concat([header, encodeAttrs(attrs)]);
    const h = Buffer.alloc(16);
    const seq = this.seq++;
    h.writeUInt32LE(16 + body.length, 0);
    h.writeUInt16LE(type, 4);
    h.writeUInt16LE(flags | NLM_F.REQUEST | NLM_F.ACK, 6);
    h.writeUInt32LE(seq, 8);
    return { msg: Buffer.concat([h, body]), seq };
  }

  private sendFrame(msg: Buffer, what: string, object: string): void {
    const c = socketCalls();
    if (Number(c.send(this.fd, msg, msg.length, 0)) < 0) throw new NetlinkError(what, object, c.koffi.errno());
  }

  /** Receive until the ack of `seq`; returns the data messages that came before it (type, payload). */
  private receive(seq: number, what: string, object: string): Array<{ type: number; payload: Buffer }> {
    const c = socketCalls();
    const data: Array<{ type: number; payload: Buffer }> = [];
    for (;;) {
      const n = Number(c.recv(this.fd, this.rbuf, RECV_SIZE, 0));
      if (n < 0) throw new NetlinkError(what, object, c.koffi.errno());
      for (let off = 0; off + 16 <= n; ) {
        const len = this.rbuf.readUInt32LE(off);
        if (len < 16 || off + len > n) break;
        const type = this.rbuf.readUInt16LE(off + 4);
        const flags = this.rbuf.readUInt16LE(off + 6);
        const mseq = this.rbuf.readUInt32LE(off + 8);
        const payload = Buffer.from(this.rbuf.subarray(off + 16, off + len));
        off += align4(len);
        if (mseq !== seq) continue; // a late answer to an earlier request
        if (type === NLMSG_DONE) return data;
        if (type !== NLMSG_ERROR) {
          data.push({ type, payload });
          continue;
        }
        const error = payload.readInt32LE(0);
        if (error === 0) return data;
        let extack: string | undefined;
        if (flags & NLM_F_ACK_TLVS) {
          // After the error code comes the request's header (capped), then the TLVs.
          const tlv = decodeAttrs(payload.subarray(4 + 16));
          extack = tlv.get(NLMSGERR_ATTR_MSG)?.toString('utf8').replace(/\0.*$/s, '');
        }
        throw new NetlinkError(what, object, -error, extack);
      }
    }
  }

  /** Send one request and wait for its ack (or its answer, for a get). */
  request(what: string, object: string, type: number, flags: number, header: Buffer, attrs: readonly Attr[] = []): Array<{ type: number; payload: Buffer }> {
    const { msg, seq } = this.frame(type, flags, header, attrs);
    this.sendFrame(msg, what, object);
    return this.receive(seq, what, object);
  }

  /**
   * The same on a worker thread for the send: deleting a link waits for an RCU grace period
   * inside the kernel (milliseconds), which a service must not spend on its event loop.
   */
  async requestAsync(what: string, object: string, type: number, flags: number, header: Buffer, attrs: readonly Attr[] = []): Promise<void> {
    const { msg, seq } = this.frame(type, flags, header, attrs);
    const c = socketCalls();
    await new Promise<void>((resolve, reject) => {
      c.send.async(this.fd, msg, msg.length, 0, (err: unknown, ret: unknown) => {
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else if (Number(ret) < 0) reject(new NetlinkError(what, object, c.koffi.errno()));
        else resolve();
      });
    });
    this.receive(seq, what, object);
  }

  // ---- links ----

  /** The link called `name` (or with that altname), null when there is none. */
  getLink(name: string): LinkInfo | null {
    // The kernel looks a name up under IFLA_IFNAME only when it fits IFNAMSIZ; longer ones are altnames.
    const key = Buffer.byteLength(name) < 16 ? attr.str(IFLA.IFNAME, name) : attr.str(IFLA.ALT_IFNAME, name);
    let answer: Array<{ type: number; payload: Buffer }>;
    try {
      answer = this.request('get link', name, RTM.GETLINK, 0, ifinfomsg(), [key]);
    } catch (err) {
      if (err instanceof NetlinkError && err.code === 'ENODEV') return null;
      throw err;
    }
    const msg = answer.find((m) => m.type === RTM.NEWLINK);
    return msg ? parseLink(msg.payload) : null;
  }

  createVeth(v: VethSpec): void {
    const peerAttrs: Attr[] = [attr.str(IFLA.IFNAME, v.peer.name)];
    if (v.peer.mac) peerAttrs.push(attr.mac(IFLA.ADDRESS, v.peer.mac));
    if (v.peer.netnsPid !== undefined) peerAttrs.push(attr.u32(IFLA.NET_NS_PID, v.peer.netnsPid));
    if (v.peer.netnsFd !== undefined) peerAttrs.push(attr.u32(IFLA.NET_NS_FD, v.peer.netnsFd));
    const peer = Buffer.concat([ifinfomsg(), encodeAttrs(peerAttrs)]);
    const attrs: Attr[] = [attr.str(IFLA.IFNAME, v.name)];
    if (v.mac) attrs.push(attr.mac(IFLA.ADDRESS, v.mac));
    if (v.master !== undefined) attrs.push(attr.u32(IFLA.MASTER, v.master));
    attrs.push(attr.nest(IFLA.LINKINFO, [attr.str(IFLA_INFO_KIND, 'veth'), attr.nest(IFLA_INFO_DATA, [{ type: VETH_INFO_PEER, value: peer }])]));
    const up = v.up ? IFF_UP : 0;
    this.request('create veth', v.name, RTM.NEWLINK, NLM_F.CREATE | NLM_F.EXCL, ifinfomsg(0, up, up), attrs);
  }

  createBridge(name: string, up: boolean): void {
    const f = up ? IFF_UP : 0;
    this.request('create bridge', name, RTM.NEWLINK, NLM_F.CREATE | NLM_F.EXCL, ifinfomsg(0, f, f), [
      attr.str(IFLA.IFNAME, name),
      attr.nest(IFLA.LINKINFO, [attr.str(IFLA_INFO_KIND, 'bridge')]),
    ]);
  }

  /** macvlan (bridge mode) or ipvlan (L2) on top of `parent`, created inside the namespace of `netnsPid`. */
  createVlanLike(kind: 'macvlan' | 'ipvlan', name: string, parent: number, netnsPid: number, mac?: string): void {
    const data = kind === 'macvlan' ? attr.u32(IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE) : { type: IFLA_IPVLAN_MODE, value: Buffer.from([IPVLAN_MODE_L2, 0]) };
    const attrs: Attr[] = [attr.str(IFLA.IFNAME, name), attr.u32(IFLA.LINK, parent), attr.u32(IFLA.NET_NS_PID, netnsPid)];
    if (mac) attrs.push(attr.mac(IFLA.ADDRESS, mac));
    attrs.push(attr.nest(IFLA.LINKINFO, [attr.str(IFLA_INFO_KIND, kind), attr.nest(IFLA_INFO_DATA, [data])]));
    this.request(`create ${kind}`, name, RTM.NEWLINK, NLM_F.CREATE | NLM_F.EXCL, ifinfomsg(), attrs);
  }

  addAltName(name: string, altName: string): void {
    this.request('add altname', name, RTM.NEWLINKPROP, NLM_F.CREATE | NLM_F.EXCL, ifinfomsg(), [
      attr.str(IFLA.IFNAME, name),
      attr.nest(IFLA.PROP_LIST | NLA_F_NESTED, [attr.str(IFLA.ALT_IFNAME, altName)]),
    ]);
  }

  /** Change an existing link: up/down, master, or move it into the namespace of a process. */
  setLink(name: string, change: { up?: boolean; master?: number; netnsPid?: number }): void {
    const attrs: Attr[] = [attr.str(IFLA.IFNAME, name)];
    if (change.master !== undefined) attrs.push(attr.u32(IFLA.MASTER, change.master));
    if (change.netnsPid !== undefined) attrs.push(attr.u32(IFLA.NET_NS_PID, change.netnsPid));
    const mask = change.up === undefined ? 0 : IFF_UP;
    this.request(change.netnsPid !== undefined ? 'move link' : 'set link', name, RTM.NEWLINK, 0, ifinfomsg(0, change.up ? IFF_UP : 0, mask), attrs);
  }

  /** Delete a link by name; false when there was none. Async: see requestAsync. */
  async deleteLink(name: string): Promise<boolean> {
    try {
      await this.requestAsync('delete link', name, RTM.DELLINK, 0, ifinfomsg(), [attr.str(IFLA.IFNAME, name)]);
      return true;
    } catch (err) {
      if (err instanceof NetlinkError && err.code === 'ENODEV') return false;
      throw err;
    }
  }

  // ---- addresses and routes ----

  /** Add (or with replace, set again) an address; nodad skips IPv6 duplicate detection. */
  addAddress(index: number, ifname: string, address: string, prefix: number, opts: { replace?: boolean; nodad?: boolean } = {}): void {
    const a = addressBytes(address);
    const flags = opts.nodad && a.family === AF.INET6 ? IFA_F_NODAD : 0;
    const attrs: Attr[] = [{ type: IFA_LOCAL, value: a.bytes }, { type: IFA_ADDRESS, value: a.bytes }];
    this.request('add address', `${address}/${prefix} on ${ifname}`, RTM.NEWADDR, NLM_F.CREATE | (opts.replace ? NLM_F.REPLACE : NLM_F.EXCL), ifaddrmsg(a.family, prefix, flags, index), attrs);
  }

  addDefaultRoute(index: number, ifname: string, gateway: string): void {
    const g = addressBytes(gateway);
    this.request('add default route', `via ${gateway} on ${ifname}`, RTM.NEWROUTE, NLM_F.CREATE | NLM_F.EXCL, rtmsg(g.family, 0), [
      { type: RTA_GATEWAY, value: g.bytes },
      attr.u32(RTA_OIF, index),
    ]);
  }
}

function parseLink(payload: Buffer): LinkInfo {
  const a = decodeAttrs(payload.subarray(16));
  const info = a.get(IFLA.LINKINFO);
  const kind = info ? decodeAttrs(info).get(IFLA_INFO_KIND) : undefined;
  const master = a.get(IFLA.MASTER);
  return {
    index: payload.readInt32LE(4),
    name: a.get(IFLA.IFNAME)?.toString('utf8').replace(/\0.*$/s, '') ?? '',
    flags: payload.readUInt32LE(8),
    kind: kind ? kind.toString('utf8').replace(/\0.*$/s, '') : null,
    master: master ? master.readUInt32LE(0) : null,
  };
}

/**
 * Run `fn` with this thread inside the network namespace at `path`, then return. setns for a
 * network namespace is allowed in a multithreaded process and affects only the calling thread;
 * sockets made meanwhile stay in that namespace.
 */
export function inNetns<T>(path: string, fn: () => T): T {
  const own = openSync('/proc/thread-self/ns/net', fsConstants.O_RDONLY);
  try {
    let target: number;
    try {
      target = openSync(path, fsConstants.O_RDONLY);
    } catch (err) {
      throw new SysError('open network namespace', errnoNumber((err as NodeJS.ErrnoException).code ?? 'EIO'), path);
    }
    try {
      setns(target, CLONE.NEWNET);
    } finally {
      closeSync(target);
    }
    try {
      return fn();
    } finally {
      // Staying in the container's namespace would send everything after this to the wrong place.
      try {
        setns(own, CLONE.NEWNET);
      } catch (err) {
        process.stderr.write(`mctl: cannot return to the host network namespace: ${String(err)}\n`);
        process.abort();
      }
    }
  } finally {
    closeSync(own);
  }
}
