// Connecting to the system bus and calling methods with a timeout. dbus-next has no call
// timeout of its own (a lost reply would hang forever) and ignores busAddress for systemBus(),
// so every part goes through here.
import type { MessageBus, Message as MessageType } from 'dbus-next';
import dbus from 'dbus-next';
import usocket from 'usocket';

/**
 * usocket closes its socket with uv_close() on a uv_poll_t inside its native wrap and drops the
 * wrap at once; a garbage collection before libuv's close phase frees the handle while it is
 * still queued, and libuv aborts ("uv__finish_close: Assertion ... UV_HANDLE_CLOSING",
 * SIGABRT; seen in CI in a test process at exit). Keep each closed wrap referenced until a
 * timer (which runs after the close phase) lets it go.
 */
const closing = new Set<object>();
function retainWhileClosing(wrap: object | null): void {
  if (!wrap) return;
  closing.add(wrap);
  setTimeout(() => closing.delete(wrap), 50).unref();
}
const { destroy, _wrapEvent: wrapEvent } = usocket.USocket.prototype;
usocket.USocket.prototype.destroy = function destroyRetained(this: { _wrap: object | null }) {
  const wrap = this._wrap;
  destroy.call(this);
  retainWhileClosing(wrap);
};
// its error path closes the wrap without destroy()
usocket.USocket.prototype._wrapEvent = function wrapEventRetained(this: { _wrap: object | null }, event: string, a0?: unknown, a1?: unknown) {
  const wrap = this._wrap;
  wrapEvent.call(this, event, a0, a1);
  if (this._wrap === null) retainWhileClosing(wrap);
};

export const DEFAULT_SYSTEM_BUS = 'unix:path=/run/dbus/system_bus_socket';
export const DEFAULT_CALL_TIMEOUT_MS = 25_000;

export function systemBusAddress(): string {
  return process.env['DBUS_SYSTEM_BUS_ADDRESS'] || DEFAULT_SYSTEM_BUS;
}

/** Connect to the bus at `address` (default: the system bus), with fd passing enabled. */
export function connectBus(address: string = systemBusAddress()): MessageBus {
  const options = { busAddress: address, negotiateUnixFd: true } as Parameters<typeof dbus.sessionBus>[0];
  return dbus.sessionBus(options);
}

export interface CallSpec {
  destination: string;
  path: string;
  interface: string;
  member: string;
  signature?: string;
  body?: unknown[];
  timeoutMs?: number;
}

/** A low-level method call (no introspection round trip) that rejects after a timeout. */
export async function call(bus: MessageBus, spec: CallSpec): Promise<MessageType> {
  const msg = new dbus.Message({
    destination: spec.destination,
    path: spec.path,
    interface: spec.interface,
    member: spec.member,
    signature: spec.signature ?? '',
    body: spec.body ?? [],
  });
  const timeoutMs = spec.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${spec.interface}.${spec.member}: no reply within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const reply = await Promise.race([bus.call(msg), timeout]);
    if (!reply) throw new Error(`${spec.interface}.${spec.member}: empty reply`);
    return reply;
  } finally {
    if (timer) clearTimeout(timer);
  }
}
