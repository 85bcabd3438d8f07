// mctl-nspawn's options, end to end through the built bin/mctl-nspawn on a copy of the cached
// Debian tree: each test would fail if its option were ignored.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { overlayTree, type TestTree } from './nspawn-opt-tree.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const NSPAWN = join(repo, 'bin/mctl-nspawn');

let work: string;
let tree: string;
let treeMount: TestTree | undefined;
let hostDir: string;

function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['DBUS_SYSTEM_BUS_ADDRESS'];
  delete env['NOTIFY_SOCKET'];
  return env;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function nspawn(args: string[], env: NodeJS.ProcessEnv = cleanEnv()): Run {
  const r = spawnSync(process.execPath, [NSPAWN, ...args], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Run a shell snippet in a command container on the test tree (pipe console, no registration). */
function sh(script: string, options: string[] = []): Run {
  return nspawn(['-q', '--pipe', '--register=no', '-D', tree, ...options, '/bin/sh', '-c', script]);
}

/** Our mounts as the host sees them: anything mentioning the work dir. */
function ourMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(work));
}

before(() => {
  work = mkdtempSync('/tmp/mctl-nspawn-opt-');
  tree = join(work, 'tree');
  treeMount = overlayTree(work);
  tree = treeMount.path;
  hostDir = join(work, 'host');
  mkdirSync(hostDir);
  writeFileSync(join(hostDir, 'file'), 'from-host\n');
});

after(() => {
  treeMount?.release();
  rmSync(work, { recursive: true, force: true });
});

test('--bind is writable inside and shows host files', () => {
  const r = sh('cat /mnt/h/file && echo inside > /mnt/h/new && grep -c " /mnt/h " /proc/self/mountinfo', [`--bind=${hostDir}:/mnt/h`]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'from-host\n1\n');
  assert.equal(readFileSync(join(hostDir, 'new'), 'utf8'), 'inside\n');
  rmSync(join(hostDir, 'new'));
});

test('--bind-ro is read-only inside; a ":" in a path is escaped', () => {
  const colon = join(work, 'a:b');
  mkdirSync(colon, { recursive: true });
  writeFileSync(join(colon, 'f'), 'colon\n');
  const r = sh('cat /ro/f; touch /ro/x 2>/dev/null && echo WRITABLE; grep " /ro " /proc/self/mountinfo | cut -d" " -f6', [`--bind-ro=${colon.replace(':', '\\:')}:/ro`]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^colon\n/);
  assert.doesNotMatch(r.stdout, /WRITABLE/);
  assert.match(r.stdout, /^(.*,)?ro(,.*)?$/m);
  assert.ok(!existsSync(join(colon, 'x')));
});

test('--tmpfs mounts an empty tmpfs with the given options', () => {
  const r = sh('stat -c "%a %U" /srv/t; grep " /srv/t " /proc/self/mountinfo | grep -o "tmpfs tmpfs [^ ]*"', ['--tmpfs=/srv/t:mode=0711']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^711 root\ntmpfs tmpfs rw(,.*)?,mode=711/);
});

test('--read-only makes the root read-only; -E, --chdir, -u apply', () => {
  const ro = sh('touch /probe 2>&1; echo status=$?', ['--read-only']);
  assert.match(ro.stdout, /Read-only file system/);
  assert.ok(!existsSync(join(tree, 'probe')));
  const rw = sh('touch /probe && echo ok && rm /probe');
  assert.equal(rw.stdout, 'ok\n');
  // a mount point missing from a read-only tree is not created in it (nspawn: EROFS); below our own tmpfs it is
  const missing = sh('true', ['--read-only', '--bind-ro=/etc:/t-missing-point']);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^mctl-nspawn: cannot create the mount point \/t-missing-point in the read-only tree \(--read-only\): Read-only file system\n$/);
  assert.ok(!existsSync(join(tree, 't-missing-point')));
  const inTmpfs = sh('test -f /tmp/t-host/hostname && echo ok', ['--read-only', '--bind-ro=/etc:/tmp/t-host']);
  assert.equal(inTmpfs.stdout, 'ok\n', inTmpfs.stderr);
  const env = sh('echo "$FOO|$BAR|$(pwd)|$(id -un)"', ['-E', 'FOO=one two', '--setenv=BAR=x=y', '--chdir=/usr/share', '-u', 'nobody']);
  assert.equal(env.status, 0, env.stderr);
  assert.equal(env.stdout, 'one two|x=y|/usr/share|nobody\n');
});

test('the payload exit status becomes ours; --hostname and -M apply', () => {
  assert.equal(sh('exit 7').status, 7);
  const r = nspawn(['-q', '--pipe', '--register=no', '-D', tree, '-M', 't-nsp-opt-name', '/bin/sh', '-c', 'hostname']);
  assert.equal(r.stdout, 't-nsp-opt-name\n');
  const h = nspawn(['-q', '--pipe', '--register=no', '-D', tree, '-M', 't-nsp-opt-name', '--hostname=other', '/bin/hostname']);
  assert.equal(h.stdout, 'other\n');
});

test('--uuid becomes $container_uuid and /run/host/container-uuid', () => {
  const r = sh('echo "$container_uuid"; cat /run/host/container-uuid', ['--uuid=0123456789abcdef0123456789ABCDEF']);
  assert.equal(r.stdout, '01234567-89ab-cdef-0123-456789abcdef\n01234567-89ab-cdef-0123-456789abcdef\n');
});

test('--kill-signal is what PID 1 gets when the launcher is asked to stop', { timeout: 30_000 }, async () => {
  const child = spawn(process.execPath, [NSPAWN, '-q', '--pipe', '--register=no', '-D', tree, '--kill-signal=SIGUSR1', '/bin/sh', '-c',
    'trap "echo got-usr1; exit 3" USR1; echo ready; while :; do sleep 0.1; done'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('ready')) resolve();
  }));
  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('no exit'), 10_000))]);
  if (code === 'no exit') child.kill('SIGKILL');
  assert.equal(code, 3);
  assert.equal(out, 'ready\ngot-usr1\n');
});

test('--notify-ready=yes: READY=1 reaches our $NOTIFY_SOCKET only when the payload sends it', () => {
  // A tiny datagram listener (node has no AF_UNIX datagram sockets): prints seconds until READY=1.
  const listener = `
import socket, subprocess, sys, time, os
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(path); s.settimeout(20)
env = dict(os.environ, NOTIFY_SOCKET=path)
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[2:], env=env)
while True:
    msg = s.recv(4096).decode()
    if 'READY=1' in msg.split('\\n'):
        print('%.2f' % (time.monotonic() - t0)); break
p.wait(); print(p.returncode)
`;
  const run = (notify: string) => {
    const sock = join(work, `notify-${notify}`);
    const r = spawnSync('python3', ['-c', listener, sock, process.execPath, NSPAWN, '-q', '--pipe', '--register=no', '-D', tree, `--notify-ready=${notify}`,
      '/bin/sh', '-c', 'sleep 1.5; systemd-notify --ready; sleep 0.5'], { env: cleanEnv(), encoding: 'utf8', timeout: 30_000 });
    rmSync(sock, { force: true });
    assert.equal(r.status, 0, r.stderr);
    const [secs, code] = r.stdout.trim().split('\n');
    assert.equal(code, '0');
    return Number(secs);
  };
  assert.ok(run('no') < 1.2, 'without --notify-ready, ready as soon as the payload started');
  assert.ok(run('yes') >= 1.4, 'with --notify-ready, only after the payload said so');
});

test('--set-credential and --load-credential appear in $CREDENTIALS_DIRECTORY with tight modes', () => {
  writeFileSync(join(work, 'cred'), 'loaded\n');
  const r = sh('cd "$CREDENTIALS_DIRECTORY" && stat -c "%a %n" . a b && cat a b', ['--set-credential=a:lit\\x41', `--load-credential=b:${join(work, 'cred')}`]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, '500 .\n400 a\n400 b\nlitAloaded\n');
});

test('--capability and --drop-capability change the bounding set', () => {
  const bnd = (opts: string[]) => BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(sh('grep CapBnd /proc/self/status', opts).stdout)?.[1] ?? '0'}`);
  const base = bnd([]);
  assert.equal((base >> 25n) & 1n, 0n, 'CAP_SYS_TIME is not in the default set');
  assert.equal((bnd(['--capability=CAP_SYS_TIME']) >> 25n) & 1n, 1n);
  assert.equal((bnd(['--drop-capability=CAP_MKNOD']) >> 27n) & 1n, 0n);
  assert.equal((base >> 27n) & 1n, 1n);
});

test('--ambient-capability raises the payload\'s ambient set, for a user as for root; without it a user inherits no capability', () => {
  const caps = (opts: string[]): Record<string, string> => {
    const r = sh('grep ^Cap /proc/self/status', opts);
    assert.equal(r.status, 0, r.stderr);
    return Object.fromEntries([...r.stdout.matchAll(/^(Cap\w+):\s*([0-9a-f]+)$/gm)].map((m) => [m[1]!, m[2]!]));
  };
  // CAP_CHOWN (0) and CAP_NET_RAW (13): 0x2001. Figures as stock systemd-nspawn 252 shows them.
  const user = caps(['-u', 'daemon', '--ambient-capability=CAP_NET_RAW', '--ambient-capability=cap_chown']);
  for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) assert.equal(user[set], '0000000000002001', set);
  const root = caps(['--ambient-capability=CAP_NET_RAW']);
  assert.equal(root['CapAmb'], '0000000000002000');
  assert.equal(root['CapInh'], root['CapBnd'], 'root keeps its inheritable set');
  const plainUser = caps(['-u', 'daemon']);
  for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) assert.equal(plainUser[set], '0000000000000000', `${set} of a user without ambient capabilities`);
  for (const [opts, msg] of [
    [['--ambient-capability=all'], /^mctl-nspawn: --ambient-capability: the value 'all' is not supported/],
    [['--ambient-capability=CAP_SYS_MODULE'], /^mctl-nspawn: --ambient-capability: CAP_SYS_MODULE not in the bounding set/],
    [['--ambient-capability=CAP_NET_RAW', '--drop-capability=CAP_NET_RAW'], /CAP_NET_RAW not in the bounding set/],
    [['-b', '--ambient-capability=CAP_NET_RAW'], /^mctl-nspawn: --ambient-capability= may not be combined with --boot/],
  ] as Array<[string[], RegExp]>) {
    const r = sh('true', opts);
    assert.equal(r.status, 1, `${opts.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  assert.equal(caps(['--ambient-capability=CAP_SYS_MODULE', '--capability=CAP_SYS_MODULE'])['CapAmb'], '0000000000010000', 'once it is in the bounding set');
});

test('--no-new-privileges sets NoNewPrivs', () => {
  assert.match(sh('grep NoNewPrivs /proc/self/status', ['--no-new-privileges']).stdout, /NoNewPrivs:\s*1/);
  assert.match(sh('grep NoNewPrivs /proc/self/status').stdout, /NoNewPrivs:\s*0/);
});

test('.nspawn next to the tree is untrusted: harmless keys apply, privileged ones are ignored', () => {
  const file = join(work, 'tree.nspawn');
  writeFileSync(file, `[Exec]\nEnvironment=FROMFILE=yes\n[Files]\nBind=${hostDir}:/mnt/fromfile\n`);
  try {
    const r = nspawn(['--pipe', '--register=no', '-D', tree, '/bin/sh', '-c', 'echo "$FROMFILE"; test -e /mnt/fromfile/file && echo BOUND; true']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'yes\n');
    assert.match(r.stderr, /ignoring Bind=, .*tree\.nspawn is not trusted/);
    const t = nspawn(['-q', '--pipe', '--register=no', '--settings=trusted', '-D', tree, '/bin/sh', '-c', 'cat /mnt/fromfile/file']);
    assert.equal(t.stdout, 'from-host\n');
    const cmdWins = nspawn(['-q', '--pipe', '--register=no', '-E', 'FROMFILE=cmd', '-D', tree, '/bin/sh', '-c', 'echo $FROMFILE']);
    assert.equal(cmdWins.stdout, 'cmd\n');
    const fileWins = nspawn(['-q', '--pipe', '--register=no', '--settings=override', '-E', 'FROMFILE=cmd', '-D', tree, '/bin/sh', '-c', 'echo $FROMFILE']);
    assert.equal(fileWins.stdout, 'yes\n');
    const off = nspawn(['-q', '--pipe', '--register=no', '--settings=no', '-D', tree, '/bin/sh', '-c', 'echo "[$FROMFILE]"']);
    assert.equal(off.stdout, '[]\n');
  } finally {
    rmSync(file, { force: true });
  }
});

test('.nspawn in /run/systemd/nspawn is trusted', () => {
  const dir = '/run/systemd/nspawn';
  const created = !existsSync(dir);
  const createdParent = !existsSync('/run/systemd');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 't-nsp-opt-trusted.nspawn');
  writeFileSync(file, `[Exec]\nHostname=from-trusted\n[Files]\nBindReadOnly=${hostDir}:/mnt/trusted\n`);
  try {
    const r = nspawn(['-q', '--pipe', '--register=no', '-M', 't-nsp-opt-trusted', '-D', tree, '/bin/sh', '-c', 'hostname; cat /mnt/trusted/file']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'from-trusted\nfrom-host\n');
  } finally {
    rmSync(file, { force: true });
    if (created) rmdirSync(dir);
    if (createdParent) rmdirSync('/run/systemd');
  }
});

/**
 * What a launcher of these machines could leave in /run and the cgroup trees. Filtered to our
 * machine names, because other parts' tests may create theirs alongside.
 */
function runAndCgroupTraces(): string[] {
  const run = ['/run/systemd/nspawn', '/run/systemd/machines'].filter((p) => existsSync(p));
  const cgroups: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 4) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      if (/t-nsp-opt|[-.](tree|badname|noinit|host|bad_name)(\.scope|-|$)/.test(e.name)) cgroups.push(join(dir, e.name));
      walk(join(dir, e.name), depth + 1);
    }
  };
  for (const h of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd', '/sys/fs/cgroup']) if (existsSync(h)) walk(h, 0);
  return [...run, ...cgroups].sort();
}

test('bad input: one line, exit 1, no mounts left', () => {
  const before = ourMounts();
  const tracesBefore = runAndCgroupTraces();
  // An OS tree without an init, for -b.
  const noInit = join(work, 'noinit');
  mkdirSync(join(noInit, 'usr/lib'), { recursive: true });
  mkdirSync(join(noInit, 'etc'), { recursive: true });
  writeFileSync(join(noInit, 'usr/lib/os-release'), 'ID=none\n');
  const badFile = join(work, 'badname.nspawn');
  mkdirSync(join(work, 'badname'), { recursive: true });
  writeFileSync(badFile, '[Exec]\nBoot=perhaps\n');
  const cases: Array<[string[], RegExp]> = [
    [['-D', join(work, 'missing'), '/bin/true'], /directory .*missing does not exist/],
    [['-D', tree, '-M', 'bad_name', '/bin/true'], /--machine: invalid machine name 'bad_name'/],
    [['-D', join(work, 'badname'), '/bin/true'], /badname\.nspawn:2: Boot=: 'perhaps' is not a boolean/],
    [['-D', tree, '-x', '--template', tree, '/bin/true'], /--ephemeral and --template= may not be combined/],
    [['-D', tree, '--bind=relative:/x', '/bin/true'], /--bind: 'relative' is not an absolute path/],
    [['-D', tree, `--bind=${join(work, 'nope')}:/x`, '/bin/true'], /--bind: .*nope does not exist/],
    [['-D', tree, '-E', '=x', '/bin/true'], /--setenv: invalid environment assignment/],
    [['-D', hostDir, '-b'], /does not look like an OS root directory/],
    [['-D', noInit, '-b'], /has no init/],
    [['-D', tree, '--property=Bogus=1', '/bin/true'], /unknown or unsupported property 'Bogus'/],
    [['--kill-signal=FOO'], /^mctl-nspawn: --kill-signal: unknown signal 'FOO'\n$/],
  ];
  try {
    for (const [args, re] of cases) {
      const r = nspawn(['--register=no', ...args]);
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.ok(r.stderr.startsWith('mctl-nspawn: '));
      assert.doesNotMatch(r.stderr, /at .*\.js:\d+/);
    }
  } finally {
    rmSync(badFile, { force: true });
  }
  assert.deepEqual(ourMounts(), before);
  assert.deepEqual(runAndCgroupTraces(), tracesBefore);
  rmSync(noInit, { recursive: true, force: true });
  assert.deepEqual(readdirSync(work).sort(), ['.tree-upper', '.tree-work', 'a:b', 'badname', 'cred', 'host', 'tree'].filter((n) => existsSync(join(work, n))).sort());
});

test('--help lists the options, --version prints one line', () => {
  const h = nspawn(['--help']);
  assert.equal(h.status, 0);
  for (const o of ['--bind-ro', '--ephemeral', '--volatile', '--register', '--settings', '--set-credential', '--kill-signal']) assert.ok(h.stdout.includes(o), o);
  assert.match(nspawn(['--version']).stdout, /^mctl-nspawn \d+\.\d+\.\d+\n$/);
});
