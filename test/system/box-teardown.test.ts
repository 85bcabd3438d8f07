// The box harness always tears down: after stop(), after a boot that fails or times out, when the
// test process gets SIGINT/SIGTERM, and (via PDEATHSIG + the stale-box reaper) after SIGKILL.
// "Nothing left" = no nspawn process, mounts, cgroups, work dir, state file, loop devices or links.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { STATE_DIR, bootBox, leftovers, reapStaleBoxes, waitFor, type Box } from '../helpers/box.js';
import { debianTree } from '../helpers/images.js';

type BoxIds = Pick<Box, 'name' | 'workDir' | 'nspawnPid'>;
const holdBox = fileURLToPath(new URL('./fixtures/hold-box.ts', import.meta.url));
const failsInBox = fileURLToPath(new URL('./fixtures/fails-in-box.ts', import.meta.url));

test('stop() removes the box, its overlays and its cgroups', async () => {
  const box = await bootBox({ machines: { debian: debianTree() } });
  try {
    const running = leftovers(box);
    // The check must be able to see a live box, or "nothing left" below would prove nothing.
    assert.ok(running.some((l) => l.startsWith('process')), running.join(', '));
    assert.ok(running.some((l) => l.startsWith('mount')), running.join(', '));
    assert.ok(running.some((l) => l.startsWith('cgroup')), running.join(', '));
  } finally {
    await box.stop();
  }
  assert.deepEqual(leftovers(box), []);
  await box.stop(); // idempotent
});

test('a boot that fails or times out cleans up and says why', async () => {
  const failed = await bootError({ binds: [{ source: '/nonexistent/t-box-missing' }] });
  assert.match(failed.message, /did not boot: systemd-nspawn exited \(status 1\)/);
  assert.match(failed.message, /t-box-missing/, 'nspawn\'s own complaint is in the error');
  const timedOut = await bootError({ bootTimeoutMs: 50 });
  assert.match(timedOut.message, /did not boot: timed out after 50 ms/);
  for (const err of [failed, timedOut]) {
    const name = /box (t-box-[0-9a-f]+) did not boot/.exec(err.message)?.[1];
    assert.ok(name, err.message);
    assert.deepEqual(leftoversByName(name), []);
  }
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`${signal} to the test process tears its box down`, async () => {
    const { child, ids } = await startHolder();
    child.kill(signal);
    const code = await exitCode(child);
    assert.equal(code, signal === 'SIGINT' ? 130 : 143);
    assert.deepEqual(leftovers(ids), []);
  });
}

test('Ctrl-C of a whole `node --test` run (SIGINT to its process group) tears the box down', async () => {
  // As from a terminal: runner and test file share a process group and both get SIGINT; the
  // runner then closes the file's pipes, so the teardown must not depend on them.
  // Without NODE_TEST_CONTEXT, which would make the nested runner run the file in-process.
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const runner = spawn(process.execPath, ['--import', 'tsx', '--test', holdBox], { stdio: 'ignore', detached: true, env });
  // The runner holds the file's output until it ends: find the box by its state file instead.
  let ids: BoxIds | undefined;
  const stopRunner = (): void => {
    if (runner.exitCode === null && runner.signalCode === null) runner.kill('SIGKILL');
  };
  await waitFor(
    async () => {
      ids = boxStates().find((st) => st.booted && parentOf(st.ownerPid) === runner.pid);
      return ids !== undefined;
    },
    60_000,
    'a booted box under the runner',
  ).catch((err: Error) => {
    stopRunner();
    throw err;
  });
  process.kill(-runner.pid!, 'SIGINT');
  await exitCode(runner);
  await waitFor(async () => leftovers(ids!).length === 0, 15_000, `box ${ids!.name} torn down (left: ${leftovers(ids!).join(', ')})`);
});

test('a failing test gets the box journal in its output, and the box still goes away', async () => {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const run = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', failsInBox], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  run.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  run.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  assert.equal(await exitCode(run), 1, out);
  const name = /# box (t-box-[0-9a-f]+) booted/.exec(out)?.[1];
  assert.ok(name, out);
  assert.match(out, new RegExp(`journal of box ${name} after failed test "fails on purpose inside the box"`));
  assert.match(out, /systemd\[1\]: Reached target multi-user\.target/, 'the journal itself, not just a header');
  assert.deepEqual(leftoversByName(name), []);
});

test('SIGKILL of the test process: nspawn dies with it and the next boot reaps the rest', async () => {
  const { child, ids } = await startHolder();
  child.kill('SIGKILL');
  await exitCode(child);
  // PDEATHSIG=TERM: nspawn shuts the box down on its own.
  await waitFor(async () => !leftovers(ids).some((l) => l.startsWith('process')), 15_000, 'orphaned nspawn to exit');
  assert.ok(leftovers(ids).length > 0, 'host-side pieces are still there before reaping');
  reapStaleBoxes();
  assert.deepEqual(leftovers(ids), []);
});

async function startHolder(): Promise<{ child: ReturnType<typeof spawn>; ids: BoxIds }> {
  const child = spawn(process.execPath, ['--import', 'tsx', holdBox], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`hold-box exited early (${code})`)));
  });
  return { child, ids: JSON.parse(line) as BoxIds };
}

function exitCode(child: ReturnType<typeof spawn>): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

function boxStates(): (BoxIds & { ownerPid: number; booted?: boolean })[] {
  if (!existsSync(STATE_DIR)) return [];
  return readdirSync(STATE_DIR).flatMap((f) => {
    try {
      return [JSON.parse(readFileSync(`${STATE_DIR}/${f}`, 'utf8'))];
    } catch {
      return [];
    }
  });
}

function parentOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return 0;
  }
}

async function bootError(options: Parameters<typeof bootBox>[0]): Promise<Error> {
  try {
    const box = await bootBox(options);
    await box.stop();
  } catch (err) {
    return err as Error;
  }
  throw new Error('the box booted although it should not have');
}

/** leftovers() for a box known only by name (its boot failed, so there is no Box to ask). */
function leftoversByName(name: string): string[] {
  const workDirs = readdirSync('/tmp').filter((d) => d.startsWith(`mctl-box-${name}-`));
  const cgroups = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd']
    .filter((root) => existsSync(`${root}/cgroup.procs`) && existsSync(`${root}/mctl-${name}`))
    .map((root) => `cgroup ${root}/mctl-${name}`);
  return [...workDirs.map((d) => `dir /tmp/${d}`), ...cgroups, ...leftovers({ name, workDir: `/tmp/mctl-box-${name}-`, nspawnPid: 0 })];
}
