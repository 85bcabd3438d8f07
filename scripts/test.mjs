// `npm test`: build, then run the test tiers. With no argument all three tiers run, and a tier
// that cannot run here (not root, debootstrap missing) FAILS instead of skipping silently.
// Naming tiers (`npm test -- unit`) runs just those, which is how to opt out explicitly.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, statSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const TIERS = ['unit', 'integration', 'system'];
const args = process.argv.slice(2);
const tiers = args.length ? args : TIERS;
for (const t of tiers) {
  if (!TIERS.includes(t)) {
    console.error(`test: unknown tier '${t}' (choose from ${TIERS.join(', ')})`);
    process.exit(2);
  }
}

function files(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return files(p);
    return name.endsWith('.test.ts') ? [p] : [];
  });
}

function preflight(tier) {
  if (tier === 'unit') return null;
  if (process.getuid?.() !== 0) return `the ${tier} tier needs root (run: sudo npm test, or npm test -- unit)`;
  for (const tool of ['debootstrap', 'systemd-nspawn', 'dbus-daemon', 'ip', 'nft']) {
    const r = spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    if (r.status !== 0) return `the ${tier} tier needs ${tool} (see README requirements, or run .ci/run)`;
  }
  return null;
}

const build = spawnSync('npm', ['run', '-s', 'build'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);

// --test-timeout cannot fire inside a test file whose event loop is blocked (a deadlock in a
// synchronous call): a whole tier that overruns its budget is stopped here, its process group
// first asked to end (SIGTERM lets the box harness tear down), then killed.
const TIER_BUDGET_MIN = { unit: 10, integration: 30, system: 30 };

function runTier(tier, args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...args], {
      cwd: root,
      stdio: 'inherit',
      detached: true,
      env: { ...process.env, MCTL_TEST_TIER: tier },
    });
    const signalGroup = (sig) => {
      try {
        process.kill(-child.pid, sig);
      } catch {
        /* already gone */
      }
    };
    const budget = setTimeout(() => {
      console.error(`test: the ${tier} tier ran past its ${TIER_BUDGET_MIN[tier]} min budget; stopping it`);
      signalGroup('SIGTERM');
      setTimeout(() => signalGroup('SIGKILL'), 15_000).unref();
    }, TIER_BUDGET_MIN[tier] * 60_000);
    const forward = (sig) => signalGroup(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('exit', (code, sig) => {
      clearTimeout(budget);
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve(code ?? (sig ? 1 : 0));
    });
  });
}

// The cached test trees are shared by every test and every later run (keyed by recipe hash, not
// content): a test that writes into one (a bind target created in a read-only tree, say) would
// change what all others see. Trees are checked after each root tier.
const imageCache = process.env.MCTL_IMAGE_CACHE || '/var/cache/mctl-test';

function writesIntoCachedTrees() {
  if (!existsSync(imageCache)) return [];
  return readdirSync(imageCache).flatMap((name) => {
    const tree = join(imageCache, name);
    const stamp = join(tree, '.mctl-image-complete');
    if (!existsSync(stamp)) return [];
    const r = spawnSync('find', [tree, '-xdev', '-newer', stamp], { encoding: 'utf8' });
    return r.stdout.split('\n').filter(Boolean).slice(0, 5);
  });
}

let failed = false;
for (const tier of tiers) {
  const why = preflight(tier);
  if (why) {
    console.error(`test: ${why}`);
    failed = true;
    continue;
  }
  const list = files(join(root, 'test', tier)).sort();
  if (list.length === 0) {
    console.error(`test: no tests found in test/${tier}`);
    failed = true;
    continue;
  }
  console.log(`\n=== ${tier} tier: ${list.length} files ===`);
  // Integration and system tests share machine-wide resources (images, the box): run files one
  // at a time there; unit tests run concurrently.
  const concurrency = tier === 'unit' ? [] : ['--test-concurrency=1'];
  // A hung test must fail the run, not hold CI until its deadline.
  const timeout = ['--test-timeout=300000'];
  const status = await runTier(tier, [...concurrency, ...timeout, ...list]);
  if (status !== 0) failed = true;
  const written = tier === 'unit' ? [] : writesIntoCachedTrees();
  if (written.length) {
    console.error(`test: the ${tier} tier changed cached test trees (copy a tree before writing to it):\n  ${written.join('\n  ')}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
