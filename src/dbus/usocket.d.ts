// The part of usocket (dbus-next's unix socket transport with fd passing) that bus.ts patches.
declare module 'usocket' {
  interface USocketInstance {
    /** The native wrap (holds the uv_poll_t); null once closed. */
    _wrap: object | null;
    destroy(): void;
    /** Events from the native wrap ("connect", "error", "data", …); "error" closes the wrap itself. */
    _wrapEvent(event: string, a0?: unknown, a1?: unknown): void;
  }
  const usocket: { USocket: { prototype: USocketInstance } };
  export default usocket;
}
