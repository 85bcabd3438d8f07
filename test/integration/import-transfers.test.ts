// Transfers seen from outside: list-transfers and cancel-transfer against real pulls from a slow
// loopback server, `mctl clean` (and the service's CleanPool, as stock machinectl calls it)
// removing what interrupted transfers left in the pool but never a running transfer's entry,
// and the image lock an export holds. Runs the BUILT bin/mctl and bin/mctl-machined.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { call, connectBus } from '../../src/dbus/bus.js';
import { lockImage, lockImageName } from '../../src/image/index.js';
import { makeTinyImage, startService, type Service } from './cli-container.js';
import { MCTL, runMctl, startServer, type TestServer } from './import-fixture.js';

const TRANSFERS = '/run/mctl/transfers';
const LOCKS = '/run/systemd/nspawn/locks';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let svc: Service;
let server: TestServer;
let dir: string;
/** An empty directory everyone can reach, where the unprivileged runs see the checkout. */
let reachable: string;

interface Listed {
  id: number;
  progress: number | null;
  type: string;
  local: string;
  remote: string;
  pid: number;
}

before(async () => {
  svc = await startService();
  server = await startServer();
  dir = mkdtempSync('/tmp/mctl-import-xfer-');
  reachable = mkdtempSync('/tmp/mctl-import-view-');
  chmodSync(reachable, 0o755);
  // 4 MiB that does not compress, served at 512 KiB/s: a transfer that stays in flight ~8 s
  const src = join(dir, 'src');
  mkdirSync(join(src, 'etc'), { recursive: true });
  writeFileSync(join(src, 'etc/os-release'), 'ID=gap\n');
  writeFileSync(join(src, 'blob'), randomBytes(4 << 20));
  const tarball = join(dir, 'slow.tar.gz');
  execFileSync('tar', ['-czf', tarball, '-C', src, '.']);
  server.routes.set('/slow/t-gap-slow.tar.gz', { file: tarball, rate: 512 * 1024 });
}, { timeout: 60_000 });

after(async () => {
  await server?.close();
  await svc?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (reachable) rmSync(reachable, { recursive: true, force: true });
});

async function transfers(): Promise<Listed[]> {
  const r = await runMctl(['list-transfers', '-o', 'json'], svc.env);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.toString()) as Listed[];
}

/** Start a slow pull and wait until list-transfers shows it with some progress. */
async function slowPull(name: string): Promise<{ run: ReturnType<typeof runMctl>; listed: Listed; pid: number }> {
  let pid = 0;
  const run = runMctl(['pull-tar', '--verify=no', `${server.url}/slow/t-gap-slow.tar.gz`, name], svc.env, { onSpawn: (p) => (pid = p) });
  const deadline = Date.now() + 20_000;
  for (;;) {
    const listed = (await transfers()).find((t) => t.local === name);
    if (listed && listed.progress !== null && listed.progress > 0) return { run, listed, pid };
    assert.ok(Date.now() < deadline, `transfer of ${name} not listed with progress within 20 s`);
    await sleep(100);
  }
}

function poolEntries(): string[] {
  return readdirSync(svc.pool).sort();
}

test('list-transfers shows a running pull; cancel-transfer stops it and it cleans up as on Ctrl-C', { timeout: 60_000 }, async () => {
  const before = poolEntries();
  const { run, listed, pid } = await slowPull('t-gap-pull');
  assert.equal(listed.type, 'pull-tar');
  assert.equal(listed.remote, `${server.url}/slow/t-gap-slow.tar.gz`);
  assert.equal(listed.pid, pid);
  assert.ok(listed.progress !== null && listed.progress < 1, `progress ${listed.progress}`);
  assert.ok(existsSync(join(TRANSFERS, String(listed.id))));

  const text = await runMctl(['list-transfers'], svc.env);
  assert.match(text.stdout.toString(), /^ID\s+PERCENT\s+TYPE\s+LOCAL\s+REMOTE\n/);
  assert.match(text.stdout.toString(), new RegExp(`^${listed.id}\\s+\\d+%\\s+pull-tar\\s+t-gap-pull\\s+http://`, 'm'));
  assert.match(text.stdout.toString(), /\n\n\d+ transfers listed\.\n$/);

  // an unprivileged user sees it too (a shared lock probe, read-only), and cannot cancel it
  const asNobody = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      // The checkout may sit below a directory nobody cannot traverse (a CI clone under a 0700
      // dir): bind it onto a reachable path in a private mount namespace first.
      const checkout = dirname(dirname(MCTL));
      const script = 'mount --bind "$1" "$2" && shift 2 && exec setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"';
      const c = spawn('unshare', ['--mount', '--propagation=private', 'sh', '-c', script, 'sh', checkout, reachable, process.execPath, join(reachable, relative(checkout, MCTL)), ...args], {
        env: { ...process.env, ...svc.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (err += d.toString()));
      c.on('close', (code) => resolve({ code, stdout: out, stderr: err }));
    });
  const seen = await asNobody(['list-transfers', '-o', 'json']);
  assert.equal(seen.code, 0, seen.stderr);
  assert.ok((JSON.parse(seen.stdout) as Listed[]).some((t) => t.id === listed.id), seen.stdout);
  const refused = await asNobody(['cancel-transfer', String(listed.id)]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr.trim(), new RegExp(`^mctl: cannot signal transfer ${listed.id} \\(PID ${pid}\\): EPERM$`));

  const cancel = await runMctl(['cancel-transfer', String(listed.id)], svc.env);
  assert.equal(cancel.code, 0, cancel.stderr);
  assert.match(cancel.stderr, new RegExp(`^Canceled transfer ${listed.id} \\(pull-tar t-gap-pull\\)\\.$`, 'm'));
  // cancel-transfer returns once the transfer has cleaned up: nothing of it is left by then
  assert.deepEqual(poolEntries(), before);
  assert.equal(existsSync(join(TRANSFERS, String(listed.id))), false);
  const r = await run;
  assert.equal(r.code, 130, r.stderr);
  assert.match(r.stderr.trim(), /^mctl: .*transfer canceled/);
  assert.equal((await transfers()).some((t) => t.local === 't-gap-pull'), false);
});

test('cancel-transfer: unknown and malformed IDs are one-line errors', async () => {
  const unknown = await runMctl(['cancel-transfer', '4000000000'], svc.env);
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stderr.trim(), 'mctl: no transfer 4000000000 (see mctl list-transfers)');
  const bad = await runMctl(['cancel-transfer', 'abc'], svc.env);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr.trim(), /^mctl: invalid transfer ID 'abc'/);
  const none = await runMctl(['list-transfers', '--no-legend'], svc.env);
  assert.equal(none.code, 0, none.stderr);
});

test('a killed transfer drops out of the list, and mctl clean removes its work entry', { timeout: 60_000 }, async () => {
  const { run, listed, pid } = await slowPull('t-gap-killed');
  const work = poolEntries().find((n) => n.startsWith(`.#mctl-${pid}-`) && n.endsWith('-t-gap-killed'));
  assert.ok(work, `work entry of PID ${pid} in ${poolEntries().join(' ')}`);
  process.kill(pid, 'SIGKILL');
  assert.equal((await run).signal, 'SIGKILL');
  await sleep(300); // its tar sees EOF and exits
  assert.equal((await transfers()).some((t) => t.id === listed.id && t.local === 't-gap-killed'), false);
  assert.equal(existsSync(join(TRANSFERS, String(listed.id))), false, 'stale record removed on sight');
  assert.ok(poolEntries().includes(work), 'kill -9 leaves the hidden work entry');

  const clean = await runMctl(['clean'], svc.env);
  assert.equal(clean.code, 0, clean.stderr);
  assert.match(clean.stderr, new RegExp(`^Removed work entry of an interrupted transfer '${work.replace(/[.#]/g, '\\$&')}'\\.$`, 'm'));
  assert.equal(poolEntries().includes(work), false);
  assert.equal(existsSync(join(LOCKS, 'name-t-gap-killed')), false, "the dead transfer's name reservation goes too");
});

test("clean and CleanPool remove interrupted transfers' entries, never one whose transfer still runs", async () => {
  const dead = spawnSync('true').pid as number; // a PID that no longer exists
  const mk = (name: string, raw = false): string => {
    const p = join(svc.pool, name);
    if (raw) writeFileSync(p, 'x');
    else {
      mkdirSync(join(p, 'usr'), { recursive: true });
      writeFileSync(join(p, 'usr/file'), 'partial');
    }
    return name;
  };
  const staleDir = mk(`.#mctl-${dead}-0000aaaa-t-gap-dead`);
  const staleRaw = mk(`.#mctl-${dead}-0000bbbb-t-gap-disk.raw`, true);
  // its PID looks dead from here (another PID namespace, say), but the transfer holds its name
  const elsewhere = mk(`.#mctl-${dead}-0000cccc-t-gap-busy`);
  // a live PID: left alone even without a reservation (SYSTEMD_NSPAWN_LOCK=0 transfers)
  const live = mk(`.#mctl-${process.pid}-0000dddd-t-gap-live`);
  makeTinyImage(svc.pool, '.t-gap-hidden');
  const reservation = lockImageName('t-gap-busy');
  try {
    const r = await runMctl(['clean', '-o', 'json'], svc.env);
    assert.equal(r.code, 0, r.stderr);
    const names = (JSON.parse(r.stdout.toString()) as { name: string; freed: number | null }[]).map((x) => x.name).sort();
    assert.deepEqual(names, ['.t-gap-hidden', staleDir, staleRaw].sort());
    const left = poolEntries();
    for (const gone of [staleDir, staleRaw, '.t-gap-hidden']) assert.equal(left.includes(gone), false, gone);
    for (const kept of [elsewhere, live]) assert.ok(left.includes(kept), kept);
  } finally {
    reservation.release();
  }

  // The service's CleanPool itself (what stock machinectl clean calls), with no CLI involved.
  const bus = connectBus(svc.bus.env['DBUS_SYSTEM_BUS_ADDRESS']);
  try {
    const reply = await call(bus, { destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager', member: 'CleanPool', signature: 's', body: ['hidden'], timeoutMs: 30_000 });
    assert.deepEqual((reply.body[0] as [string, bigint][]).map(([n]) => n), [elsewhere]);
  } finally {
    bus.disconnect();
  }
  assert.equal(poolEntries().includes(elsewhere), false);
  assert.ok(poolEntries().includes(live));
  rmSync(join(svc.pool, live), { recursive: true, force: true });
});

test('export holds the image lock: remove and rename are refused until it ends', { timeout: 60_000 }, async () => {
  const image = makeTinyImage(svc.pool, 't-gap-exp');
  writeFileSync(join(image, 'blob'), randomBytes(8 << 20));
  // stdout is a pipe nobody reads yet: the export blocks mid-stream, image locked
  const child = spawn(process.execPath, [MCTL, 'export-tar', 't-gap-exp', '-'], { env: { ...process.env, ...svc.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.pause();
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  try {
    const deadline = Date.now() + 15_000;
    while (!existsSync(join(svc.pool, '.#t-gap-exp.lck'))) {
      assert.ok(Date.now() < deadline, 'export took the image lock');
      await sleep(50);
    }
    for (const args of [['remove', 't-gap-exp'], ['rename', 't-gap-exp', 't-gap-exp2']]) {
      const r = await runMctl(args, svc.env);
      assert.equal(r.code, 1, `${args.join(' ')} during export: ${r.stderr}`);
      assert.match(r.stderr.trim(), /in use/);
    }
    assert.ok(existsSync(image));
  } finally {
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stdout.resume();
    const code = await exited;
    assert.equal(code, 0, stderr);
    const listing = spawnSync('tar', ['-tf', '-'], { input: Buffer.concat(chunks), encoding: 'utf8' });
    assert.match(listing.stdout, /^\.\/blob$/m);
  }
  assert.equal(existsSync(join(svc.pool, '.#t-gap-exp.lck')), false, 'lock released');
  const removed = await runMctl(['remove', 't-gap-exp'], svc.env);
  assert.equal(removed.code, 0, removed.stderr);
});

test('export of an image a writable machine runs from: warns and exports it as it is', async () => {
  const image = makeTinyImage(svc.pool, 't-gap-busy-exp');
  const running = lockImage(image); // what a launcher of a writable image holds
  try {
    const out = join(dir, 'busy.tar');
    const r = await runMctl(['export-tar', 't-gap-busy-exp', out], svc.env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^mctl: image 't-gap-busy-exp' is in use by a running machine; exporting it as it is now/m);
    assert.match(execFileSync('tar', ['-tf', out], { encoding: 'utf8' }), /etc\/hostname/);
  } finally {
    running.release();
  }
  rmSync(image, { recursive: true, force: true });
});
