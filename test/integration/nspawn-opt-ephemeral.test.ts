// Throw-away roots: -x/--ephemeral, --volatile, --overlay with a temporary upper, --template.
// Each must leave the tree and the host exactly as they were — also when the launcher is
// SIGKILLed, because the layers live only in the container's mount namespace.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { overlayTree, type TestTree } from './nspawn-opt-tree.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const NSPAWN = join(repo, 'bin/mctl-nspawn');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let work: string;
let tree: string;
let treeMount: TestTree | undefined;

function env(): NodeJS.ProcessEnv {
  const e = { ...process.env };
  delete e['DBUS_SYSTEM_BUS_ADDRESS'];
  return e;
}

function nspawn(args: string[]) {
  return spawnSync(process.execPath, [NSPAWN, '-q', '--pipe', '--register=no', ...args], { env: env(), encoding: 'utf8', timeout: 60_000 });
}

/** Host mounts that mention our work dir, and the entries at / that nspawn would use (/.#machine.*). */
function hostTraces(): string[] {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(work));
  const rootEntries = readdirSync('/').filter((n) => n.startsWith('.#'));
  return [...mounts, ...rootEntries];
}

function treeListing(): string {
  return spawnSync('sh', ['-c', `cd '${tree}' && find . -xdev -newer '${join(work, 'stamp')}' | sort`], { encoding: 'utf8' }).stdout;
}

before(() => {
  work = mkdtempSync('/tmp/mctl-nspawn-opt-eph-');
  tree = join(work, 'tree');
  treeMount = overlayTree(work);
  tree = treeMount.path;
  writeFileSync(join(work, 'stamp'), '');
});

after(() => {
  treeMount?.release();
  rmSync(work, { recursive: true, force: true });
});

test('-x: writes are discarded, the machine name gets a random suffix, nothing is left', () => {
  const before = hostTraces();
  const r = nspawn(['-D', tree, '-x', '/bin/sh', '-c', 'echo data > /etc/ephemeral-probe && cat /etc/ephemeral-probe && rm /etc/hostname && hostname']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^data\ntree-[0-9a-f]{16}\n$/);
  assert.ok(!existsSync(join(tree, 'etc/ephemeral-probe')));
  assert.ok(existsSync(join(tree, 'etc/hostname')));
  assert.equal(treeListing(), '', 'nothing in the tree changed');
  assert.deepEqual(hostTraces(), before);
});

test('-x survives a SIGKILLed launcher without traces', async () => {
  const before = hostTraces();
  const child = spawn(process.execPath, [NSPAWN, '-q', '--pipe', '--register=no', '-D', tree, '-x', '/bin/sh', '-c', 'echo k > /etc/killed-probe; echo started; exec sleep 1000'], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((r) => child.once('exit', r));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('container did not start')), 20_000);
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('started')) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  assert.ok(hostTraces().length >= before.length);
  process.kill(child.pid!, 'SIGKILL');
  await exited;
  // The container's processes go with their supervisor; wait for the namespace to be torn down.
  for (let i = 0; i < 50 && spawnSync('pgrep', ['-f', '^sleep 1000$']).status === 0; i++) await sleep(100);
  assert.notEqual(spawnSync('pgrep', ['-f', '^sleep 1000$']).status, 0, 'no container process left');
  assert.ok(!existsSync(join(tree, 'etc/killed-probe')));
  assert.deepEqual(hostTraces(), before);
});

test('--volatile=state: / read-only, /var a fresh tmpfs', () => {
  const r = nspawn(['-D', tree, '--volatile=state', '/bin/sh', '-c', 'touch /etc/x 2>/dev/null && echo ETC-WRITABLE; echo v > /var/probe && cat /var/probe; ls /var | wc -l']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'v\n1\n');
  assert.ok(!existsSync(join(tree, 'var/probe')));
});

test('--volatile=overlay: writable, discarded', () => {
  const r = nspawn(['-D', tree, '--volatile=overlay', '/bin/sh', '-c', 'echo o > /etc/ov-probe && cat /etc/ov-probe']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'o\n');
  assert.ok(!existsSync(join(tree, 'etc/ov-probe')));
});

test('--volatile=yes: empty tmpfs root, /usr from the tree read-only', () => {
  const r = nspawn(['-D', tree, '--volatile=yes', '/usr/bin/sh', '-c', 'echo v > /probe && cat /probe; touch /usr/x 2>/dev/null && echo USR-WRITABLE; test -e /etc/debian_version || echo no-etc; true']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^v\n/);
  assert.doesNotMatch(r.stdout, /USR-WRITABLE/);
  assert.ok(!existsSync(join(tree, 'probe')));
});

test('--overlay with an empty upper: writable, discarded; the lower is untouched', () => {
  const lower = join(work, 'lower');
  mkdirSync(lower, { recursive: true });
  writeFileSync(join(lower, 'f'), 'lower\n');
  const r = nspawn(['-D', tree, `--overlay=${lower}::/mnt/o`, '/bin/sh', '-c', 'cat /mnt/o/f && echo changed > /mnt/o/f && echo new > /mnt/o/g && cat /mnt/o/f']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'lower\nchanged\n');
  assert.deepEqual(readdirSync(lower), ['f']);
  assert.equal(readFileSync(join(lower, 'f'), 'utf8'), 'lower\n');
});

test('--overlay with an upper keeps changes there; --overlay-ro is read-only', () => {
  const lower = join(work, 'l2');
  const upper = join(work, 'u2');
  mkdirSync(lower, { recursive: true });
  mkdirSync(upper, { recursive: true });
  writeFileSync(join(lower, 'f'), 'lower\n');
  const r = nspawn(['-D', tree, `--overlay=${lower}:${upper}:/mnt/o`, `--overlay-ro=${lower}:/mnt/r`, '/bin/sh', '-c', 'echo up > /mnt/o/g; touch /mnt/r/x 2>/dev/null && echo RO-WRITABLE; cat /mnt/r/f']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'lower\n');
  assert.equal(readFileSync(join(upper, 'g'), 'utf8'), 'up\n');
  assert.deepEqual(readdirSync(lower), ['f']);
});

test('--template populates a missing -D once', () => {
  const target = join(work, 'from-template');
  const r = nspawn(['-D', target, '--template', tree, '/bin/sh', '-c', 'echo t > /etc/template-probe']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(join(target, 'etc/template-probe'), 'utf8'), 't\n');
  assert.ok(!existsSync(join(tree, 'etc/template-probe')));
  assert.deepEqual(readdirSync(work).filter((n) => n.startsWith('.#from-template')), [], 'no temporary copy left');
  rmSync(target, { recursive: true, force: true });
});
