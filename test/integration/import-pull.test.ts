// pull-tar/pull-raw against a loopback HTTP server serving a real Debian tarball: signature and
// checksum verification, a tree identical to GNU tar's own extraction, and every failure
// (404, mismatch, bad signature, server gone, malicious archive, kill -9, Ctrl-C) leaving the
// pool as it was.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compareTrees, debianTar, debianTarball, EXTRAS, makeExtras, makeKey, poolListing, runMctl, sha256File, startServer, stopAgent, type TestKey, type TestServer } from './import-fixture.js';
import { archive } from '../fixtures/tar/builder.js';

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

let dir: string;
let pool: string;
let ref: string;
let server: TestServer;
let good: TestKey;
let evil: TestKey;
let env: NodeJS.ProcessEnv;
let small: string;

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${stderr}`);
  assert.match(lines[0]!, /^mctl: /);
  return lines[0]!;
}

before(() => {
  dir = mkdtempSync('/tmp/mctl-import-');
  pool = join(dir, 'pool');
  mkdirSync(pool);
  env = { MCTL_POOL: pool };
});

after(async () => {
  await server?.close();
  for (const k of [good, evil]) if (k) stopAgent(k);
  rmSync(dir, { recursive: true, force: true });
});

describe('pull', { concurrency: false }, () => {
  before(async () => {
    const tarball = debianTarball('xz');
    good = makeKey(dir, 'good');
    evil = makeKey(dir, 'evil');
    env['MCTL_IMPORT_KEYRING'] = good.keyring;
    server = await startServer();
    const settings = '[Exec]\nBoot=yes\n';
    const sums = `${sha256File(tarball)}  debian.tar.xz\n${sha(settings)}  debian.nspawn\n`;
    server.routes.set('/img/debian.tar.xz', { file: tarball });
    server.routes.set('/img/debian.nspawn', { data: settings });
    server.routes.set('/img/SHA256SUMS', { data: sums });
    server.routes.set('/img/SHA256SUMS.gpg', { data: good.sign(sums) });

    // a small archive for the failure paths (same code, less waiting)
    const extras = join(dir, 'extras');
    makeExtras(extras);
    small = join(dir, 'small.tar.gz');
    execFileSync('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '-czf', small, '-C', extras, '.']);
    const smallSums = `${sha256File(small)}  small.tar.gz\n`;
    server.routes.set('/small/small.tar.gz', { file: small });
    server.routes.set('/small/SHA256SUMS', { data: smallSums });
    server.routes.set('/small/SHA256SUMS.gpg', { data: good.sign(smallSums) });
    server.routes.set('/badsum/small.tar.gz', { file: small });
    server.routes.set('/badsum/SHA256SUMS', { data: `${'0'.repeat(64)}  small.tar.gz\n` });
    server.routes.set('/badsig/small.tar.gz', { file: small });
    server.routes.set('/badsig/SHA256SUMS', { data: smallSums });
    server.routes.set('/badsig/SHA256SUMS.gpg', { data: evil.sign(smallSums) });
    server.routes.set('/tampered/small.tar.gz', { file: small });
    server.routes.set('/tampered/SHA256SUMS', { data: smallSums + '\n' });
    server.routes.set('/tampered/SHA256SUMS.gpg', { data: good.sign(smallSums) });
    server.routes.set('/drop/debian.tar.xz', { file: tarball, dropAfter: 3 * 1024 * 1024 });
    server.routes.set('/slow/debian.tar.xz', { file: tarball, rate: 4 * 1024 * 1024 });
    server.routes.set('/evil/evil.tar', { data: archive([{ name: 'ok', body: 'fine' }, { name: 'link', type: '2', linkname: dir }, { name: 'link/pwned', body: 'gotcha' }]) });
    server.routes.set('/junk/junk.tar', { data: Buffer.alloc(4096, 0x41) });

    // what GNU tar itself makes of the same archive
    ref = join(dir, 'ref');
    mkdirSync(ref);
    execFileSync('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '-xpf', debianTar(), '-C', ref]);
  });

  test('pull-tar with signature verification gives the tree GNU tar gives', async () => {
    const r = await runMctl(['pull-tar', `${server.url}/img/debian.tar.xz`], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Pulled image 'debian'/);
    assert.deepEqual(poolListing(pool), ['debian', 'debian.nspawn']);
    assert.equal(readFileSync(join(pool, 'debian.nspawn'), 'utf8'), '[Exec]\nBoot=yes\n');
    const diffs = compareTrees(ref, join(pool, 'debian'));
    assert.deepEqual(diffs.slice(0, 20), []);
    // the entries that matter most, checked by their own tools too
    const x = join(pool, 'debian', EXTRAS);
    assert.match(execFileSync('getcap', [join(x, 'ping')], { encoding: 'utf8' }), /cap_net_raw[=+]ep/);
    assert.match(execFileSync('getfacl', ['-c', join(x, 'acl')], { encoding: 'utf8' }), /user:1234:rwx/);
    assert.equal(statSync(join(x, 'setgid')).mode & 0o7777, 0o2755);
    assert.equal(statSync(join(x, 'sticky')).mode & 0o7777, 0o1777);
    assert.ok(statSync(join(x, 'null')).isCharacterDevice());
    assert.ok(statSync(join(x, 'fifo')).isFIFO());
    assert.equal(statSync(join(x, 'hard1')).nlink, 3);
    assert.equal(statSync(join(x, 'owned')).uid, 100000);
  });

  test('an existing image is refused before downloading, unless --force', async () => {
    const before = server.requests.length;
    const r = await runMctl(['pull-tar', '--verify=no', `${server.url}/img/debian.tar.xz`], env);
    assert.notEqual(r.code, 0);
    assert.match(oneLine(r.stderr), /image 'debian' already exists \(use --force/);
    assert.equal(server.requests.slice(before).includes('/img/debian.tar.xz'), false);
  });

  test('--read-only and a name given on the command line', async () => {
    const r = await runMctl(['pull-tar', '--read-only', `${server.url}/small/small.tar.gz`, 'smallro'], env);
    assert.equal(r.code, 0, r.stderr);
    const flags = execFileSync('lsattr', ['-d', join(pool, 'smallro')], { encoding: 'utf8' });
    assert.match(flags.split(' ')[0]!, /i/);
    const again = await runMctl(['pull-tar', '--force', `${server.url}/small/small.tar.gz`, 'smallro'], env);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(existsSync(join(pool, 'smallro', EXTRAS, 'ping')), true);
  });

  const failures: [string, string[], RegExp][] = [
    ['HTTP 404', ['--verify=no', '/img/missing.tar.xz'], /HTTP 404/],
    ['no checksum list', ['--verify=checksum', '/nosums/x.tar.gz'], /neither x\.tar\.gz\.sha256 nor SHA256SUMS/],
    ['checksum mismatch', ['--verify=checksum', '/badsum/small.tar.gz', 'bad1'], /DOWNLOAD INVALID: SHA-256 of small\.tar\.gz does not match/],
    ['signature by an unknown key', ['--verify=signature', '/badsig/small.tar.gz', 'bad2'], /DOWNLOAD INVALID: signature verification failed/],
    ['list changed after signing', ['--verify=signature', '/tampered/small.tar.gz', 'bad3'], /DOWNLOAD INVALID: signature verification failed/],
    ['server gone mid-stream', ['--verify=no', '/drop/debian.tar.xz', 'bad4'], /interrupted: connection closed after \d+ of \d+ bytes/],
    ['malicious tarball', ['--verify=no', '/evil/evil.tar', 'bad5'], /entry 'link\/pwned': would be written through symlink 'link'/],
    ['not a tar archive', ['--verify=no', '/junk/junk.tar', 'bad6'], /not a tar archive/],
    ['invalid local name', ['--verify=no', '/small/small.tar.gz', 'no_underscores'], /not a suitable image name/],
  ];
  for (const [what, args, pattern] of failures) {
    test(`failure leaves the pool unchanged: ${what}`, async () => {
      const listing = poolListing(pool);
      const [first, path, ...rest] = args as [string, string, ...string[]];
      const r = await runMctl(['pull-tar', first, `${server.url}${path}`, ...rest], env);
      assert.notEqual(r.code, 0);
      assert.match(oneLine(r.stderr), pattern);
      assert.deepEqual(poolListing(pool), listing);
      assert.equal(existsSync(join(dir, 'pwned')), false);
    });
  }

  test('kill -9 mid-pull leaves a recognisable work entry that the next transfer removes', async () => {
    const listing = poolListing(pool);
    let pid = 0;
    const run = runMctl(['pull-tar', '--verify=no', `${server.url}/slow/debian.tar.xz`, 'killed'], env, { onSpawn: (p) => (pid = p) });
    const deadline = Date.now() + 20_000;
    let work: string | undefined;
    while (!work && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      work = poolListing(pool).find((n) => n.startsWith('.#mctl-') && n.endsWith('-killed'));
      if (work && !existsSync(join(pool, work, 'usr'))) work = undefined; // wait until tar is writing
    }
    assert.ok(work, 'work entry appeared');
    process.kill(pid, 'SIGKILL');
    const r = await run;
    assert.equal(r.signal, 'SIGKILL');
    assert.ok(poolListing(pool).includes(work), 'left behind, hidden');
    assert.equal(poolListing(pool).includes('killed'), false);
    // tar sees EOF and exits; the next transfer removes the dead transfer's entry
    await new Promise((r) => setTimeout(r, 500));
    const next = await runMctl(['import-tar', small, 'after-kill'], env);
    assert.equal(next.code, 0, next.stderr);
    assert.deepEqual(poolListing(pool), [...listing, 'after-kill'].sort());
    // …and the dead transfer's name reservation with it
    assert.equal(existsSync('/run/systemd/nspawn/locks/name-killed'), false);
  });

  test('SIGINT (Ctrl-C) cancels cleanly', async () => {
    const listing = poolListing(pool);
    let pid = 0;
    const run = runMctl(['pull-tar', '--verify=no', `${server.url}/slow/debian.tar.xz`, 'interrupted'], env, { onSpawn: (p) => (pid = p) });
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && !poolListing(pool).some((n) => n.endsWith('-interrupted'))) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 500));
    process.kill(pid, 'SIGINT');
    const r = await run;
    assert.equal(r.code, 130);
    assert.match(oneLine(r.stderr), /transfer canceled/);
    assert.deepEqual(poolListing(pool), listing);
  });

  test('pull-raw with a clear-signed FILE.sha256, sparse result', async () => {
    const raw = join(dir, 'disk.raw');
    execFileSync('truncate', ['-s', '64M', raw]);
    execFileSync('mkfs.ext4', ['-q', '-F', raw]);
    const want = sha256File(raw);
    execFileSync('zstd', ['-q', '-k', raw, '-o', `${raw}.zst`]);
    server.routes.set('/raw/disk.raw.zst', { file: `${raw}.zst` });
    server.routes.set('/raw/disk.raw.zst.sha256', { data: good.clearsign(`${sha256File(`${raw}.zst`)}  disk.raw.zst\n`) });
    const r = await runMctl(['pull-raw', `${server.url}/raw/disk.raw.zst`], env);
    assert.equal(r.code, 0, r.stderr);
    const got = join(pool, 'disk.raw');
    assert.equal(sha256File(got), want);
    const st = statSync(got);
    assert.equal(st.size, 64 * 1024 * 1024);
    assert.ok(st.blocks * 512 < st.size / 2, `sparse (${st.blocks * 512} bytes allocated)`);
    // export-raw (xz by suffix) and import-raw from standard input round-trip
    const exported = join(dir, 'disk-export.raw.xz');
    const e = await runMctl(['export-raw', 'disk', exported], env);
    assert.equal(e.code, 0, e.stderr);
    const i = await runMctl(['import-raw', '-', 'disk-again'], env, { input: readFileSync(exported) });
    assert.equal(i.code, 0, i.stderr);
    assert.equal(sha256File(join(pool, 'disk-again.raw')), want);
    rmSync(exported);
    // the same with the signature from another key fails and leaves nothing
    server.routes.set('/raw2/disk.raw.zst', { file: `${raw}.zst` });
    server.routes.set('/raw2/disk.raw.zst.sha256', { data: evil.clearsign(`${sha256File(`${raw}.zst`)}  disk.raw.zst\n`) });
    const listing = poolListing(pool);
    const bad = await runMctl(['pull-raw', `${server.url}/raw2/disk.raw.zst`, 'disk2'], env);
    assert.match(oneLine(bad.stderr), /signature verification failed/);
    assert.deepEqual(poolListing(pool), listing);
  });

  test('download only ("-" as name) verifies and keeps nothing', async () => {
    const listing = poolListing(pool);
    const r = await runMctl(['pull-tar', `${server.url}/small/small.tar.gz`, '-'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /nothing kept/);
    assert.deepEqual(poolListing(pool), listing);
  });

  test('export-tar then import-tar round-trips to an identical tree (file and pipe)', async () => {
    const out = join(dir, 'export.tar.zst');
    const e = await runMctl(['export-tar', 'debian', out], env);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(execFileSync('zstd', ['-t', '-q', out]).length, 0);
    const i = await runMctl(['import-tar', out, 'debian-copy'], env);
    assert.equal(i.code, 0, i.stderr);
    assert.deepEqual(compareTrees(join(pool, 'debian'), join(pool, 'debian-copy')).slice(0, 20), []);
    rmSync(out);
    // stdout → stdin, gzip chosen by --format
    execFileSync('sh', ['-c', `"${process.execPath}" bin/mctl export-tar --format=gzip debian - | "${process.execPath}" bin/mctl import-tar - debian-pipe`], { cwd: join(import.meta.dirname, '../..'), env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    assert.deepEqual(compareTrees(join(pool, 'debian'), join(pool, 'debian-pipe')).slice(0, 20), []);
  });

  test('import-fs copies a tree exactly', async () => {
    const r = await runMctl(['import-fs', ref, 'from-fs'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(compareTrees(ref, join(pool, 'from-fs')).slice(0, 20), []);
    const dup = await runMctl(['import-fs', ref, 'from-fs'], env);
    assert.match(oneLine(dup.stderr), /already exists/);
  });

  test('export-raw of a directory image and export to a terminal are refused', async () => {
    const r = await runMctl(['export-raw', 'debian', join(dir, 'x.raw')], env);
    assert.match(oneLine(r.stderr), /export-raw needs a raw image/);
    assert.equal(existsSync(join(dir, 'x.raw')), false);
    const n = await runMctl(['export-tar', 'nonexistent', join(dir, 'x.tar')], env);
    assert.notEqual(n.code, 0);
    assert.match(oneLine(n.stderr), /no image 'nonexistent'/);
  });

  test('no progress output when stderr is not a terminal', async () => {
    const r = await runMctl(['import-tar', '--force', small, 'after-kill'], env);
    assert.equal(r.code, 0);
    assert.equal(r.stderr.includes('\r'), false);
    writeFileSync(join(dir, 'marker'), '');
  });

  test('the pulled Debian image boots to running with mctl-nspawn', { timeout: 120_000 }, async () => {
    const nspawn = join(import.meta.dirname, '../../bin/mctl-nspawn');
    const child = spawn(nspawn, ['-q', '--register=no', '-b', '-M', 't-imp-boot', '-D', join(pool, 'debian')], { stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      // the container's PID 1 is the launcher's child named systemd
      let leader = 0;
      const deadline = Date.now() + 60_000;
      while (!leader && Date.now() < deadline) {
        try {
          for (const k of readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
            if (readFileSync(`/proc/${k}/comm`, 'utf8').trim() === 'systemd') leader = Number(k);
          }
        } catch {
          // not yet
        }
        if (!leader) await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(leader, 'container PID 1 appeared');
      let state = '';
      while (Date.now() < deadline) {
        state = spawnSync('nsenter', ['-t', String(leader), '-a', 'systemctl', 'is-system-running', '--wait'], { encoding: 'utf8', timeout: 60_000 }).stdout.trim();
        if (state !== '' && state !== 'starting' && state !== 'initializing') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(state, 'running');
      child.kill('SIGTERM'); // nspawn semantics: halt the container
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  });
});
