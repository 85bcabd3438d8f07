// nftables through libnftables in-process (the library the `nft` program is a thin shell
// around), over koffi. Same input language and error texts as `nft -f`, without a fork + exec
// of nft (≈7–10 ms here, most of it program start-up): a transaction costs ≈1 ms. Commands can
// run on a worker thread (nftRunAsync), so the service keeps answering the bus meanwhile.
// (A launcher's rules are applied by its native helper, src/nspawn/native/net.c.)
import { loadKoffi } from './koffi.js';

type KoffiFn = ((...args: unknown[]) => unknown) & { async(...args: unknown[]): void };
interface KoffiLib {
  func(signature: string): KoffiFn;
}
interface Koffi {
  load(path: string): KoffiLib;
}

const LIBRARY = 'libnftables.so.1';

/** nft's output flags (libnftables.h). */
export const NFT_OUTPUT = { HANDLE: 1 << 3, JSON: 1 << 4 } as const;

interface Calls {
  ctxNew: KoffiFn;
  ctxFree: KoffiFn;
  bufferOutput: KoffiFn;
  bufferError: KoffiFn;
  getOutput: KoffiFn;
  getError: KoffiFn;
  setOutputFlags: KoffiFn;
  run: KoffiFn;
}

let calls: Calls | undefined;

function koffi(): Koffi {
  return loadKoffi<Koffi>();
}

function lib(): Calls {
  if (calls) return calls;
  let l: KoffiLib;
  try {
    l = koffi().load(LIBRARY);
  } catch (err) {
    throw new NftError(`cannot load ${LIBRARY} (install nftables): ${err instanceof Error ? err.message : String(err)}`);
  }
  calls = {
    ctxNew: l.func('void *nft_ctx_new(uint32_t flags)'),
    ctxFree: l.func('void nft_ctx_free(void *ctx)'),
    bufferOutput: l.func('int nft_ctx_buffer_output(void *ctx)'),
    bufferError: l.func('int nft_ctx_buffer_error(void *ctx)'),
    getOutput: l.func('const char *nft_ctx_get_output_buffer(void *ctx)'),
    getError: l.func('const char *nft_ctx_get_error_buffer(void *ctx)'),
    setOutputFlags: l.func('void nft_ctx_output_set_flags(void *ctx, uint32_t flags)'),
    run: l.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)'),
  };
  return calls;
}

/** A failed nft command: the library's first error line, like nft's own message. */
export class NftError extends Error {
  readonly detail: string;
  constructor(message: string, detail = '') {
    super(message);
    this.name = 'NftError';
    this.detail = detail;
  }
}

/** "Could not process rule: Operation not supported (in: add chain …)": nft's error and the command it names, on one line. */
function oneLine(text: string): string {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const error = (lines[0] ?? '').trim().replace(/^Error: /, '');
  const command = lines[1]?.trim();
  return command && !/^\^/.test(command) ? `${error} (in: ${command})` : error;
}

/**
 * Run nft commands (the `nft -f` language) as one transaction and return what they printed.
 * A fresh context per call: a context keeps a cache of the ruleset that would go stale.
 */
function withContext<T>(outputFlags: number, fn: (c: Calls, ctx: unknown) => T): T {
  const c = lib();
  const ctx = c.ctxNew(0);
  if (!ctx) throw new NftError('nft_ctx_new failed');
  c.bufferOutput(ctx);
  c.bufferError(ctx);
  if (outputFlags) c.setOutputFlags(ctx, outputFlags);
  let freeNow = true;
  try {
    const r = fn(c, ctx);
    if (r instanceof Promise) {
      freeNow = false;
      return r.finally(() => c.ctxFree(ctx)) as T;
    }
    return r;
  } finally {
    if (freeNow) c.ctxFree(ctx);
  }
}

function result(c: Calls, ctx: unknown, rc: number): string {
  if (rc !== 0) {
    const err = String(c.getError(ctx) ?? '');
    throw new NftError(`nft: ${oneLine(err) || `exit status ${rc}`}`, err);
  }
  return String(c.getOutput(ctx) ?? '');
}

export function nftRun(commands: string, outputFlags = 0): string {
  return withContext(outputFlags, (c, ctx) => result(c, ctx, Number(c.run(ctx, commands))));
}

/** nftRun on a worker thread (the parse and the kernel round trips do not hold the event loop). */
export async function nftRunAsync(commands: string, outputFlags = 0): Promise<string> {
  return withContext(outputFlags, (c, ctx) =>
    new Promise<string>((resolve, reject) => {
      c.run.async(ctx, commands, (err: unknown, rc: unknown) => {
        if (err) return reject(err instanceof Error ? err : new Error(String(err)));
        try {
          resolve(result(c, ctx, Number(rc)));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    }),
  );
}
