'use strict';
// Build step (scripts/bundle.mjs): run one program from its bundle, uncached, with the given
// arguments, and write the V8 code cache of everything it compiled on the way to NAME.cjs.cache
// (after a first line naming the bundle file it belongs to, see bin/bundle-loader.cjs).
// The cache is taken when the program exits, whatever its status; for the launcher, at its
// execve() into the native helper, which is intercepted here: no container is started.
//   node scripts/code-cache-train.cjs NAME ARGS...
const { renameSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { compileBundle, runCompiled } = require('../bin/bundle-loader.cjs');

const [name, ...args] = process.argv.slice(2);
const compiled = compileBundle(name, false);
if (!compiled) throw new Error(`no bundle for ${name}`);

let written = false;
function writeCache() {
  if (written) return;
  written = true;
  const out = `${compiled.file}.cache`;
  writeFileSync(`${out}.tmp`, Buffer.concat([Buffer.from(compiled.identity, 'latin1'), compiled.script.createCachedData()]));
  renameSync(`${out}.tmp`, out);
}
process.on('exit', writeCache);

// The launcher's hand-over: its addon's execve() (src/nspawn/launch.ts) stops the run here.
const dlopen = process.dlopen.bind(process);
process.dlopen = (mod, file, ...rest) => {
  dlopen(mod, file, ...rest);
  if (file.endsWith('mctl-exec.node') && mod.exports && typeof mod.exports.execve === 'function') {
    mod.exports.execve = () => {
      writeCache();
      process.exit(0);
    };
  }
};

process.argv = [process.argv[0], join(__dirname, '..', 'bin', name), ...args];
runCompiled(compiled);
