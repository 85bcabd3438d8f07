// The container runtime, for real: command containers on the cached Debian tree (read-only or
// through a throw-away overlay, never modified), through the built bin/mctl-nspawn and, for
// what the options do not reach (hooks, fixed user namespace), through the spec driver.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { debianTree } from '../helpers/images.js';
import { launcherHostState } from '../helpers/host-state.js';
import { capabilityMask, defaultBoundingSet } from '../../src/nspawn/capabilities.js';
import type { ContainerSpec } from '../../src/nspawn/spec.js';

const BIN = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const DRIVER = fileURLToPath(new URL('./nspawn-core-driver.ts', import.meta.url));
let tree = '';

before(() => {
  tree = debianTree();
});

function nspawn(args: string[], options: { env?: NodeJS.ProcessEnv } = {}) {
  return spawnSync(BIN, ['-q', '--register=no', ...args], { encoding: 'utf8', timeout: 60_000, env: options.env ?? process.env });
}

function driver(spec: ContainerSpec, env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, ['--import', 'tsx', DRIVER, JSON.stringify(spec)], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, ...env },
  });
}

function baseSpec(argv: string[], overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    root: tree,
    readOnlyRoot: true,
    rootLayer: 'plain',
    machineName: 't-nsc-drv',
    hostname: 't-nsc-drv',
    uuid: '0123456789abcdef0123456789abcdef',
    payload: { kind: 'command', argv, asPid2: false, user: null, chdir: null, env: {} },
    console: 'pipe',
    killSignal: 9,
    namespaces: { privateNetwork: false, userNamespace: null },
    mounts: [],
    capabilities: { bounding: defaultBoundingSet(false), ambient: [] },
    noNewPrivileges: false,
    seccomp: true,
    hostFiles: [],
    notifyReady: false,
    cgroup: null,
    containerManager: 'mctl',
    quiet: true,
    ...overrides,
  };
}

/** A process that still runs (a zombie waiting for this sandbox's slow init to reap it does not). */
function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] !== 'Z';
  } catch {
    return false;
  }
}

/** What a failed or finished start must not leave: mounts and our cgroups. */
const hostState = (): string => launcherHostState(tree, 'nsc', 'mctl-nspawn-t-nsc');

test('/bin/true runs and returns 0; exit N becomes the launcher status', () => {
  const before = hostState();
  const ok = nspawn(['--read-only', '-D', tree, '/bin/true']);
  assert.equal(ok.status, 0, ok.stderr);
  const seven = nspawn(['--read-only', '-D', tree, '/bin/sh', '-c', 'exit 7']);
  assert.equal(seven.status, 7, seven.stderr);
  assert.equal(hostState(), before);
});

test('the container world: PID 1, hostname, API file systems, /dev, devpts, capabilities, environment', () => {
  const script = [
    'echo pid=$$',
    'echo host=$(hostname)',
    'echo env=$container:$container_uuid',
    'awk \'$5=="/proc/sys"{print "procsys="$6}\' /proc/self/mountinfo',
    'awk \'$5=="/sys"{print "sys="$6}\' /proc/self/mountinfo',
    'awk \'$5=="/dev/pts"{print "devpts="$(NF)}\' /proc/self/mountinfo',
    'for n in null zero full random urandom tty net/tun; do test -c /dev/$n && echo dev=$n; done',
    'test -L /dev/ptmx && echo ptmx=$(readlink /dev/ptmx)',
    'grep CapBnd /proc/self/status',
    'echo manager=$(cat /run/host/container-manager)',
    'test -s /run/host/os-release && echo os-release=yes',
    'touch /proc/sys/kernel/hostname 2>/dev/null || echo procsys-write=denied',
    'awk \'$5=="/run" || $5=="/tmp" || $5=="/dev/shm" {print "tmpfs="$5":"$9}\' /proc/self/mountinfo',
    'cat /proc/self/cgroup | grep "^0::"',
    'grep -E "^Sig(Ign|Blk):" /proc/self/status',
  ].join('; ');
  const r = nspawn(['--console=pipe', '--read-only', '-M', 't-nsc-world', '-D', tree, '/bin/sh', '-c', script]);
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout;
  assert.match(out, /^pid=1$/m);
  assert.match(out, /^host=t-nsc-world$/m);
  assert.match(out, /^env=mctl:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/m);
  assert.match(out, /^procsys=ro,/m);
  assert.match(out, /^sys=ro,/m);
  assert.match(out, /^devpts=.*ptmxmode=666/m);
  for (const n of ['null', 'zero', 'full', 'random', 'urandom', 'tty', 'net/tun']) assert.match(out, new RegExp(`^dev=${n}$`, 'm'));
  assert.match(out, /^ptmx=pts\/ptmx$/m);
  // the kept set can only be what this host's own bounding set still has
  const hostBounding = BigInt(`0x${/^CapBnd:\s+([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'}`);
  const mask = (capabilityMask(defaultBoundingSet(false)) & hostBounding).toString(16).padStart(16, '0');
  assert.match(out, new RegExp(`^CapBnd:\\s+${mask}$`, 'm'));
  assert.match(out, /^manager=mctl$/m);
  assert.match(out, /^os-release=yes$/m);
  assert.match(out, /^procsys-write=denied$/m);
  for (const p of ['/run', '/tmp', '/dev/shm']) assert.match(out, new RegExp(`^tmpfs=${p}:tmpfs$`, 'm'));
  assert.match(out, /^0::\/$/m, 'the container sees its own cgroup as the root');
  // nothing of Node's signal setup (SIGPIPE ignored) leaks into the payload
  assert.match(out, /^SigIgn:\s+0000000000000000$/m);
  assert.match(out, /^SigBlk:\s+0000000000000000$/m);
});

test('a command container gets its own cgroup2 directory, delegated; on a hybrid host name=systemd stays read-only', async () => {
  const hybrid = existsSync('/sys/fs/cgroup/unified/cgroup.procs') && existsSync('/sys/fs/cgroup/systemd/cgroup.procs');
  const unified = hybrid ? '/sys/fs/cgroup/unified' : '/sys/fs/cgroup';
  const script = [
    `mkdir ${unified}/t-probe && rmdir ${unified}/t-probe && echo unified=writable`,
    'mkdir /sys/fs/cgroup/systemd/t-probe 2>/dev/null && rmdir /sys/fs/cgroup/systemd/t-probe && echo v1=writable',
    'awk \'$5=="/sys/fs/cgroup/systemd"{print "v1mount="$6}\' /proc/self/mountinfo',
    'echo probed',
    'sleep 30',
  ].join('; ');
  const before = hostState();
  const child = spawn(BIN, ['-q', '--register=no', '--console=pipe', '--read-only', '-M', 't-nsc-cg', '-D', tree, '/bin/sh', '-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => child.on('exit', r));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  try {
    const deadline = Date.now() + 10_000;
    while (!/^probed$/m.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.match(out, /^unified=writable$/m);
    // the host's view of the payload (the supervisor keeps its PID: the payload is its child)
    const leader = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
    const hostView = readFileSync(`/proc/${leader}/cgroup`, 'utf8');
    assert.match(hostView, /^0::\/mctl-nspawn-t-nsc-cg$/m);
    if (hybrid) {
      // a v1 hierarchy has no CLONE_INTO_CGROUP: no migration (an RCU grace period) for it
      assert.match(out, /^v1mount=ro,/m);
      assert.doesNotMatch(out, /v1=writable/);
      const v1 = (text: string): string | undefined => /^\d+:name=systemd:(.*)$/m.exec(text)?.[1];
      assert.equal(v1(hostView), v1(readFileSync('/proc/self/cgroup', 'utf8')));
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
  assert.equal(hostState(), before);
});

test('the seccomp filter refuses what nspawn refuses (keyctl, swapoff) and no_new_privs is applied', () => {
  // perl-base is essential in Debian: raw syscalls without extra tools. swapoff (168) and
  // keyctl (250) on x86-64: EPERM from the filter, a different error without it.
  const probe = [
    'open(my $f, "<", "/proc/self/status"); print grep { /^(Seccomp|NoNewPrivs):/ } <$f>;',
    'my $p = "/nonexistent"; $! = 0; syscall(168, $p); print "swapoff=", $! + 0, "\\n";',
    '$! = 0; syscall(250, 0, 0); print "keyctl=", $! + 0, "\\n";',
  ].join(' ');
  const r = driver(baseSpec(['/usr/bin/perl', '-e', probe], { noNewPrivileges: true }));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Seccomp:\s+2$/m);
  assert.match(r.stdout, /^NoNewPrivs:\s+1$/m);
  assert.match(r.stdout, /^swapoff=1$/m, 'EPERM');
  assert.match(r.stdout, /^keyctl=1$/m, 'EPERM');
  const off = driver(baseSpec(['/usr/bin/perl', '-e', probe], { seccomp: false }));
  assert.match(off.stdout, /^Seccomp:\s+0$/m);
  assert.match(off.stdout, /^NoNewPrivs:\s+0$/m);
  assert.match(off.stdout, /^swapoff=2$/m, 'ENOENT without the filter');
  assert.doesNotMatch(off.stdout, /^keyctl=1$/m);
});

test('--as-pid2 runs the payload as PID 2 under a stub init and keeps its exit status', () => {
  const r = nspawn(['--console=pipe', '--read-only', '-a', '-D', tree, '/bin/sh', '-c', 'echo pid=$$; echo init=$(cat /proc/1/comm); exit 3']);
  assert.equal(r.status, 3, r.stderr);
  assert.match(r.stdout, /^pid=2$/m);
  assert.match(r.stdout, /^init=\(sd-stubinit\)$/m);
});

test('--as-pid2: SIGTERM to the launcher reaches the payload through the stub init', async () => {
  // the stub init waits in sigwaitinfo(); the supervisor must still see it as taking the signal
  const child = spawn(BIN, ['-q', '--register=no', '--console=pipe', '--read-only', '--kill-signal=SIGTERM', '-a', '-D', tree, '/bin/sh', '-c', 'echo up; while :; do sleep 0.1; done'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', () => reject(new Error('the container ended before it was up')));
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('timeout'), 10_000))]);
    assert.equal(code, 128 + 15, 'the payload dies of SIGTERM and the launcher reports 143');
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

test('a bad root gives one line and exit 1, and leaves nothing behind', () => {
  const before = hostState();
  const r = nspawn(['-D', '/nonexistent/t-nsc', '/bin/true']);
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /nonexistent\/t-nsc/);
  // a root that exists but cannot be set up (no /usr, nothing to exec) fails inside the helper
  const empty = mkdtempSync('/tmp/mctl-nsc-empty-');
  try {
    const d = driver(baseSpec(['/bin/true'], { root: empty, readOnlyRoot: false, machineName: 't-nsc-bad', hostname: 't-nsc-bad' }));
    assert.equal(d.status, 1);
    assert.equal(d.stderr.trim().split('\n').length, 1, d.stderr);
    assert.match(d.stderr, /failed to execute \/bin\/true/);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
  assert.equal(hostState(), before);
});

test('SIGTERM to the launcher sends the kill signal (SIGKILL for commands) and the launcher exits', async () => {
  const before = hostState();
  const child = spawn(BIN, ['-q', '--register=no', '--console=pipe', '--read-only', '-M', 't-nsc-term', '-D', tree, '/bin/sleep', '100'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 1500));
  const t0 = Date.now();
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  assert.equal(code, 1, 'a container killed by a signal is a failure, as with nspawn');
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(hostState(), before);
});

test('afterNamespaces hooks get the leader PID before the payload runs; a failing hook aborts cleanly', () => {
  const dir = mkdtempSync('/tmp/mctl-nsc-hook-');
  try {
    const file = `${dir}/pid`;
    const before = hostState();
    const r = driver(baseSpec(['/bin/sh', '-c', 'echo pid=$$; cat /proc/1/cmdline | tr "\\0" " "']), { MCTL_TEST_HOOK_FILE: file });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^pid=1$/m);
    assert.match(readFileSync(file, 'utf8'), /^\d+$/);
    const bad = driver(baseSpec(['/bin/sh', '-c', 'echo should-not-run']), { MCTL_TEST_HOOK_FILE: file, MCTL_TEST_HOOK_FAIL: '1' });
    assert.equal(bad.status, 1);
    assert.doesNotMatch(bad.stdout, /should-not-run/);
    assert.match(bad.stderr, /hook failed on purpose/);
    const pid = Number(readFileSync(file, 'utf8'));
    // the waiting child was killed with the launcher's failure
    const deadline = Date.now() + 3000;
    while (alive(pid) && Date.now() < deadline) spawnSync('sleep', ['0.05']);
    assert.ok(!alive(pid));
    assert.equal(hostState(), before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a user namespace with a fixed map: root inside is a high uid outside', () => {
  const shift = 0x6f000000;
  const dir = mkdtempSync('/tmp/mctl-nsc-userns-');
  try {
    const file = `${dir}/pid`;
    const spec = baseSpec(['/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; cat /proc/self/gid_map; touch /tmp/x && stat -c owner=%u /tmp/x; sleep 1'], {
      rootLayer: 'overlay',
      readOnlyRoot: false,
      namespaces: { privateNetwork: true, userNamespace: { uidShift: shift, uidRange: 65536 } },
      capabilities: { bounding: defaultBoundingSet(true), ambient: [] },
    });
    const r = driver(spec, { MCTL_TEST_HOOK_FILE: file });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).join(' '));
    assert.equal(lines[0], '0');
    assert.equal(lines[1], `0 ${shift} 65536`);
    assert.equal(lines[2], `0 ${shift} 65536`);
    assert.equal(lines[3], 'owner=0');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with a user namespace the container process runs as the shifted uid on the host', async () => {
  const shift = 0x6f010000;
  const spec = baseSpec(['/bin/sleep', '30'], {
    rootLayer: 'overlay',
    readOnlyRoot: false,
    machineName: 't-nsc-uid',
    hostname: 't-nsc-uid',
    namespaces: { privateNetwork: true, userNamespace: { uidShift: shift, uidRange: 65536 } },
  });
  const dir = mkdtempSync('/tmp/mctl-nsc-userns-');
  const child = spawn(process.execPath, ['--import', 'tsx', DRIVER, JSON.stringify(spec)], {
    stdio: 'ignore',
    env: { ...process.env, MCTL_TEST_HOOK_FILE: `${dir}/pid` },
  });
  try {
    let pid = 0;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      if (!existsSync(`${dir}/pid`)) continue;
      pid = Number(readFileSync(`${dir}/pid`, 'utf8'));
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      if (/^Name:\s+sleep$/m.test(status)) break;
    }
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Name:\s+sleep$/m);
    assert.match(status, new RegExp(`^Uid:\\s+${shift}\\s+${shift}\\s+${shift}\\s+${shift}$`, 'm'));
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.on('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('payload identity: user from the container\'s passwd, supplementary groups, chdir, environment, ambient capabilities', () => {
  const r = driver(
    baseSpec(['/bin/sh', '-c', 'id -u; id -g; pwd; echo "$HOME:$USER:$GREETING"; grep -E "^Cap(Amb|Eff):" /proc/self/status'], {
      payload: { kind: 'command', argv: ['/bin/sh', '-c', 'id -u; id -g; pwd; echo "$HOME:$USER:$GREETING"; grep -E "^Cap(Amb|Eff):" /proc/self/status'], asPid2: false, user: 'nobody', chdir: '/tmp', env: { GREETING: 'hi' } },
      capabilities: { bounding: defaultBoundingSet(false), ambient: [10] },
    }),
  );
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines[0], '65534');
  assert.equal(lines[1], '65534');
  assert.equal(lines[2], '/tmp');
  assert.equal(lines[3], '/nonexistent:nobody:hi');
  assert.match(r.stdout, /^CapEff:\s+0000000000000400$/m);
  assert.match(r.stdout, /^CapAmb:\s+0000000000000400$/m);
});

test('SIGKILL of the launcher takes the container down with it and leaves no mounts', async () => {
  const before = hostState().split('\n--\n')[0];
  const child = spawn(BIN, ['-q', '--register=no', '--console=pipe', '--read-only', '-M', 't-nsc-kill', '-D', tree, '/bin/sleep', '100'], { stdio: 'ignore' });
  let leader = 0;
  const deadline = Date.now() + 10_000;
  while (!leader && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    try {
      const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      for (const k of kids) if (readFileSync(`/proc/${k}/comm`, 'utf8').trim() === 'sleep') leader = Number(k);
    } catch {
      // not started yet
    }
  }
  assert.ok(leader > 0, 'the container started');
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  const gone = Date.now() + 5000;
  while (alive(leader) && Date.now() < gone) await new Promise((r) => setTimeout(r, 20));
  assert.ok(!alive(leader), 'the container died with its supervisor');
  assert.equal(hostState().split('\n--\n')[0], before);
});

test('file descriptors the launcher inherited beyond stdio do not reach the payload', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', DRIVER, JSON.stringify(baseSpec(['/bin/sh', '-c', 'test -e /proc/$$/fd/3 && echo leaked || echo clean']))], {
    encoding: 'utf8',
    timeout: 60_000,
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'clean');
});

test('a stop request before PID 1 can take the kill signal is held back, not lost (nspawn drops it)', async () => {
  // PID 1 installs its SIGRTMIN+3 handler only after a second, like an init that is still starting
  const spec = baseSpec(['/bin/bash', '-c', 'sleep 1; trap "exit 0" RTMIN+3; while :; do sleep 0.1; done'], { killSignal: 37, machineName: 't-nsc-early', hostname: 't-nsc-early' });
  const dir = mkdtempSync('/tmp/mctl-nsc-early-');
  const child = spawn(process.execPath, ['--import', 'tsx', DRIVER, JSON.stringify(spec)], { stdio: 'ignore', env: { ...process.env, MCTL_TEST_HOOK_FILE: `${dir}/pid` } });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const deadline = Date.now() + 10_000;
    let pid = 0;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      if (!existsSync(`${dir}/pid`)) continue;
      pid = Number(readFileSync(`${dir}/pid`, 'utf8'));
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'bash') break;
    }
    child.kill('SIGTERM'); // bash is PID 1 and has no handler yet
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 10_000).unref())]);
    assert.equal(code, 0);
  } finally {
    child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('root layers: overlay (writes vanish) and volatile (tmpfs root, the tree\'s /usr read-only)', () => {
  const probe = 'mawk \'$5=="/"{for(i=7;i<=NF;i++) if($i=="-"){print "root="$(i+1); break}}\' /proc/self/mountinfo; touch /t-nsc-file && echo root-writable; touch /usr/t-nsc-file 2>/dev/null || echo usr-ro; test -x /bin/sh && echo bin-ok';
  const overlay = driver(baseSpec(['/bin/sh', '-c', probe], { rootLayer: 'overlay', readOnlyRoot: false }));
  assert.equal(overlay.status, 0, overlay.stderr);
  assert.match(overlay.stdout, /^root=overlay$/m);
  assert.match(overlay.stdout, /^root-writable$/m);
  const vol = driver(baseSpec(['/bin/sh', '-c', probe], { rootLayer: 'volatile', readOnlyRoot: false }));
  assert.equal(vol.status, 0, vol.stderr);
  assert.match(vol.stdout, /^root=tmpfs$/m);
  assert.match(vol.stdout, /^root-writable$/m);
  assert.match(vol.stdout, /^usr-ro$/m);
  assert.match(vol.stdout, /^bin-ok$/m);
  assert.ok(!existsSync(`${tree}/t-nsc-file`) && !existsSync(`${tree}/usr/t-nsc-file`), 'the tree is untouched');
});

test('mount operations apply in order inside the root: bind ro/rw, tmpfs, overlay, inaccessible', () => {
  const dir = mkdtempSync('/tmp/mctl-nsc-mnt-');
  try {
    spawnSync('sh', ['-c', `mkdir -p ${dir}/src ${dir}/lower ${dir}/upper ${dir}/work && echo hi > ${dir}/src/f && echo low > ${dir}/lower/l`]);
    const probe = [
      'cat /mnt/ro/f; touch /mnt/ro/x 2>/dev/null || echo ro-denied',
      'touch /mnt/rw/x && echo rw-ok',
      'grep -E " /mnt/t " /proc/self/mountinfo | grep -o "mode=700"',
      'cat /mnt/ov/l; echo new > /mnt/ov/n && echo ov-ok',
      // an empty mode-0 node over each (root with CAP_DAC_OVERRIDE still opens it: empty)
      'test -s /etc/hostname || echo hidden-file',
      'test -z "$(ls -A /root)" && echo hidden-dir',
    ].join('; ');
    const r = driver(
      baseSpec(['/bin/sh', '-c', probe], {
        rootLayer: 'overlay',
        readOnlyRoot: false,
        mounts: [
          { kind: 'bind', source: `${dir}/src`, destination: '/mnt/ro', readOnly: true, recursive: true },
          { kind: 'bind', source: `${dir}/src`, destination: '/mnt/rw', readOnly: false, recursive: false },
          { kind: 'tmpfs', destination: '/mnt/t', options: 'mode=0700' },
          { kind: 'overlay', destination: '/mnt/ov', lowerDirs: [`${dir}/lower`], upperDir: `${dir}/upper`, workDir: `${dir}/work` },
          { kind: 'inaccessible', destination: '/etc/hostname' },
          { kind: 'inaccessible', destination: '/root' },
        ],
      }),
    );
    assert.equal(r.status, 0, r.stderr);
    const out = r.stdout.split('\n');
    for (const line of ['hi', 'ro-denied', 'rw-ok', 'mode=700', 'low', 'ov-ok', 'hidden-file', 'hidden-dir']) assert.ok(out.includes(line), `${line} in ${r.stdout}`);
    assert.equal(readFileSync(`${dir}/upper/n`, 'utf8'), 'new\n', 'overlay writes land in the upper dir');
    assert.ok(existsSync(`${dir}/src/x`), 'the rw bind writes through');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with a user namespace too, a SIGKILLed supervisor takes the container down (no orphan)', async () => {
  const spec = baseSpec(['/bin/sleep', '100'], {
    rootLayer: 'overlay',
    readOnlyRoot: false,
    machineName: 't-nsc-ukill',
    hostname: 't-nsc-ukill',
    namespaces: { privateNetwork: true, userNamespace: { uidShift: 0x6f020000, uidRange: 65536 } },
  });
  const dir = mkdtempSync('/tmp/mctl-nsc-ukill-');
  const child = spawn(process.execPath, ['--import', 'tsx', DRIVER, JSON.stringify(spec)], { stdio: 'ignore', env: { ...process.env, MCTL_TEST_HOOK_FILE: `${dir}/pid` } });
  const exited = new Promise((r) => child.on('exit', r));
  let pid = 0;
  try {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      if (!existsSync(`${dir}/pid`)) continue;
      pid = Number(readFileSync(`${dir}/pid`, 'utf8'));
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep') break;
    }
    assert.equal(readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'sleep');
    child.kill('SIGKILL');
    await exited;
    const gone = Date.now() + 5000;
    while (alive(pid) && Date.now() < gone) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!alive(pid), 'the container died with its supervisor');
  } finally {
    if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
