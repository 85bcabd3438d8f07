// bin/mctl-nspawn --image boots the recipe's Debian tree from disk images to `running`: a bare
// ext4 file system, a GPT disk (DPS root), an MBR disk and a squashfs (with --ephemeral); registers
// with mctl-machined; holds the image lock while it runs; fails cleanly on bad images; and leaves
// no loop device, mount or staging tmpfs behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, createReadStream, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { STAGING_DIR } from '../../src/image/mount.js';
import { removeImage, renameImage } from '../../src/image/store.js';
import { debianImage, copyImage, type RawImageKind, imageResidue, settledResidue, type ImageResidue } from '../helpers/raw-images.js';
import { setup, type Env } from './machined-harness.js';

const NSPAWN = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
let dir = '';
let pool = '';

before(() => {
  dir = mkdtempSync('/tmp/mctl-image-boot-');
  pool = join(dir, 'pool');
  execFileSync('mkdir', ['-p', pool]);
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const residue = (): ImageResidue => imageResidue(dir);

/** Autoclear runs when the container's namespace dies, just after the launcher exits: poll briefly. */
async function assertCleanSoon(clean: ImageResidue): Promise<void> {
  assert.deepEqual(await settledResidue(dir, clean), clean);
}

interface Running {
  proc: ChildProcess;
  exited: Promise<number | null>;
  leader(): number;
  stop(): Promise<void>;
}

function launch(args: string[], env: NodeJS.ProcessEnv = {}): Running {
  const full = { ...process.env, ...env };
  if (!env['DBUS_SYSTEM_BUS_ADDRESS']) delete full['DBUS_SYSTEM_BUS_ADDRESS'];
  const proc = spawn(NSPAWN, ['-q', '--console=pipe', ...args], { env: full, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    exited,
    leader() {
      // The launcher execve()s into the native supervisor: same PID, the container is its child.
      const out = spawnSync('pgrep', ['-P', String(proc.pid)], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
      return out ? Number(out) : 0;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
      if (code === 'timeout') proc.kill('SIGKILL');
      await exited;
      if (stderr.trim()) process.stderr.write(`mctl-nspawn said: ${stderr}`);
    },
  };
}

async function waitRunning(r: Running, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let state = '';
  while (Date.now() < deadline) {
    if (r.proc.exitCode !== null) throw new Error(`mctl-nspawn exited with ${r.proc.exitCode} before the boot finished`);
    const leader = r.leader();
    if (leader) {
      state = spawnSync('nsenter', ['-t', String(leader), '-m', '-p', '--', 'systemctl', 'is-system-running'], { encoding: 'utf8' }).stdout.trim();
      if (state === 'running' || state === 'degraded') return state;
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no running state within ${timeoutMs} ms (last: ${state || 'none'})`);
}

function inContainer(r: Running, script: string): string {
  return execFileSync('nsenter', ['-t', String(r.leader()), '-m', '-u', '-p', '--', '/bin/sh', '-c', script], { encoding: 'utf8' }).trim();
}

function nspawnOnce(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stderr: string; stdout: string } {
  const full = { ...process.env, ...env };
  delete full['DBUS_SYSTEM_BUS_ADDRESS'];
  const r = spawnSync(NSPAWN, ['-q', '--console=pipe', '--register=no', ...args], { env: full, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

for (const kind of ['ext4', 'mbr'] as const satisfies readonly RawImageKind[]) {
  test(`${kind} image boots to running and leaves nothing behind`, async () => {
    const image = copyImage(debianImage(kind), join(dir, `t-img-${kind}.raw`));
    const clean = residue();
    const r = launch(['--register=no', '-b', `--image=${image}`]);
    try {
      assert.equal(await waitRunning(r), 'running');
      assert.match(inContainer(r, 'findmnt -n -o SOURCE,FSTYPE /'), /^\/dev\/loop\d+ +ext4$/);
      // The host-side staging tree was detached once the container had its own copy.
      assert.deepEqual(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(STAGING_DIR)), []);
    } finally {
      await r.stop();
    }
    await assertCleanSoon(clean);
  });
}

test('GPT image boots to running, registers with mctl-machined, and is locked while it runs', async () => {
  let env: Env | undefined;
  const name = 't-img-gpt';
  try {
    env = await setup();
    const poolDir = env.env['MCTL_POOL'] as string;
    const image = copyImage(debianImage('gpt'), join(poolDir, `${name}.raw`));
    const clean = residue();
    // -M NAME alone finds NAME.raw in the pool (what `mctl start NAME` runs).
    const r = launch(['-b', '-M', name], { ...env.env });
    try {
      assert.equal(await waitRunning(r), 'running');
      const path = (await env.manager('GetMachine', 's', [name])).body[0];
      assert.equal(path, `/org/freedesktop/machine1/machine/t_2dimg_2dgpt`);
      const images = (await env.manager('ListImages')).body[0] as Array<[string, string, boolean]>;
      assert.ok(images.some(([n, type, ro]) => n === name && type === 'raw' && ro === false), JSON.stringify(images, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)));
      // In use: the store refuses to remove or rename it, and a second launcher refuses to start.
      process.env['MCTL_POOL'] = poolDir;
      await assert.rejects(removeImage(name), /is in use/);
      await assert.rejects(renameImage(name, 't-img-gpt2'), /is in use/);
      const second = nspawnOnce([`--image=${image}`, '/bin/true']);
      assert.notEqual(second.status, 0);
      assert.match(second.stderr, /^mctl-nspawn: image .* is in use[^\n]*\n$/);
    } finally {
      delete process.env['MCTL_POOL'];
      await r.stop();
    }
    await assertCleanSoon(clean);
    process.env['MCTL_POOL'] = poolDir;
    try {
      await removeImage(name); // free again once the machine is gone
    } finally {
      delete process.env['MCTL_POOL'];
    }
    assert.throws(() => statSync(image));
  } finally {
    await env?.close();
  }
});

test('squashfs image boots to running with --ephemeral', async () => {
  const image = debianImage('squashfs');
  const clean = residue();
  const r = launch(['--register=no', '-b', '-x', `--image=${image}`]);
  try {
    assert.equal(await waitRunning(r), 'running');
    assert.match(inContainer(r, 'findmnt -n -o FSTYPE /'), /^overlay$/);
  } finally {
    await r.stop();
  }
  await assertCleanSoon(clean);
});

test('squashfs image without options boots to running: read-only root, an empty tmpfs on /var (as --volatile=state)', async () => {
  // Stock nspawn boots it read-only as a whole: this Debian guest then ends "degraded"
  // (systemd-logind cannot create /var/lib/systemd/linger).
  const image = debianImage('squashfs');
  const clean = residue();
  const r = launch(['--register=no', '-b', `--image=${image}`]);
  try {
    assert.equal(await waitRunning(r), 'running');
    assert.match(inContainer(r, 'findmnt -n -o FSTYPE,OPTIONS /'), /^squashfs +ro,/);
    assert.equal(inContainer(r, 'findmnt -n -o FSTYPE /var'), 'tmpfs');
    assert.equal(inContainer(r, 'systemctl is-active systemd-logind'), 'active');
  } finally {
    await r.stop();
  }
  await assertCleanSoon(clean);
});

test('--volatile=overlay on a squashfs image boots to running with a writable throw-away root', async () => {
  const image = debianImage('squashfs');
  const clean = residue();
  const r = launch(['--register=no', '-b', '--volatile=overlay', `--image=${image}`]);
  try {
    assert.equal(await waitRunning(r), 'running');
    assert.equal(inContainer(r, 'findmnt -n -o FSTYPE /'), 'overlay');
    assert.equal(inContainer(r, 'echo x > /t-img-w && cat /t-img-w'), 'x');
  } finally {
    await r.stop();
  }
  await assertCleanSoon(clean);
});

test('--volatile=state on a writable GPT image: attached read-only, /var a tmpfs, the image file untouched', async () => {
  const image = copyImage(debianImage('gpt'), join(dir, 't-img-state.raw'));
  const before = await sha256(image);
  const clean = residue();
  const r = nspawnOnce(['--volatile=state', `--image=${image}`, '/bin/sh', '-c', 'findmnt -n -o OPTIONS /; findmnt -n -o FSTYPE /var; touch /etc/t-img 2>&1']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stdout, /^ro,.*\ntmpfs\n.*Read-only file system/);
  await assertCleanSoon(clean);
  assert.equal(await sha256(image), before);
});

test('a raw image without write bits (mctl read-only) is attached read-only, also for root', async () => {
  const image = copyImage(debianImage('gpt'), join(dir, 't-img-nowrite.raw'));
  chmodSync(image, 0o444);
  const before = await sha256(image);
  const clean = residue();
  const r = nspawnOnce([`--image=${image}`, '/bin/sh', '-c', 'findmnt -n -o OPTIONS /; findmnt -n -o FSTYPE /var']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^ro,.*\ntmpfs\n$/);
  await assertCleanSoon(clean);
  assert.equal(await sha256(image), before);
});

test('a /usr-only GPT image runs from an empty tmpfs root with its usr partition at /usr', async () => {
  const image = copyImage(debianImage('usr'), join(dir, 't-img-usr.raw'));
  const clean = residue();
  const r = nspawnOnce([`--image=${image}`, '/bin/sh', '-c', 'findmnt -n -o FSTYPE /; findmnt -n -o SOURCE,FSTYPE /usr; readlink /bin /lib; touch /t-img && echo root-writable']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^tmpfs\n\/dev\/loop\d+ +ext4\nusr\/bin\nusr\/lib\nroot-writable\n$/);
  await assertCleanSoon(clean);
  // It boots; with an empty /etc the only unit that fails is systemd-firstboot, as with stock
  // systemd-nspawn --volatile=yes on the same tree (no terminal to ask its questions on).
  const boot = launch(['--register=no', '-b', `--image=${image}`]);
  try {
    assert.match(await waitRunning(boot), /^(running|degraded)$/);
    assert.match(inContainer(boot, 'systemctl --failed --plain --no-legend | cut -d" " -f1'), /^(systemd-firstboot\.service)?$/);
  } finally {
    await boot.stop();
  }
  await assertCleanSoon(clean);
});

test('--image-policy: allowed images run; a refused one is one line, with nothing attached or mounted', async () => {
  const image = debianImage('gpt');
  const clean = residue();
  const ok = nspawnOnce(['--read-only', '--image-policy=root=unprotected+ext4:=absent', `--image=${image}`, '/bin/true']);
  assert.equal(ok.status, 0, ok.stderr);
  const refused: Array<[string, RegExp]> = [
    ['root=verity+signed', /allows the root partition only as verity\+signed; root partition 1 is unprotected/],
    ['root=unprotected+squashfs', /allows squashfs for the root partition; root partition 1 is ext4/],
    ['root=unprotected:home=unprotected', /requires a home partition \(as unprotected\); the image has none/],
    ['root=safe', /^mctl-nspawn: invalid image policy 'root=safe': unknown flag 'safe'/],
  ];
  for (const [policy, why] of refused) {
    const r = nspawnOnce(['--read-only', `--image-policy=${policy}`, `--image=${image}`, '/bin/true']);
    assert.equal(r.status, 1, policy);
    assert.match(r.stderr, why);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
  }
  await assertCleanSoon(clean);
});

test('--ephemeral on a GPT image: writes vanish and the image file is untouched', async () => {
  const image = debianImage('gpt');
  const before = { hash: await sha256(image), mtime: statSync(image).mtimeMs };
  const clean = residue();
  const r = nspawnOnce(['-x', `--image=${image}`, '/bin/sh', '-c', 'echo scratch > /etc/t-img-scratch && cat /etc/t-img-scratch']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'scratch');
  await assertCleanSoon(clean);
  assert.deepEqual({ hash: await sha256(image), mtime: statSync(image).mtimeMs }, before);
  const again = nspawnOnce(['-x', `--image=${image}`, '/bin/sh', '-c', 'test -e /etc/t-img-scratch && echo still-there || echo gone']);
  assert.equal(again.stdout.trim(), 'gone');
});

test('--read-only image: the container cannot write to its root', async () => {
  const image = copyImage(debianImage('ext4'), join(dir, 't-img-ro.raw'));
  const r = nspawnOnce(['--read-only', '--resolv-conf=off', '--timezone=off', `--image=${image}`, '/bin/sh', '-c', 'touch /t-img 2>&1; findmnt -n -o OPTIONS /']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Read-only file system/);
  assert.match(r.stdout, /^ro,/m);
});

function badDisk(name: string, script: string, mutate: (path: string) => void): string {
  const path = join(dir, name);
  closeSync(openSync(path, 'w'));
  truncateSync(path, 16 << 20);
  execFileSync('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', path], { input: script, stdio: ['pipe', 'ignore', 'pipe'] });
  mutate(path);
  return path;
}

function stomp(path: string, offset: number, text: string): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.from(text), 0, text.length, offset);
  closeSync(fd);
}

test('bad images: one line on stderr, non-zero exit, nothing attached or mounted', async () => {
  const root = process.arch === 'arm64' ? 'b921b045-1df0-41c3-af44-4c6f280d3fae' : '4f68bce3-e8cd-4db1-96e7-fbcaf984b709';
  const corrupt = badDisk('t-img-corrupt.raw', `label: gpt\nstart=2048, size=8192, type=${root}\n`, (p) => {
    stomp(p, 512 + 24, 'garbage!');
    stomp(p, (16 << 20) - 512 + 24, 'garbage!');
  });
  const noRoot = badDisk('t-img-noroot.raw', `label: gpt\nstart=2048, size=8192, type=933ac7e1-2eb4-4f13-b844-0e14e2aef915\n`, () => undefined);
  const truncated = copyImage(debianImage('gpt'), join(dir, 't-img-truncated.raw'));
  truncateSync(truncated, 64 << 20);
  // A valid image that cannot boot: the start fails after the image was mounted.
  const noInitTree = mkdtempSync(join(dir, 'noinit-'));
  execFileSync('sh', ['-c', `mkdir -p ${noInitTree}/etc ${noInitTree}/usr && echo ID=t-img > ${noInitTree}/etc/os-release`]);
  const noInit = join(dir, 't-img-noinit.raw');
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', noInitTree, noInit, '8M'], { stdio: 'ignore' });
  const cases: Array<[string, RegExp]> = [
    [noInit, /has no init/],
    [corrupt, /corrupt GPT/],
    [noRoot, /has no root partition/],
    [truncated, /image is truncated/],
    [join(dir, 'missing.raw'), /no such file/],
  ];
  const clean = residue();
  for (const [image, why] of cases) {
    const r = nspawnOnce(['-b', `--image=${image}`]);
    assert.notEqual(r.status, 0, image);
    assert.match(r.stderr, /^mctl-nspawn: [^\n]+\n$/, `one line for ${image}: ${r.stderr}`);
    assert.match(r.stderr, why);
    await assertCleanSoon(clean);
  }
});

test('multi-partition GPT: home is mounted from its own partition, -x gives it its own throw-away layer', async () => {
  const fsImage = debianImage('ext4');
  const fsSectors = Math.ceil(statSync(fsImage).size / 512);
  const root = process.arch === 'arm64' ? 'b921b045-1df0-41c3-af44-4c6f280d3fae' : '4f68bce3-e8cd-4db1-96e7-fbcaf984b709';
  const img = join(dir, 't-img-multi.raw');
  closeSync(openSync(img, 'w'));
  truncateSync(img, (fsSectors + 2048 + 32768 + 2048) * 512);
  execFileSync('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', img], {
    input: `label: gpt\nstart=2048, size=${fsSectors}, type=${root}\nsize=32768, type=933ac7e1-2eb4-4f13-b844-0e14e2aef915\n`,
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  execFileSync('dd', [`if=${fsImage}`, `of=${img}`, 'bs=1M', `seek=${2048 * 512}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
  const homeTree = mkdtempSync(join(dir, 'home-'));
  execFileSync('sh', ['-c', `echo from-home-partition > ${homeTree}/marker`]);
  const homeFs = join(dir, 'home.ext4');
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', homeTree, homeFs, '16M'], { stdio: 'ignore' });
  execFileSync('dd', [`if=${homeFs}`, `of=${img}`, 'bs=1M', `seek=${(2048 + fsSectors) * 512}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none']);
  const clean = residue();
  const plain = nspawnOnce([`--image=${img}`, '/bin/sh', '-c', 'cat /home/marker; findmnt -n -o FSTYPE /home']);
  assert.equal(plain.status, 0, plain.stderr);
  assert.deepEqual(plain.stdout.trim().split('\n').map((l) => l.trim()), ['from-home-partition', 'ext4']);
  const eph = nspawnOnce(['-x', `--image=${img}`, '/bin/sh', '-c', 'echo scratch > /home/new && cat /home/new /home/marker; findmnt -n -o FSTYPE /home']);
  assert.equal(eph.status, 0, eph.stderr);
  assert.deepEqual(eph.stdout.trim().split('\n').map((l) => l.trim()), ['scratch', 'from-home-partition', 'overlay']);
  const after = nspawnOnce([`--image=${img}`, '/bin/sh', '-c', 'ls /home']);
  assert.equal(after.stdout.trim(), 'lost+found\nmarker');
  await assertCleanSoon(clean);
});

test('a start that fails in the launch hooks (registration without a bus) leaves nothing behind', async () => {
  const image = copyImage(debianImage('ext4'), join(dir, 't-img-hookfail.raw'));
  const clean = residue();
  const r = spawnSync(NSPAWN, ['-q', '--console=pipe', '--register=yes', `--image=${image}`, '/bin/true'], {
    env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${join(dir, 'no-such-bus')}` },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /^mctl-nspawn: [^\n]+\n$/);
  await assertCleanSoon(clean);
  // And the lock was released: the image can be used again at once.
  const again = nspawnOnce([`--image=${image}`, '/bin/true']);
  assert.equal(again.status, 0, again.stderr);
});

test('a block device as --image (here a read-only loop device of the GPT image)', async () => {
  const dev = execFileSync('losetup', ['--find', '--show', '--read-only', debianImage('gpt')], { encoding: 'utf8' }).trim();
  try {
    const r = nspawnOnce(['-x', `--image=${dev}`, '/bin/sh', '-c', 'findmnt -n -o FSTYPE /; . /etc/os-release; echo $ID']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['overlay', 'debian']);
  } finally {
    spawnSync('losetup', ['-d', dev]);
  }
});

test('images work with a private user namespace (-U) and a veth link (-n)', async () => {
  const image = copyImage(debianImage('gpt'), join(dir, 't-img-userns.raw'));
  const clean = residue();
  const u = nspawnOnce(['-U', '-M', 't-img-u', `--image=${image}`, '/bin/sh', '-c', 'cat /proc/self/uid_map; id -u; stat -c %u /etc/hostname']);
  assert.equal(u.status, 0, u.stderr);
  const [map, uid, owner] = u.stdout.trim().split('\n').map((l) => l.trim());
  const [inner, outer] = (map ?? '').split(/\s+/).map(Number);
  assert.equal(inner, 0);
  assert.ok((outer ?? 0) > 0, `shifted: ${map}`);
  assert.equal(uid, '0');
  assert.equal(owner, '0', 'files owned by root inside the container');
  const n = nspawnOnce(['-n', '-M', 't-img-n', `--image=${image}`, '/bin/sh', '-c', 'ip -br link show host0']);
  assert.equal(n.status, 0, n.stderr);
  assert.match(n.stdout, /^host0@/);
  await assertCleanSoon(clean);
});
