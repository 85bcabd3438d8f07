// -U on the real Debian tree: boots to `running` in a picked range with an idmapped root; root
// inside has no power over the host; files land with the image's owners (map) or shifted
// owners (chown); concurrent containers get disjoint ranges.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, readFileSync, readlinkSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { debianTree } from '../helpers/images.js';
import { must, run } from '../helpers/netns.js';
import { LockFile } from '../../src/net/lockfile.js';

const nspawn = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const id = randomBytes(2).toString('hex');
let dir: string;
let root: string;
let loop = '';
const procs: ChildProcess[] = [];

before(() => {
  dir = mkdtempSync('/tmp/mctl-userns-');
  root = `${dir}/root`;
  // Not must(): its 20 s limit is too short for a full copy on a busy machine.
  const cp = spawnSync('cp', ['-a', '--reflink=auto', debianTree(), root], { encoding: 'utf8', timeout: 180_000 });
  if (cp.status !== 0) throw new Error(`cp -a ${debianTree()} ${root}: ${cp.stderr || cp.signal}`);
  must(['truncate', '-s', '8M', `${dir}/disk.img`]);
  must(['mkfs.ext4', '-q', `${dir}/disk.img`]);
  loop = must(['losetup', '-f', '--show', `${dir}/disk.img`]).trim();
});

after(() => {
  for (const p of procs) p.kill('SIGKILL');
  if (loop) run(['losetup', '-d', loop]);
  rmSync(dir, { recursive: true, force: true });
});

const exited = (p: ChildProcess): Promise<unknown> => (p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((res) => p.once('exit', res)));

/**
 * The container's PID 1 once it runs `comm`: the launcher's child in another PID namespace. Not
 * earlier: right after the clone its uid_map is still empty and its mount namespace not yet
 * pivoted (nsenter would land in a half-built world: a race that once made this file flaky).
 */
function leaderOf(supervisor: number, comm: string, timeoutMs = 60_000): number {
  const deadline = Date.now() + timeoutMs;
  const ours = readlinkSync('/proc/self/ns/pid');
  while (Date.now() < deadline) {
    if (!existsSync(`/proc/${supervisor}`)) throw new Error('the launcher exited before the container started');
    const kids = run(['pgrep', '-P', String(supervisor)]).stdout.trim().split('\n').filter(Boolean).map(Number);
    for (const k of kids) {
      try {
        if (readlinkSync(`/proc/${k}/ns/pid`) !== ours && readFileSync(`/proc/${k}/comm`, 'utf8').trim() === comm) return k;
      } catch {
        /* gone meanwhile */
      }
    }
    spawnSyncSleep(20);
  }
  throw new Error(`no container leader running ${comm} after ${timeoutMs} ms`);
}

function spawnSyncSleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const inside = (leader: number, script: string, timeoutMs = 20_000) => {
  const r = spawnSync('nsenter', ['-t', String(leader), '-a', '--', '/bin/sh', '-c', script], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.signal ? `(killed: ${r.signal} after ${timeoutMs} ms)` : '') };
};

test('-U boots the Debian tree to running; root inside cannot touch the host; files keep the image owners (map)', async () => {
  const name = `t-userns-${id}`;
  const p = spawn(nspawn, ['-q', '--register=no', '--console=pipe', '-U', '-b', '-D', root, '-M', name, `--bind=${loop}:/dev/testdisk`], { stdio: ['ignore', 'ignore', 'inherit'] });
  procs.push(p);
  const leader = leaderOf(p.pid!, 'systemd');
  const map = readFileSync(`/proc/${leader}/uid_map`, 'utf8').trim().split(/\s+/).map(Number);
  assert.equal(map[0], 0);
  assert.ok(map[1]! >= 0x80000 && map[1]! <= 0x6fff0000 && map[1]! % 0x10000 === 0, `picked shift ${map[1]}`);
  assert.equal(map[2], 0x10000);
  // Poll until the container's manager answers on its bus (its socket comes up a moment after
  // PID 1 starts; on a busy machine much later), then wait for the boot to finish.
  // (`--wait` blocks until the boot ends: give it the whole budget, not the usual 20 s.)
  const deadline = Date.now() + 120_000;
  const boot = (): ReturnType<typeof inside> => inside(leader, 'systemctl is-system-running --wait', Math.max(1000, deadline - Date.now()));
  let state = boot();
  while (Date.now() < deadline && /Failed to connect to bus|offline/.test(state.stderr + state.stdout)) {
    spawnSyncSleep(250);
    state = boot();
  }
  // On failure say which units failed and why (a bare 'degraded' tells nothing).
  const why = state.stdout.trim() === 'running' ? '' : inside(leader, 'systemctl --failed --no-legend --no-pager; journalctl -b -p warning --no-pager | tail -n 40').stdout;
  assert.equal(state.stdout.trim(), 'running', `${state.stdout}${state.stderr}\n${why}`);

  // Root inside: uid 0 there, but mounting a host block device is refused…
  const mnt = inside(leader, 'id -u; mount /dev/testdisk /mnt');
  assert.equal(mnt.stdout.trim(), '0');
  assert.notEqual(mnt.status, 0);
  assert.match(mnt.stderr, /permission denied|not permitted|must be superuser/i);
  // …host sysctls cannot be changed, not even through a fresh procfs…
  // (Writing the current value back: harmless to the host even if isolation were broken.)
  const before = readFileSync('/proc/sys/vm/swappiness', 'utf8').trim();
  const sys = inside(leader, `mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo ${before} > /tmp/p/sys/vm/swappiness`);
  assert.notEqual(sys.status, 0, 'writing a host sysctl must fail');
  assert.match(sys.stderr, /permission denied|read-only|not permitted/i);
  assert.equal(readFileSync('/proc/sys/vm/swappiness', 'utf8').trim(), before);
  // …and no host process is visible.
  const ps = inside(leader, 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " "');
  assert.doesNotMatch(ps.stdout, /mctl-nsexec|node .*test/);
  assert.match(ps.stdout, /systemd/);

  const made = inside(leader, 'touch /root/made-inside && stat -c %u /root/made-inside');
  assert.equal(made.stdout.trim(), '0');
  assert.equal(statSync(`${root}/root/made-inside`).uid, 0, 'map: on disk the image owner, not the shifted one');
  assert.equal(statSync(root).uid, 0, 'map leaves the tree unshifted');

  p.kill('SIGTERM'); // SIGRTMIN+3 to systemd: a clean poweroff
  await exited(p);
  assert.equal(p.exitCode, 0);
});

test('chown ownership: one recursive shift, files created inside show shifted owners', () => {
  const res = run([nspawn, '-q', '--register=no', '--console=pipe', '--private-users=pick', '--private-users-ownership=chown', '-D', root, '-M', `t-userns-${id}-c`,
    '/bin/sh', '-c', 'touch /root/made-chown; stat -c %u /root/made-chown; cat /proc/self/uid_map']);
  assert.equal(res.status, 0, res.stderr);
  const [uidInside, mapLine] = res.stdout.trim().split('\n');
  assert.equal(uidInside, '0');
  const shift = Number(mapLine!.trim().split(/\s+/)[1]);
  assert.equal(statSync(`${root}/root/made-chown`).uid, shift);
  assert.equal(statSync(root).uid, shift, 'the shift is recorded by the root owner');
  assert.equal(statSync(`${root}/usr/bin/passwd`).mode & 0o7777, 0o4755, 'setuid kept');
  assert.equal(statSync(`${root}/usr/bin/passwd`).uid, shift);
  // auto on a chowned tree keeps using chown, and the same range (first guess = the owner).
  const again = run([nspawn, '-q', '--register=no', '--console=pipe', '-U', '-D', root, '-M', `t-userns-${id}-d`, '/bin/cat', '/proc/self/uid_map']);
  assert.equal(again.status, 0, again.stderr);
  assert.equal(Number(again.stdout.trim().split(/\s+/)[1]), shift);
});

test('three -U containers at once get disjoint ranges; locks are gone afterwards', async () => {
  const ps = [0, 1, 2].map((i) =>
    // --timezone/--resolv-conf off: with --read-only they become bind mounts, and the runtime's
    // mount-point creation follows the tree's absolute /etc/localtime symlink onto the host.
    spawn(nspawn, ['-q', '--register=no', '--console=pipe', '--read-only', '--timezone=off', '--resolv-conf=off', '--private-users=pick', '--private-users-ownership=map', '-D', debianTree(), '-M', `t-userns-${id}-p${i}`, '/bin/sleep', '3'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    }),
  );
  procs.push(...ps);
  const shifts = ps.map((p) => Number(readFileSync(`/proc/${leaderOf(p.pid!, 'sleep')}/uid_map`, 'utf8').trim().split(/\s+/)[1]));
  assert.equal(new Set(shifts).size, 3, shifts.join(' '));
  // OFD locks, the kind systemd takes (flock(1) would not see them: BSD locks are separate).
  for (const s of shifts) assert.equal(LockFile.tryAcquire(`/run/systemd/nspawn-uid/${s}`), null, `lock for ${s} held`);
  await Promise.all(ps.map(exited));
  for (const s of shifts) {
    const l = LockFile.tryAcquire(`/run/systemd/nspawn-uid/${s}`);
    assert.ok(l, `lock for ${s} released`);
    l.release();
  }
});

test('-U leaves nothing in the mount table: before, while running and after, identical (also with a shared /)', () => {
  // A private mount namespace of our own, so mounts made by others on this machine meanwhile
  // cannot show up; / is made shared in it, as on every systemd host.
  const gate = `${dir}/gate`;
  must(['mkdir', '-m', '0777', gate]);
  const script = `
    mount --make-rshared /
    cat /proc/self/mountinfo > ${dir}/mi-before
    ${nspawn} -q --register=no --console=pipe --read-only --timezone=off --resolv-conf=off -U -D ${debianTree()} -M t-userns-${id}-m \\
      --bind=${gate}:/mnt /bin/sh -c 'touch /mnt/up; while [ ! -e /mnt/go ]; do sleep 0.05; done' &
    while [ ! -e ${gate}/up ] && kill -0 $! 2>/dev/null; do sleep 0.05; done
    cat /proc/self/mountinfo > ${dir}/mi-during
    touch ${gate}/go
    wait $! || exit 9
    cat /proc/self/mountinfo > ${dir}/mi-after`;
  const r = run(['unshare', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', script]);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(`${gate}/up`), 'the container ran');
  // Mount entries without the superblock options (those belong to file systems shared with the
  // rest of the machine, where other jobs may remount them meanwhile).
  const table = (f: string): string[] => readFileSync(`${dir}/${f}`, 'utf8').trim().split('\n').map((l) => {
    const [mnt = '', sb = ''] = l.split(' - ');
    return `${mnt} - ${sb.split(' ').slice(0, 2).join(' ')}`;
  });
  const diff = (a: string[], b: string[]): string => [...a.filter((l) => !b.includes(l)).map((l) => `- ${l}`), ...b.filter((l) => !a.includes(l)).map((l) => `+ ${l}`)].join('\n');
  const before = table('mi-before');
  assert.equal(diff(before, table('mi-during')), '', 'nothing of the container in our mount table while it runs');
  assert.equal(diff(before, table('mi-after')), '', 'nothing left after it ended');
});

test('-U: bind mounts from places the container\'s root could not reach (a 0700 directory) work, files and directories', () => {
  const hidden = `${dir}/hidden`; // below mkdtemp's 0700 directory
  must(['mkdir', '-p', `${hidden}/d`]);
  must(['sh', '-c', `echo in-dir > ${hidden}/d/f; echo single > ${hidden}/single`]);
  const r = run([nspawn, '-q', '--register=no', '--console=pipe', '--read-only', '--timezone=off', '--resolv-conf=off', '-U', '-D', debianTree(), '-M', `t-userns-${id}-b`,
    // Targets that exist in the tree: the cached tree is shared, and a missing target would be created in it.
    `--bind=${hidden}/d:/srv`, `--bind-ro=${hidden}/single:/etc/debian_version`, '/bin/sh', '-c', 'cat /srv/f /etc/debian_version; stat -c %U /srv; ls /run']);
  assert.equal(r.status, 0, r.stderr);
  // Host owners stay as they are (root of the host is nobody inside), as nspawn's plain binds.
  assert.deepEqual(r.stdout.trim().split('\n'), ['in-dir', 'single', 'nobody', 'host']);
});
