'use strict';
// Runs one of mctl's programs from its single-file bundle, dist/bundle/NAME.cjs, compiled with
// the V8 code cache the build recorded next to it (NAME.cjs.cache; scripts/bundle.mjs says why).
// CommonJS on purpose, like bin/*: an ES module entry would load Node's ES module loader, which
// is the start-up cost the bundle avoids. Without a bundle (a tsc-only build) the program runs
// from dist/ as ES modules; a cache V8 rejects (other Node version or V8 flags) only costs time.
const { readFileSync, statSync } = require('node:fs');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');
const { createRequire } = require('node:module');

const BUNDLE_DIR = join(__dirname, '..', 'dist', 'bundle');
// The CommonJS module wrapper, as Node's own loader uses it.
const WRAPPER_HEAD = '(function (exports, require, module, __filename, __dirname) { ';
const WRAPPER_TAIL = '\n})';

/** The cache, if it was recorded for this very bundle (written after it by the same build). */
function readCache(file, bundleStat) {
  try {
    if (statSync(`${file}.cache`).mtimeMs < bundleStat.mtimeMs) return undefined;
    return readFileSync(`${file}.cache`);
  } catch {
    return undefined;
  }
}

/** Compile a bundle; undefined when there is none. useCache=false is for recording a cache. */
function compileBundle(name, useCache = true) {
  const file = join(BUNDLE_DIR, `${name}.cjs`);
  let source;
  let st;
  try {
    st = statSync(file);
    // ASCII only (scripts/bundle.mjs makes sure): latin1 is exact and cheaper than UTF-8.
    source = readFileSync(file, 'latin1');
  } catch {
    return undefined;
  }
  const cachedData = useCache ? readCache(file, st) : undefined;
  const script = new Script(WRAPPER_HEAD + source + WRAPPER_TAIL, { filename: file, cachedData });
  return { file, script };
}

/** Run the compiled bundle as a CommonJS module whose require() resolves from its own place. */
function runCompiled({ file, script }) {
  const mod = { exports: {}, filename: file, id: '.', loaded: false };
  script.runInThisContext()(mod.exports, createRequire(file), mod, file, dirname(file));
}

/** bin/NAME: run the bundle, or the ES module build at `fallback` (relative to bin/). */
function runProgram(name, fallback) {
  const compiled = compileBundle(name);
  if (compiled) runCompiled(compiled);
  else import(join(__dirname, fallback));
}

module.exports = { BUNDLE_DIR, compileBundle, runCompiled, runProgram };
