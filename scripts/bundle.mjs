// Start-up bundles: each program (mctl, mctl-nspawn, mctl-machined) as ONE CommonJS file in
// dist/bundle/, plus a V8 code cache recorded by a training run of it (bin/bundle-loader.cjs
// loads both). Why (measured, docs/nspawn-internals.md "Start-up"): with ES modules Node 20
// resolves, reads (through fs/promises, which drags ~40 internal modules in) and compiles every
// file on each start — ~160 files for `mctl` — and Node 20 has no module compile cache.
// A CommonJS bundle compiled through vm.Script can take `cachedData`, so the start skips both
// the module loader and most of the compiling. Lazily imported parts stay lazy: esbuild wraps
// them in init functions that run on first use, and V8 compiles a function only when it runs.
//
// dist/ as tsc writes it stays the reference build: tests import src/ or dist/ directly, and
// scripts the programs spawn (net/collect-main.js, machined/ns-helper.js) run from dist/.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'dist/bundle');

/** Program name → its main module. The bundle names are what bin/ asks the loader for. */
export const PROGRAMS = {
  mctl: 'src/cli/main.ts',
  'mctl-nspawn': 'src/nspawn/main.ts',
  'mctl-machined': 'src/machined/main.ts',
};

const toPosix = (p) => p.split(sep).join('/');

/**
 * Source rewrites that keep every module's behaviour as in the unbundled build:
 * - `import.meta.url` becomes the URL the module has unbundled (src/x/y.ts → dist/x/y.js, a
 *   package file → itself), computed at run time relative to the bundle, so files found next
 *   to a module (package.json, dist/native/*, collect-main.js, yargs' locales) still are;
 *   (yargs' unused `extends` support calls import.meta.resolve: resolved the same way);
 * - `await import('./relative.js')` becomes `require(...)`: CommonJS output cannot have a
 *   top-level await (src/cli/commands/index.ts has one), and inside a bundle both only run the
 *   module's lazy init function. Package and builtin specifiers are left to esbuild.
 */
const keepModuleSemantics = {
  name: 'keep-module-semantics',
  setup(b) {
    b.onLoad({ filter: /\.(ts|js|mjs)$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!text.includes('import.meta') && !(args.path.endsWith('.ts') && text.includes('await import('))) return undefined;
      let rel = toPosix(relative(root, args.path));
      if (rel.startsWith('src/')) rel = `dist/${rel.slice(4).replace(/\.ts$/, '.js')}`;
      const at = JSON.stringify(rel);
      let contents = text
        .replaceAll('import.meta.url', `__mctlModuleUrl(${at})`)
        .replaceAll('import.meta.resolve(', `__mctlModuleResolve(${at})(`);
      if (args.path.endsWith('.ts')) contents = contents.replace(/await import\((['"]\.\.?\/[^'"]+['"])\)/g, 'require($1)');
      const loader = args.path.endsWith('.ts') ? 'ts' : 'js';
      return { contents, loader };
    });
  },
};

/**
 * string-width (yargs and cliui measure help text with it) creates an Intl.Segmenter and an
 * RGI_Emoji regular expression when loaded, ~15 ms, and yargs renders the command's help on
 * every command it runs (to cache it). Importers get a stand-in that answers printable ASCII
 * itself, as string-width 8's own first fast path does (width = length), and loads the
 * package on the first other string.
 */
const lazyStringWidth = {
  name: 'lazy-string-width',
  setup(b) {
    b.onResolve({ filter: /^string-width$/ }, async (args) => {
      if (args.pluginData?.real) return undefined;
      const real = await b.resolve(args.path, { resolveDir: args.resolveDir, importer: args.importer, kind: args.kind, pluginData: { real: true } });
      if (real.errors.length > 0) return { errors: real.errors };
      return { path: toPosix(relative(root, real.path)), namespace: 'lazy-string-width', pluginData: { real: real.path } };
    });
    // require() inside the function: esbuild bundles the real module as an init function.
    b.onLoad({ filter: /.*/, namespace: 'lazy-string-width' }, ({ pluginData }) => ({
      contents: [
        'let real;',
        'export default function stringWidth(input, options) {',
        "  if (typeof input === 'string' && /^[\\u0020-\\u007E]*$/.test(input)) return input.length;",
        `  real ??= require(${JSON.stringify(pluginData.real)}).default;`,
        '  return real(input, options);',
        '}',
        '',
      ].join('\n'),
      resolveDir: dirname(pluginData.real),
      loader: 'js',
    }));
  },
};

/**
 * dbus-next's handshake loads node:crypto (~2 ms: a dozen internal modules) when it is loaded,
 * for DBUS_COOKIE_SHA1 authentication only; mctl authenticates with EXTERNAL. It only calls
 * crypto.createHash and crypto.randomBytes, so a stand-in that loads the module on the first
 * property read behaves the same.
 */
const lazyCryptoForDbus = {
  name: 'lazy-crypto-for-dbus-next',
  setup(b) {
    b.onResolve({ filter: /^crypto$/ }, (args) => (/[\\/]dbus-next[\\/]lib[\\/]handshake\.js$/.test(args.importer) ? { path: 'crypto', namespace: 'lazy-crypto' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'lazy-crypto' }, () => ({
      contents: "let real;\nmodule.exports = new Proxy({}, { get: (_, key) => (real ??= require('node:crypto'))[key] });\n",
      loader: 'js',
    }));
  },
};

/**
 * usocket (dbus-next's transport with fd passing) is bundled like any package, except for its
 * native addon. It finds the addon through `bindings`, which reads the caller's file name from
 * a stack trace (inside a bundle: the bundle) and probes a dozen paths; the stand-in loads
 * build/Release/NAME.node of the usocket package directly, and asks `bindings` with the package
 * root spelled out when that file is not there. Before, usocket, bindings and debug were loaded
 * from node_modules by Node's loader and compiled on every bus-connected start (~3-6 ms).
 */
const usocketAddon = {
  name: 'usocket-addon',
  setup(b) {
    b.onResolve({ filter: /^bindings$/ }, (args) => {
      if (!/[\\/]usocket[\\/]index\.js$/.test(args.importer)) return undefined;
      return { path: `${toPosix(relative(root, dirname(args.importer)))}/bindings`, namespace: 'usocket-bindings', pluginData: { usocketDir: dirname(args.importer) } };
    });
    b.onLoad({ filter: /.*/, namespace: 'usocket-bindings' }, async (args) => {
      const { usocketDir } = args.pluginData;
      const packageDir = toPosix(relative(root, usocketDir));
      const real = await b.resolve('bindings', { resolveDir: usocketDir, kind: 'require-call' });
      if (real.errors.length > 0) return { errors: real.errors };
      const bindingsFile = toPosix(relative(root, real.path));
      return {
        contents: [
          "const { existsSync } = require('node:fs');",
          'module.exports = function bindings(name) {',
          `  const built = __mctlModulePath(${JSON.stringify(`${packageDir}/build/Release/`)} + name + '.node');`,
          '  if (existsSync(built)) return require(built);',
          `  return require(__mctlModulePath(${JSON.stringify(bindingsFile)}))({ bindings: name, module_root: __mctlModulePath(${JSON.stringify(packageDir)}) });`,
          '};',
          '',
        ].join('\n'),
        loader: 'js',
      };
    });
  },
};

// A bundle file is the CommonJS module wrapper function expression itself, which the loader
// compiles as it is (no wrapped copy of ~700 KB per start). Strict mode for the whole file, as
// esbuild's own "use strict" (which comes after this banner) means.
// The bundle lives in dist/bundle/, two levels below the package root. Found through
// module.filename, not __dirname: esbuild keeps a bundled module's own top-level `__dirname`
// (yargs' ESM shim declares one) under that name, and the var shadows the wrapper's.
export const WRAPPER_HEAD = '(function (exports, require, module, __filename, __dirname) {';
const BANNER = [
  WRAPPER_HEAD,
  '"use strict";',
  'var __mctlPackageRoot = require("node:path").join(module.filename, "..", "..", "..");',
  'var __mctlModulePath = (rel) => require("node:path").join(__mctlPackageRoot, rel);',
  'var __mctlModuleUrl = (rel) => require("node:url").pathToFileURL(__mctlModulePath(rel)).href;',
  'var __mctlModuleResolve = (rel) => (spec) => require("node:url").pathToFileURL(require("node:module").createRequire(__mctlModulePath(rel)).resolve(spec)).href;',
].join('\n');

/**
 * Bundle all programs; returns the written files. Each file is replaced by rename, so a
 * program starting meanwhile (parallel test runs share the checkout) reads an old or a new
 * bundle, never half of one; a cache names the file it belongs to (bin/bundle-loader.cjs).
 */
export async function bundlePrograms() {
  mkdirSync(outDir, { recursive: true });
  const result = await build({
    entryPoints: Object.fromEntries(Object.entries(PROGRAMS).map(([name, main]) => [name, join(root, main)])),
    absWorkingDir: root,
    outdir: outDir,
    outExtension: { '.js': '.cjs' },
    write: false,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // import() of builtins becomes require(): vm.Script code has no ES module loader to call,
    // and loading that loader would cost what the bundle saves.
    supported: { 'dynamic-import': false },
    // koffi loads its native addon itself (from node_modules as usual; usocket's: see above);
    // x11 is an optional dbus-next transport that is not installed.
    external: ['koffi', 'x11'],
    plugins: [keepModuleSemantics, lazyStringWidth, lazyCryptoForDbus, usocketAddon],
    banner: { js: BANNER },
    footer: { js: '})' },
    // A leftover import.meta would silently become {} in CommonJS output: fail instead.
    logOverride: { 'empty-import-meta': 'error' },
    legalComments: 'none',
    charset: 'ascii',
    logLevel: 'warning',
  });
  const files = [];
  for (const out of result.outputFiles) {
    const tmp = `${out.path}.tmp${process.pid}`;
    writeFileSync(tmp, asciiOnly(out.text));
    renameSync(tmp, out.path);
    files.push(out.path);
  }
  return files;
}

/**
 * The loader reads a bundle as latin1 (a plain copy into a one-byte string: ~1 ms less per
 * start than UTF-8 decoding 650 KB), which is exact only for ASCII. esbuild escapes every
 * non-ASCII character in code (charset: ascii); what is left is in comments it keeps.
 */
function asciiOnly(text) {
  return text.replace(/[^\x00-\x7f]/gu, (c) => `\\u{${c.codePointAt(0).toString(16)}}`);
}

/**
 * Record each bundle's code cache by running the program once (scripts/code-cache-train.cjs):
 * V8 then caches the functions that run on that path, not only the top level.
 */
export function trainCodeCaches() {
  const scratch = mkdtempSync(join(tmpdir(), 'mctl-build-'));
  try {
    // The run's own status does not matter (the CLI's fails without a bus); the cache must exist.
    const train = (name, args, env = {}, ownNetns = false) => {
      rmSync(join(outDir, `${name}.cjs.cache`), { force: true });
      const node = [process.execPath, join(root, 'scripts/code-cache-train.cjs'), name, ...args];
      const [cmd, ...argv] = ownNetns ? ['unshare', '--net', ...node] : node;
      const r = spawnSync(cmd, argv, {
        cwd: scratch,
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, ...env },
        encoding: 'utf8',
        timeout: 60_000,
      });
      if (!existsSync(join(outDir, `${name}.cjs.cache`))) throw new Error(`recording the code cache of ${name} failed: ${r.error?.message ?? r.stderr}`);
      return r;
    };
    // The launcher on its plain start path, stopped at the execve() into the native helper
    // (status 0 only then), on a tree that passes its checks (/usr, os-release).
    mkdirSync(join(scratch, 'tree/usr'), { recursive: true });
    mkdirSync(join(scratch, 'tree/etc'));
    writeFileSync(join(scratch, 'tree/etc/os-release'), 'ID=mctl-build\n');
    // With -U's map and a veth with a port forward as well (the plain path plus the planning of
    // both, ~1.5 ms of CPU per -U start and ~2 ms per networked one otherwise spent compiling).
    // Root only: it creates the empty /run/mctl-idmap, and takes the network's locks and state
    // (in the scratch directory) and sets its forwarding sysctls: in a network namespace of its
    // own, so the host's stay as they are.
    const asRoot = process.getuid?.() === 0;
    const extra = asRoot ? ['--private-users=pick', '--private-users-ownership=map', '--network-veth', '-p', '1:1'] : [];
    const netEnv = { MCTL_NET_STATE_DIR: join(scratch, 'net'), MCTL_NET_TABLE: 'mctlbuild' };
    const plainRun = ['-q', '--register=no', '--read-only', '-D', join(scratch, 'tree'), '/bin/true'];
    let launcher;
    try {
      launcher = train('mctl-nspawn', ['-q', '--register=no', '--read-only', ...extra, '-D', join(scratch, 'tree'), '/bin/true'], netEnv, asRoot);
    } catch (err) {
      // e.g. root without the right to make a network namespace (a restricted build container)
      console.warn(`build: recording the launcher's code cache with -U and networking failed, recording the plain path: ${err instanceof Error ? err.message : String(err)}`);
      launcher = train('mctl-nspawn', plainRun);
    }
    if (launcher.status !== 0) console.warn(`build: the launcher's code cache covers less than its start path: ${launcher.stderr.trim()}`);
    // The CLI up to its first bus call (no bus here: that part fails and is left to lazy compiling).
    train('mctl', ['list'], { DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${join(scratch, 'no-bus')}` });
    train('mctl-machined', ['--version']);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
