// Loading koffi cheaply. `require('koffi')` costs ≈6 ms here, ≈4.5 of them in its JavaScript
// wrapper (platform detection that reads Node's own ELF headers, deprecation shims) before it
// loads the native module that does the work. The native module alone loads in ≈1.8 ms and
// has the same API minus the deprecated aliases, so it is loaded directly when it is where
// koffi's own loader would find it for this platform (glibc builds); anything else goes
// through koffi's loader. Every koffi user in src/sys calls loadKoffi(), so it loads once.
import { createRequire } from 'node:module';

const requireCjs = createRequire(import.meta.url);

let loaded: unknown;

/** The koffi module (typed by each caller for the few functions it uses). */
export function loadKoffi<T>(): T {
  if (loaded === undefined) {
    loaded = loadNative() ?? requireCjs('koffi');
  }
  return loaded as T;
}

function loadNative(): unknown {
  if (process.platform !== 'linux') return undefined;
  const triplet = `${process.platform}_${process.arch}`;
  try {
    const native = requireCjs(`@koromix/koffi-${process.platform}-${process.arch}/${triplet}/koffi.node`) as { load?: unknown };
    if (typeof native.load === 'function') return native;
  } catch {
    /* not there (musl, another layout): koffi's own loader knows */
  }
  return undefined;
}
