// The start-up bundles bin/ runs (scripts/bundle.mjs, bin/bundle-loader.cjs): each program is
// compiled with the code cache its build recorded, a cache never meets another bundle file, and
// the bundled programs behave as the ES module build in dist/ does. Needs `npm run build`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Stats } from 'node:fs';
import type { Script } from 'node:vm';

const root = fileURLToPath(new URL('../..', import.meta.url));
interface Loader {
  BUNDLE_DIR: string;
  bundleIdentity(st: Stats): string;
  readCache(file: string, identity: string): Buffer | undefined;
  compileBundle(name: string, useCache?: boolean): { file: string; identity: string; script: Script } | undefined;
}
const loader = createRequire(import.meta.url)('../../bin/bundle-loader.cjs') as Loader;
const PROGRAMS = [
  ['mctl', 'cli'],
  ['mctl-nspawn', 'nspawn'],
  ['mctl-machined', 'machined'],
] as const;

test('every program has a bundle, compiled with the code cache recorded for it', () => {
  for (const [name] of PROGRAMS) {
    assert.ok(existsSync(join(loader.BUNDLE_DIR, `${name}.cjs`)), `${name}: no bundle (run npm run build)`);
    const compiled = loader.compileBundle(name);
    assert.ok(compiled, `${name}: the loader found no usable bundle`);
    assert.equal(compiled.script.cachedDataRejected, false, `${name}: the code cache was missing or rejected`);
  }
});

test('a code cache recorded for another bundle file is not used', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mctl-startup-'));
  try {
    const file = join(dir, 'x.cjs');
    writeFileSync(file, '(function () {})');
    const identity = loader.bundleIdentity(statSync(file));
    writeFileSync(`${file}.cache`, Buffer.concat([Buffer.from(identity, 'latin1'), Buffer.from('data')]));
    assert.deepEqual(loader.readCache(file, identity), Buffer.from('data'));
    // The same file rewritten (new mtime), or another file: the identity differs.
    assert.equal(loader.readCache(file, identity.replace(/ \S+\n$/, ' 1\n')), undefined);
    writeFileSync(`${file}.cache`, 'data without a header');
    assert.equal(loader.readCache(file, identity), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function run(argv: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(argv[0] as string, argv.slice(1), { cwd: root, encoding: 'utf8', env: { ...process.env, COLUMNS: '100', DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent/bus' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('bin/ (bundles) and dist/ (ES modules) give the same output and status', () => {
  const cases: Array<[string, string[]]> = [
    ['mctl', ['--version']],
    ['mctl', ['--help']],
    ['mctl', ['no-such-verb']],
    ['mctl', ['list']],
    ['mctl-nspawn', ['--help']],
    ['mctl-nspawn', ['-D', '/nonexistent', '/bin/true']],
    ['mctl-machined', ['--bogus']],
  ];
  for (const [name, args] of cases) {
    const part = PROGRAMS.find(([n]) => n === name)?.[1] as string;
    const bundled = run([process.execPath, join(root, 'bin', name), ...args]);
    const modules = run([process.execPath, join(root, 'dist', part, 'main.js'), ...args]);
    assert.deepEqual(bundled, modules, `${name} ${args.join(' ')}`);
  }
});
