// A small object dispatcher over dbus-next's low-level message API. dbus-next's Interface
// classes cannot see the caller (needed for access checks, leader 0 and ".../machine/self"),
// cannot serve objects that come and go by the thousand without exporting each one, and
// introspect without argument names; so machined routes method calls itself: it resolves the
// path to an object, checks the signature, runs the handler and replies (also with fds),
// and serves Introspectable, Properties and Peer the way sd-bus does.
import { closeSync, readFileSync } from 'node:fs';
import dbus, { type Message, type MessageBus } from 'dbus-next';
import { BusError, ERR, toBusError } from './errors.js';
import { marshalMethodReturn, methodReturnHeader } from './fast-marshal.js';

export interface Arg {
  name: string;
  type: string;
}

export interface MethodSpec {
  name: string;
  in: Arg[];
  out: Arg[];
  /** Shown as org.freedesktop.systemd1.Privileged="true", as sd-bus does for root-only calls. */
  privileged?: boolean;
}

export interface PropertySpec {
  name: string;
  type: string;
  emits?: 'const' | 'false';
}

export interface SignalSpec {
  name: string;
  args: Arg[];
}

export interface InterfaceSpec {
  name: string;
  methods: MethodSpec[];
  properties: PropertySpec[];
  signals: SignalSpec[];
}

/** What a handler learns about the call it serves. */
export interface CallContext {
  readonly msg: Message;
  readonly sender: string;
}

/** Returned by a handler: the reply body, plus fds we own and must close once sent. */
export interface HandlerResult {
  body: unknown[];
  closeFds?: number[];
  /** `body` already marshalled for the method's out signature (a reply served many times). */
  marshalledBody?: Buffer | undefined;
}

/** What dispatch hands to reply(). */
interface Reply {
  signature: string;
  body: unknown[];
  closeFds?: number[];
  marshalledBody?: Buffer;
}

export type MethodHandler<T> = (target: T, args: unknown[], ctx: CallContext) => Promise<HandlerResult | unknown[]> | HandlerResult | unknown[];
export type PropertyGetter<T> = (target: T) => unknown;

/** One interface implemented on some kind of target (the manager, a machine, an image). */
export interface InterfaceImpl<T> {
  spec: InterfaceSpec;
  methods: Record<string, MethodHandler<T>>;
  properties: Record<string, PropertyGetter<T>>;
}

export interface ResolvedObject {
  interfaces: Array<{ impl: InterfaceImpl<unknown>; target: unknown }>;
}

export interface ObjectTree {
  /** The object at `path` for this caller, or undefined. May look up the caller (…/self). */
  resolve(path: string, ctx: CallContext): Promise<ResolvedObject | undefined> | ResolvedObject | undefined;
  /** Child node names under `path`, for introspection. */
  children(path: string): string[];
}

const PEER: InterfaceSpec = {
  name: 'org.freedesktop.DBus.Peer',
  methods: [
    { name: 'Ping', in: [], out: [] },
    { name: 'GetMachineId', in: [], out: [{ name: 'machine_uuid', type: 's' }] },
  ],
  properties: [],
  signals: [],
};

const INTROSPECTABLE: InterfaceSpec = {
  name: 'org.freedesktop.DBus.Introspectable',
  methods: [{ name: 'Introspect', in: [], out: [{ name: 'xml_data', type: 's' }] }],
  properties: [],
  signals: [],
};

const PROPERTIES: InterfaceSpec = {
  name: 'org.freedesktop.DBus.Properties',
  methods: [
    {
      name: 'Get',
      in: [
        { name: 'interface_name', type: 's' },
        { name: 'property_name', type: 's' },
      ],
      out: [{ name: 'value', type: 'v' }],
    },
    { name: 'GetAll', in: [{ name: 'interface_name', type: 's' }], out: [{ name: 'props', type: 'a{sv}' }] },
    {
      name: 'Set',
      in: [
        { name: 'interface_name', type: 's' },
        { name: 'property_name', type: 's' },
        { name: 'value', type: 'v' },
      ],
      out: [],
    },
  ],
  properties: [],
  signals: [
    {
      name: 'PropertiesChanged',
      args: [
        { name: 'interface_name', type: 's' },
        { name: 'changed_properties', type: 'a{sv}' },
        { name: 'invalidated_properties', type: 'as' },
      ],
    },
  ],
};

const STANDARD = [PEER, INTROSPECTABLE, PROPERTIES];

export function signatureOf(args: readonly Arg[]): string {
  return args.map((a) => a.type).join('');
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** The <interface> element, formatted like sd-bus's introspection output. */
export function interfaceXml(spec: InterfaceSpec): string {
  const out: string[] = [` <interface name="${xmlEscape(spec.name)}">`];
  for (const m of spec.methods) {
    const args = [...m.in.map((a) => ({ ...a, dir: 'in' })), ...m.out.map((a) => ({ ...a, dir: 'out' }))];
    if (args.length === 0 && !m.privileged) {
      out.push(`  <method name="${m.name}"/>`);
      continue;
    }
    out.push(`  <method name="${m.name}">`);
    for (const a of args) out.push(`   <arg type="${xmlEscape(a.type)}" name="${a.name}" direction="${a.dir}"/>`);
    if (m.privileged) out.push('   <annotation name="org.freedesktop.systemd1.Privileged" value="true"/>');
    out.push('  </method>');
  }
  for (const s of spec.signals) {
    out.push(`  <signal name="${s.name}">`);
    for (const a of s.args) out.push(`   <arg type="${xmlEscape(a.type)}" name="${a.name}"/>`);
    out.push('  </signal>');
  }
  for (const p of spec.properties) {
    out.push(`  <property name="${p.name}" type="${xmlEscape(p.type)}" access="read">`);
    if (p.emits) out.push(`   <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="${p.emits}"/>`);
    out.push('  </property>');
  }
  out.push(' </interface>');
  return out.join('\n');
}

const DOCTYPE =
  '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">';

export function nodeXml(interfaces: readonly InterfaceSpec[], children: readonly string[]): string {
  const parts = [DOCTYPE, '<node>'];
  if (interfaces.length > 0) for (const spec of [...STANDARD, ...interfaces]) parts.push(interfaceXml(spec));
  for (const c of children) parts.push(` <node name="${xmlEscape(c)}"/>`);
  parts.push('</node>', '');
  return parts.join('\n');
}

let hostMachineId: string | undefined;
function machineId(): string {
  if (hostMachineId === undefined) {
    try {
      hostMachineId = readFileSync('/etc/machine-id', 'utf8').trim();
    } catch {
      hostMachineId = '';
    }
  }
  return hostMachineId;
}

function isHandlerResult(v: unknown): v is HandlerResult {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Array.isArray((v as HandlerResult).body);
}

type StreamLike = { writableLength?: number; once?(ev: string, fn: () => void): void; write?(chunk: Buffer): boolean };

export class ObjectDispatcher {
  private readonly handler = (msg: Message): boolean => this.onMessage(msg);

  constructor(
    private readonly bus: MessageBus,
    private readonly tree: ObjectTree,
    private readonly log: (line: string) => void,
  ) {}

  start(): void {
    this.bus.addMethodHandler(this.handler);
  }

  stop(): void {
    this.bus.removeMethodHandler(this.handler);
  }

  emitSignal(path: string, iface: string, member: string, signature: string, body: unknown[]): void {
    this.bus.send(dbus.Message.newSignal(path, iface, member, signature, body));
  }

  private onMessage(msg: Message): boolean {
    if (msg.type !== dbus.MessageType.METHOD_CALL) return false;
    const ctx: CallContext = { msg, sender: msg.sender ?? '' };
    void this.dispatch(msg, ctx).then(
      (result) => this.reply(msg, result),
      (err: unknown) => {
        const e = toBusError(err);
        if (e.errorName === ERR.Failed && !(err instanceof BusError)) this.log(`${msg.interface}.${msg.member} failed: ${e.message}`);
        this.replyError(msg, e);
      },
    );
    return true;
  }

  private reply(msg: Message, result: Reply | undefined): void {
    if (!result || msg.flags & dbus.MessageFlag.NO_REPLY_EXPECTED) {
      for (const fd of result?.closeFds ?? []) closeQuietly(fd);
      return;
    }
    try {
      const stream = this.stream();
      const write = !result.closeFds?.length && stream?.write ? stream.write.bind(stream) : undefined;
      if (write && result.marshalledBody) {
        // a cached body: a fresh header, then the same body bytes (written in the same tick,
        // so nothing else can come between them on the socket)
        write(methodReturnHeader(this.bus.newSerial(), msg.serial ?? 0, msg.sender, result.signature, result.marshalledBody.length));
        write(result.marshalledBody);
        return;
      }
      const raw = write ? marshalMethodReturn(this.bus.newSerial(), msg.serial ?? 0, msg.sender, result.signature, result.body) : undefined;
      if (raw && write) write(raw);
      else this.bus.send(dbus.Message.newMethodReturn(msg, result.signature, result.body));
    } catch (err) {
      this.replyError(msg, new BusError(ERR.Failed, `Could not send reply: ${toBusError(err).message}`));
    }
    if (result.closeFds?.length) this.closeAfterWrite(result.closeFds);
  }

  private replyError(msg: Message, err: BusError): void {
    if (msg.flags & dbus.MessageFlag.NO_REPLY_EXPECTED) return;
    try {
      this.bus.send(dbus.Message.newError(msg as unknown as string, err.errorName, err.message));
    } catch {
      // the connection is gone; nothing to tell
    }
  }

  /** The connection's socket stream (dbus-next keeps it private). */
  private stream(): StreamLike | undefined {
    return (this.bus as unknown as { _connection?: { stream?: StreamLike } })._connection?.stream;
  }

  /** sendmsg() has copied fds into the kernel once the socket took the message. */
  private closeAfterWrite(fds: number[]): void {
    const stream = this.stream();
    const close = (): void => fds.forEach(closeQuietly);
    if (stream?.writableLength && stream.once) stream.once('drain', close);
    else close();
  }

  private async dispatch(msg: Message, ctx: CallContext): Promise<Reply | undefined> {
    const path = msg.path ?? '';
    const member = msg.member ?? '';
    const iface = msg.interface ?? '';
    const body = msg.body ?? [];
    const sig = msg.signature ?? '';

    if (iface === PEER.name) {
      if (member === 'Ping') return { signature: '', body: [] };
      if (member === 'GetMachineId') return { signature: 's', body: [machineId()] };
      throw new BusError(ERR.UnknownMethod, `Unknown method ${member} or interface ${iface}.`);
    }
    const resolved = await this.tree.resolve(path, ctx);
    if (iface === INTROSPECTABLE.name && member === 'Introspect') {
      const specs = resolved ? resolved.interfaces.map((i) => i.impl.spec) : [];
      const children = this.tree.children(path);
      if (!resolved && children.length === 0) throw new BusError(ERR.UnknownObject, `Unknown object '${path}'.`);
      return { signature: 's', body: [nodeXml(specs, children)] };
    }
    if (!resolved) throw new BusError(ERR.UnknownObject, `Unknown object '${path}'.`);

    if (iface === PROPERTIES.name) return this.properties(resolved, member, sig, body);

    for (const { impl, target } of resolved.interfaces) {
      if (iface && impl.spec.name !== iface) continue;
      const spec = impl.spec.methods.find((m) => m.name === member);
      if (!spec) continue;
      const expected = signatureOf(spec.in);
      if (sig !== expected) throw new BusError(ERR.InvalidArgs, `Invalid arguments '${sig}' to call ${impl.spec.name}.${member}(), expecting '${expected}'.`);
      const handler = impl.methods[member];
      if (!handler) throw new BusError(ERR.NotSupported, `${member} is not supported.`);
      const result = await handler(target, body, ctx);
      const out = isHandlerResult(result) ? result : { body: result };
      return { signature: signatureOf(spec.out), body: out.body, ...(out.closeFds ? { closeFds: out.closeFds } : {}), ...(out.marshalledBody ? { marshalledBody: out.marshalledBody } : {}) };
    }
    if (iface && !resolved.interfaces.some((i) => i.impl.spec.name === iface)) {
      throw new BusError(ERR.UnknownInterface, `Unknown interface '${iface}'.`);
    }
    throw new BusError(ERR.UnknownMethod, `Unknown method '${member}' or interface '${iface}'.`);
  }

  private properties(resolved: ResolvedObject, member: string, sig: string, body: unknown[]): { signature: string; body: unknown[] } {
    const find = (name: string): { impl: InterfaceImpl<unknown>; target: unknown } => {
      const hit = resolved.interfaces.find((i) => i.impl.spec.name === name);
      if (!hit) throw new BusError(ERR.UnknownInterface, `Unknown interface '${name}'.`);
      return hit;
    };
    if (member === 'Get' && sig === 'ss') {
      const { impl, target } = find(body[0] as string);
      const p = impl.spec.properties.find((x) => x.name === body[1]);
      const getter = p && impl.properties[p.name];
      if (!p || !getter) throw new BusError(ERR.UnknownProperty, `Unknown property '${String(body[1])}'.`);
      return { signature: 'v', body: [new dbus.Variant(p.type, getter(target))] };
    }
    if (member === 'GetAll' && sig === 's') {
      const name = body[0] as string;
      if (name === '') {
        const all: Record<string, unknown> = {};
        for (const { impl, target } of resolved.interfaces) Object.assign(all, collect(impl, target));
        return { signature: 'a{sv}', body: [all] };
      }
      const { impl, target } = find(name);
      return { signature: 'a{sv}', body: [collect(impl, target)] };
    }
    if (member === 'Set' && sig === 'ssv') {
      const { impl } = find(body[0] as string);
      if (!impl.spec.properties.some((x) => x.name === body[1])) throw new BusError(ERR.UnknownProperty, `Unknown property '${String(body[1])}'.`);
      throw new BusError(ERR.PropertyReadOnly, `Property '${String(body[1])}' is not writable.`);
    }
    throw new BusError(ERR.InvalidArgs, `Invalid arguments '${sig}' to call org.freedesktop.DBus.Properties.${member}().`);
  }
}

function collect(impl: InterfaceImpl<unknown>, target: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const p of impl.spec.properties) {
    const getter = impl.properties[p.name];
    if (getter) out[p.name] = new dbus.Variant(p.type, getter(target));
  }
  return out;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
