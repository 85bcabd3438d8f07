'use strict';
// Runs one of mctl's programs from its single-file bundle, dist/bundle/NAME.cjs, compiled with
// the V8 code cache the build recorded next to it (NAME.cjs.cache; scripts/bundle.mjs says why).
// CommonJS on purpose, like bin/*: an ES module entry would load Node's ES module loader, which
// is the start-up cost the bundle avoids. Without a bundle (a tsc-only build) the program runs
// from dist/ as ES modules; a cache V8 rejects (other Node version or V8 flags) only costs time.
const { closeSync, fstatSync, openSync, readFileSync } = require('node:fs');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');
const { createRequire } = require('node:module');

const BUNDLE_DIR = join(__dirname, '..', 'dist', 'bundle');
// A bundle starts with this line and ends with '})': it is the CommonJS module wrapper
// function (as Node's own loader builds it), compiled as the file is, without a wrapped copy.
const WRAPPER_HEAD = '(function (exports, require, module, __filename, __dirname) {';

/**
 * Which bundle file a cache belongs to: V8 checks a cache against the source's length only, so
 * a cache used with another bundle of the same length would run the wrong code. The build
 * replaces bundles by rename (a new inode), so inode + mtime of the file actually read name it.
 */
function bundleIdentity(st) {
  return `mctl-code-cache ${st.dev} ${st.ino} ${st.mtimeMs}\n`;
}

/** The cache recorded for exactly this bundle file (first line: its identity), else undefined. */
function readCache(file, identity) {
  let data;
  try {
    data = readFileSync(`${file}.cache`);
  } catch {
    return undefined;
  }
  if (data.length <= identity.length || data.toString('latin1', 0, identity.length) !== identity) return undefined;
  return data.subarray(identity.length);
}

/** Compile a bundle; undefined when there is none. useCache=false is for recording a cache. */
function compileBundle(name, useCache = true) {
  const file = join(BUNDLE_DIR, `${name}.cjs`);
  let fd;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  let identity;
  let source;
  try {
    identity = bundleIdentity(fstatSync(fd));
    // ASCII only (scripts/bundle.mjs makes sure): latin1 is exact and cheaper than UTF-8.
    source = readFileSync(fd, 'latin1');
  } finally {
    closeSync(fd);
  }
  const cachedData = useCache ? readCache(file, identity) : undefined;
  if (!source.startsWith(WRAPPER_HEAD)) return undefined;
  const script = new Script(source, { filename: file, cachedData });
  return { file, identity, script };
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

module.exports = { BUNDLE_DIR, bundleIdentity, readCache, compileBundle, runCompiled, runProgram };
