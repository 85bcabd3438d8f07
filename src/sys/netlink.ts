// rtnetlink in-process, for tearing a container's network down: link deletion on a
// NETLINK_ROUTE socket over koffi, two system calls instead of a fork + exec of iproute2 (the
// service and the collector do this; the links are made by the launcher's native helper,
// src/nspawn/native/net.c). Also the attribute codec the requests are built with.
//
// Failures are NetlinkError (a SysError): the operation, the object, the errno name and the
// kernel's extended-ack text when it sent one, e.g. `delete link(ve-x): EBUSY (…)`.
import { closeSync } from 'node:fs';
import { getSystemErrorMap } from 'node:util';
import { loadKoffi } from './koffi.js';
import { SysError } from './errno.js';

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

export class NetlinkError extends SysError {
  constructor(what: string, object: string, errno: number, extack?: string) {
    super(what, errno, object, extack || getSystemErrorMap().get(-errno)?.[1]);
    this.name = 'NetlinkError';
  }
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

  /** A socket in this thread's network namespace. */
  static open(): RtNetlink {
    const c = socketCalls();
    const fd = Number(c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (fd < 0) throw new SysError('socket', c.koffi.errno(), 'AF_NETLINK');
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
}
