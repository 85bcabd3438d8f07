// What the D-Bus surface modules share: the registry and the caller lookups.
import type { CallerCredentials } from './access.js';
import type { CallContext } from './bus-objects.js';
import type { Registry } from './registry.js';

export interface MachinedContext {
  registry: Registry;
  creds: CallerCredentials;
}

/** Leader/PID 0 means "the caller": ask the bus for the sender's PID. */
export async function pidOrCaller(ctx: MachinedContext, call: CallContext, pid: number): Promise<number> {
  if (pid !== 0) return pid;
  return ctx.creds.pid(call.sender);
}
