// Build: TypeScript to dist/, the native launcher helper with the system C compiler, and the
// start-up bundles with their code caches that bin/ runs (scripts/bundle.mjs).
// The helper exists because no JavaScript can run in a forked child (see docs/architecture.md).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });

run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json']);

const nativeDir = join(root, 'src/nspawn/native');
if (existsSync(nativeDir)) {
  const sources = readdirSync(nativeDir).filter((f) => f.endsWith('.c')).map((f) => join(nativeDir, f));
  if (sources.length > 0) {
    mkdirSync(join(root, 'dist/native'), { recursive: true });
    run(process.env.CC || 'cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-std=gnu11', '-o', join(root, 'dist/native/mctl-nsexec'), ...sources]);
  }
  // execve() for the launcher's start path as a tiny Node-API addon (koffi costs ~12 ms to load)
  const addonDir = join(nativeDir, 'exec-addon');
  if (existsSync(addonDir)) {
    const addon = readdirSync(addonDir).filter((f) => f.endsWith('.c')).map((f) => join(addonDir, f));
    run(process.env.CC || 'cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-std=gnu11', '-shared', '-fPIC', '-o', join(root, 'dist/native/mctl-exec.node'), ...addon]);
  }
}

// Last: recording the launcher's code cache runs it up to its execve() through the addon above.
const { bundlePrograms, trainCodeCaches } = await import('./bundle.mjs');
await bundlePrograms();
trainCodeCaches();
