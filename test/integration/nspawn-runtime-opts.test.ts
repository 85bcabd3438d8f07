// --link-journal (all modes), --rlimit and the default NOFILE limit, --oom-score-adjust,
// --cpu-affinity, --personality, and the clean-up of a persistent --overlay's work directory, end
// to end through bin/mctl-nspawn on an overlay of the cached Debian tree. Each test fails if its
// option were ignored. Values are compared with what stock systemd-nspawn 252 gives on this host
// (see docs/nspawn.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { overlayTree, type TestTree } from './nspawn-opt-tree.js';
import { randomId128 } from '../../src/nspawn/machine-id.js';

const NSPAWN = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const HOST_JOURNAL = '/var/log/journal';

let work = '';
let tree = '';
let treeMount: TestTree | undefined;
/** Host journal entries this file creates (removed in after()). */
const journalIds: string[] = [];

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function nspawn(args: string[]): Run {
  const env = { ...process.env };
  delete env['NOTIFY_SOCKET'];
  const r = spawnSync(NSPAWN, args, { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function sh(script: string, options: string[] = []): Run {
  return nspawn(['-q', '--pipe', '--register=no', '-D', tree, ...options, '/bin/sh', '-c', script]);
}

function newId(): string {
  const id = randomId128();
  journalIds.push(id);
  return id;
}

/** One line on stderr, exit 1, and nothing of `id` on the host. */
function assertRefused(r: Run, pattern: RegExp, id?: string): void {
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, pattern);
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  if (id) assert.ok(!existsSync(join(HOST_JOURNAL, id)), 'nothing left on the host');
}

before(() => {
  work = mkdtempSync('/tmp/mctl-nspawn-rt-');
  treeMount = overlayTree(work);
  tree = treeMount.path;
  mkdirSync(HOST_JOURNAL, { recursive: true });
});

after(() => {
  for (const id of journalIds) rmSync(join(HOST_JOURNAL, id), { recursive: true, force: true });
  treeMount?.release();
  rmSync(work, { recursive: true, force: true });
});

const mountedAt = (path: string) => `grep -q " ${path} " /proc/self/mountinfo && echo mounted || echo not-mounted`;

test('--link-journal=host: the host directory is created and bound into the container', () => {
  const id = newId();
  const r = sh(`echo written > /var/log/journal/${id}/probe; ${mountedAt(`/var/log/journal/${id}`)}`, [`--uuid=${id}`, '--link-journal=host']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'mounted\n');
  assert.equal(readFileSync(join(HOST_JOURNAL, id, 'probe'), 'utf8'), 'written\n', 'the container wrote into the host journal directory');
  assert.ok(!existsSync(join(tree, 'var/log/journal', id, 'probe')), 'not into the tree');
  // auto: binds the host directory now that it exists
  const auto = sh(`cat /var/log/journal/${id}/probe`, [`--uuid=${id}`]);
  assert.equal(auto.stdout, 'written\n', auto.stderr);
});

test('--link-journal=guest: the host path becomes a symlink into the tree; auto and -j keep it', () => {
  const id = newId();
  const r = sh(`echo from-guest > /var/log/journal/${id}/probe; ${mountedAt(`/var/log/journal/${id}`)}`, [`--uuid=${id}`, '--link-journal=guest']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'not-mounted\n', 'guest mode mounts nothing');
  const hostPath = join(HOST_JOURNAL, id);
  assert.ok(lstatSync(hostPath).isSymbolicLink());
  assert.equal(readlinkSync(hostPath), join(tree, 'var/log/journal', id));
  assert.equal(readFileSync(join(hostPath, 'probe'), 'utf8'), 'from-guest\n', "the host sees the container's journal");
  const auto = sh(mountedAt(`/var/log/journal/${id}`), [`--uuid=${id}`, '--link-journal=auto']);
  assert.equal(auto.stdout, 'not-mounted\n', auto.stderr);
  assert.ok(lstatSync(hostPath).isSymbolicLink(), 'auto keeps the guest link');
  const tryGuest = sh('true', [`--uuid=${id}`, '-j']);
  assert.equal(tryGuest.status, 0, tryGuest.stderr);
  assert.ok(lstatSync(hostPath).isSymbolicLink());
});

test('--link-journal: refused combinations and ids, one line, nothing left behind', () => {
  const hostId = readFileSync('/etc/machine-id', 'utf8').trim();
  assertRefused(sh('true', [`--uuid=${hostId}`, '--link-journal=host']), /^mctl-nspawn: --link-journal=host: host and machine ids are equal/);
  assertRefused(sh('true', [`--uuid=${hostId}`, '--link-journal=guest']), /^mctl-nspawn: --link-journal=guest: host and machine ids are equal/);
  // try-host and auto only skip (with nspawn's warning for auto when not quiet)
  const tryHost = sh('echo ran', [`--uuid=${hostId}`, '--link-journal=try-host']);
  assert.equal(tryHost.stdout, 'ran\n', tryHost.stderr);
  assert.ok(!existsSync(join(HOST_JOURNAL, hostId)) || lstatSync(join(HOST_JOURNAL, hostId)).isDirectory());
  const loud = nspawn(['--pipe', '--register=no', '-D', tree, `--uuid=${hostId}`, '/bin/true']);
  assert.match(loud.stderr, /refusing to link journals/);
  assertRefused(nspawn(['--link-journal=maybe', '-D', tree, 'true']), /^mctl-nspawn: --link-journal: unknown mode 'maybe'/);
  const id = newId();
  assertRefused(nspawn(['-x', '--link-journal=host', `--uuid=${id}`, '-D', tree, 'true']), /^mctl-nspawn: --ephemeral and --link-journal=\{host,guest\} may not be combined/, id);
  // a host directory in the way of guest's symlink (not empty): refused, and left alone
  mkdirSync(join(HOST_JOURNAL, id));
  writeFileSync(join(HOST_JOURNAL, id, 'system.journal'), '');
  assertRefused(sh('true', [`--uuid=${id}`, '--link-journal=guest']), /^mctl-nspawn: --link-journal=guest: cannot remove .*: ENOTEMPTY/);
  assert.deepEqual(readdirSync(join(HOST_JOURNAL, id)), ['system.journal']);
  // -x links nothing even with try-host (the journal would vanish with the layer)
  const eph = nspawn(['-q', '--pipe', '--register=no', '-x', '--link-journal=try-host', `--uuid=${id}`, '-D', tree, '/bin/sh', '-c', mountedAt(`/var/log/journal/${id}`)]);
  assert.equal(eph.stdout, 'not-mounted\n', eph.stderr);
});

/** "soft hard" of one /proc/self/limits line of the payload. */
function limitLine(stdout: string, label: string): string {
  const line = stdout.split('\n').find((l) => l.startsWith(label));
  assert.ok(line, `no '${label}' in ${stdout}`);
  return line.slice(label.length).trim().split(/\s+/).slice(0, 2).join(' ');
}

test('default NOFILE: soft 1024, hard inherited (as nspawn); --rlimit sets soft and hard', () => {
  const hardHere = spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).stdout.trim();
  const plain = sh('cat /proc/self/limits');
  assert.equal(plain.status, 0, plain.stderr);
  assert.equal(limitLine(plain.stdout, 'Max open files'), `1024 ${hardHere}`);
  const set = sh('cat /proc/self/limits', ['--rlimit=NOFILE=100:200', '--rlimit=RLIMIT_CORE=1M', '--rlimit=CPU=1.5', '--rlimit=RTTIME=1s', '--rlimit=NPROC=300']);
  assert.equal(set.status, 0, set.stderr);
  assert.equal(limitLine(set.stdout, 'Max open files'), '100 200');
  assert.equal(limitLine(set.stdout, 'Max core file size'), '1048576 1048576');
  assert.equal(limitLine(set.stdout, 'Max cpu time'), '2 2', 'CPU is rounded up to whole seconds');
  assert.equal(limitLine(set.stdout, 'Max realtime timeout'), '1000000 1000000');
  assert.equal(limitLine(set.stdout, 'Max processes'), '300 300');
  // infinity becomes the highest value the kernel allows (nspawn's setrlimit_closest)
  const inf = sh('cat /proc/self/limits', ['--rlimit=NOFILE=infinity']);
  assert.equal(limitLine(inf.stdout, 'Max open files'), `${hardHere} ${hardHere}`);
});

test('Limit*= and OOMScoreAdjust= in a trusted .nspawn file apply; the command line wins per resource', () => {
  const dir = join(work, 'nspawn-dir');
  mkdirSync(dir, { recursive: true });
  const name = 't-nsp-rt-settings';
  writeFileSync(join(dir, `${name}.nspawn`), '[Exec]\nLimitNOFILE=300\nLimitCORE=4K\nOOMScoreAdjust=250\n');
  // an untrusted file next to the tree must not set them: use --settings=trusted to trust it
  const treeParentFile = join(work, `${name}.nspawn`);
  writeFileSync(treeParentFile, '[Exec]\nLimitNOFILE=300\nLimitCORE=4K\nOOMScoreAdjust=250\n');
  try {
    const untrusted = nspawn(['-q', '--pipe', '--register=no', '-M', name, '-D', tree, '/bin/sh', '-c', 'cat /proc/self/limits; cat /proc/self/oom_score_adj']);
    assert.equal(untrusted.status, 0, untrusted.stderr);
    assert.equal(limitLine(untrusted.stdout, 'Max core file size').split(' ')[0], '0', 'an untrusted file cannot set limits');
    const trusted = nspawn(['-q', '--pipe', '--register=no', '--settings=trusted', '--rlimit=NOFILE=50', '-M', name, '-D', tree, '/bin/sh', '-c', 'cat /proc/self/limits; cat /proc/self/oom_score_adj']);
    assert.equal(trusted.status, 0, trusted.stderr);
    assert.equal(limitLine(trusted.stdout, 'Max open files'), '50 50', 'the command line wins for NOFILE');
    assert.equal(limitLine(trusted.stdout, 'Max core file size'), '4096 4096', 'the file sets CORE');
    assert.match(trusted.stdout, /^250$/m);
  } finally {
    rmSync(treeParentFile, { force: true });
  }
});

test('--oom-score-adjust sets the payload\'s OOM score adjustment', () => {
  const r = sh('cat /proc/self/oom_score_adj', ['--oom-score-adjust=500']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, '500\n');
  assert.equal(sh('cat /proc/self/oom_score_adj').stdout, `${readFileSync('/proc/self/oom_score_adj', 'utf8').trim()}\n`, 'inherited without the option');
});

test('bad --rlimit / --oom-score-adjust values: one line, exit 1', () => {
  assertRefused(nspawn(['--rlimit=nofile=10', '-D', tree, 'true']), /^mctl-nspawn: --rlimit: unknown resource limit 'nofile'/);
  assertRefused(nspawn(['--rlimit=NOFILE=5:3', '-D', tree, 'true']), /^mctl-nspawn: --rlimit: failed to parse resource limit NOFILE: '5:3'/);
  assertRefused(nspawn(['--rlimit=NOFILE=10:', '-D', tree, 'true']), /failed to parse resource limit NOFILE/);
  assertRefused(nspawn(['--rlimit=CORE=1X', '-D', tree, 'true']), /failed to parse resource limit CORE: '1X'/);
  assertRefused(nspawn(['--rlimit=NOFILE', '-D', tree, 'true']), /^mctl-nspawn: --rlimit: expected NAME=VALUE/);
  assertRefused(nspawn(['--oom-score-adjust=1001', '-D', tree, 'true']), /^mctl-nspawn: --oom-score-adjust: invalid OOM score adjustment '1001'/);
  assertRefused(nspawn(['--oom-score-adjust=abc', '-D', tree, 'true']), /--oom-score-adjust: invalid OOM score adjustment 'abc'/);
  const file = join(work, 't-nsp-rt-bad.nspawn');
  writeFileSync(file, '[Exec]\nLimitNOFILE=lots\n');
  try {
    assertRefused(nspawn(['--settings=trusted', '-M', 't-nsp-rt-bad', '-D', tree, 'true']), /t-nsp-rt-bad\.nspawn:2: .*LimitNOFILE.*lots/);
  } finally {
    rmSync(file, { force: true });
  }
});

test('--cpu-affinity and --personality reach the payload; CPUAffinity=/Personality= from a trusted file too', () => {
  const last = Number(spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()) - 1;
  const own = readFileSync('/proc/self/status', 'utf8').match(/^Cpus_allowed_list:\s*(.*)$/m)?.[1];
  const r = sh('grep Cpus_allowed_list /proc/self/status; uname -m', [`--cpu-affinity=${last}`, '--personality=x86']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `Cpus_allowed_list:\t${last}\ni686\n`);
  const plain = sh('grep Cpus_allowed_list /proc/self/status; uname -m');
  assert.equal(plain.stdout, `Cpus_allowed_list:\t${own}\nx86_64\n`, 'inherited without the options');
  assert.equal(sh('uname -m', ['--personality=x86-64']).stdout, 'x86_64\n');
  const name = 't-nsp-rt-affinity';
  const file = join(work, `${name}.nspawn`);
  // repeated CPUAffinity= extend the set, as in systemd
  writeFileSync(file, `[Exec]\nCPUAffinity=0\nCPUAffinity=${last}\nPersonality=x86\n`);
  try {
    const t = nspawn(['-q', '--pipe', '--register=no', '--settings=trusted', '-M', name, '-D', tree, '/bin/sh', '-c', 'grep Cpus_allowed_list /proc/self/status; uname -m']);
    assert.equal(t.status, 0, t.stderr);
    assert.equal(t.stdout, `Cpus_allowed_list:\t${last === 0 ? '0' : last === 1 ? '0-1' : `0,${last}`}\ni686\n`);
    const c = nspawn(['-q', '--pipe', '--register=no', '--settings=trusted', '--cpu-affinity=0', '-M', name, '-D', tree, '/bin/sh', '-c', 'grep Cpus_allowed_list /proc/self/status']);
    assert.equal(c.stdout, 'Cpus_allowed_list:\t0\n', 'the command line wins');
  } finally {
    rmSync(file, { force: true });
  }
});

test('bad --cpu-affinity / --personality: one line, exit 1 (a CPU that is not there: when the payload would start)', () => {
  assertRefused(nspawn(['--cpu-affinity=x', '-D', tree, 'true']), /^mctl-nspawn: --cpu-affinity: invalid CPU affinity 'x'/);
  assertRefused(nspawn(['--cpu-affinity=3-1', '-D', tree, 'true']), /invalid CPU affinity '3-1'/);
  assertRefused(nspawn(['--cpu-affinity=9000', '-D', tree, 'true']), /CPU 9000 is out of range/);
  assertRefused(nspawn(['--personality=sparc', '-D', tree, 'true']), /^mctl-nspawn: --personality: unknown personality 'sparc'/);
  const missing = Number(spawnSync('nproc', ['--all'], { encoding: 'utf8' }).stdout.trim()) + 5;
  assertRefused(nspawn(['-q', '--register=no', `--cpu-affinity=${missing}`, '-D', tree, 'true']), /^mctl-nspawn: failed to set the CPU affinity .*: Invalid argument/);
});

test('a persistent --overlay keeps its upper layer and removes its work directory at exit', () => {
  const lower = join(work, 'ov-lower');
  const upper = join(work, 'ov-upper');
  mkdirSync(lower, { recursive: true });
  mkdirSync(upper, { recursive: true });
  writeFileSync(join(lower, 'base'), 'base\n');
  const r = sh('cat /srv/ov/base; echo new > /srv/ov/added', [`--overlay=${lower}:${upper}:/srv/ov`]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'base\n');
  assert.equal(readFileSync(join(upper, 'added'), 'utf8'), 'new\n', 'writes land in the upper layer');
  assert.deepEqual(readdirSync(work).filter((e) => e.includes('ov-upper') && e !== 'ov-upper'), [], 'no work directory left next to the upper');
  // a failed start removes it too
  const bad = sh('true', [`--overlay=${lower}:${upper}:/srv/ov`, '--bind=/nonexistent-mctl-src:/x']);
  assert.equal(bad.status, 1);
  assert.deepEqual(readdirSync(work).filter((e) => e.includes('ov-upper') && e !== 'ov-upper'), []);
});
