// Boot-to-`running` of the Debian recipe tree from a raw GPT disk image (ext4 root partition of
// the Discoverable Partitions root type): mctl-nspawn --image=FILE versus systemd-nspawn.
//
// Stock systemd-nspawn --image=FILE cannot run on this kind of host (no udev: "--image= requires
// access to the host's /run/ hierarchy, since we need access to udev"); the benchmark tries it
// once and prints its answer. The reference is therefore stock systemd-nspawn -D on an identical
// copy of the image file, mounted once beforehand (loop + mount outside its timing), so the
// reference does strictly less work than ours: our figure includes dissecting, attaching and
// mounting the image.
//
// "running" = `systemctl is-system-running` inside the container says running (polled every
// 25 ms through nsenter, the same way for both); a boot ending "degraded" is counted and reported. Needs root and a built tree (npm run build).
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compare } from './lib.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const nspawn = join(root, 'bin/mctl-nspawn');

function cachedImage() {
  const tree = execFileSync('bash', [join(root, 'images/build.sh'), 'debian'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  return execFileSync('bash', [join(root, 'test/helpers/raw-images.sh'), 'gpt', tree], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const degraded = new Map();

/** Start argv, return ms until the container's systemd says running; then stop it (untimed). */
async function bootToRunning(argv) {
  const t0 = process.hrtime.bigint();
  const env = { ...process.env };
  delete env.DBUS_SYSTEM_BUS_ADDRESS;
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((r) => proc.once('exit', r));
  let ms = 0;
  try {
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`${argv.join(' ')} exited with ${proc.exitCode}: ${stderr.trim()}`);
      const leader = spawnSync('pgrep', ['-P', String(proc.pid)], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
      if (leader) {
        const state = spawnSync('nsenter', ['-t', leader, '-m', '-p', '--', 'systemctl', 'is-system-running'], { encoding: 'utf8' }).stdout.trim();
        if (state === 'running' || state === 'degraded') {
          ms = Number(process.hrtime.bigint() - t0) / 1e6;
          // Under heavy load a unit may time out: the boot still finished; count it and say so.
          if (state !== 'running') degraded.set(argv[0], (degraded.get(argv[0]) ?? 0) + 1);
          break;
        }
      }
      if (Number(process.hrtime.bigint() - t0) / 1e6 > 120_000) throw new Error('no boot within 120 s');
      await sleep(25);
    }
  } finally {
    proc.kill('SIGTERM');
    await exited;
  }
  return ms;
}

export default async function run() {
  const dir = mkdtempSync('/tmp/mctl-image-bench-');
  // Two identical copies: a file must never be mounted read-write twice at once.
  const source = cachedImage();
  const image = join(dir, 'bench-img.raw');
  const refImage = join(dir, 'bench-img-ref.raw');
  execFileSync('cp', ['--sparse=always', source, image]);
  execFileSync('cp', ['--sparse=always', source, refImage]);
  const stock = spawnSync('systemd-nspawn', ['-q', '--register=no', '--keep-unit', `--image=${image}`, '/bin/true'], { encoding: 'utf8' });
  console.log(`stock systemd-nspawn --image on this host: exit ${stock.status}: ${stock.stderr.trim().split('\n').pop()}`);
  console.log('reference below: stock systemd-nspawn -D on an identical copy of the image file, mounted beforehand (untimed)');

  // Mount the reference copy with plain util-linux tools: partition 1 at its offset.
  const dump = execFileSync('sfdisk', ['--json', refImage], { encoding: 'utf8' });
  const part = JSON.parse(dump).partitiontable.partitions[0];
  const mnt = join(dir, 'mnt');
  execFileSync('mkdir', [mnt]);
  const fresh = join(dir, 'bench-img-fresh.raw');
  execFileSync('cp', ['--sparse=always', source, fresh]);
  const freshMnt = join(dir, 'fresh-mnt');
  execFileSync('mkdir', [freshMnt]);
  const loop = execFileSync('losetup', ['--find', '--show', '--offset', String(part.start * 512), '--sizelimit', String(part.size * 512), refImage], { encoding: 'utf8' }).trim();
  try {
    execFileSync('mount', [loop, mnt]);
    try {
      return [
        await compare({
          name: 'boot-to-running from a GPT raw image: mctl-nspawn --image vs systemd-nspawn -D (pre-mounted)',
          ours: () => bootToRunning([nspawn, '-q', '--register=no', '--console=pipe', '-b', '-M', 'bench-img', `--image=${image}`]),
          reference: () => bootToRunning(['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--console=pipe', '-b', '-M', 'bench-img-ref', '-D', mnt]),
          runs: 6,
          warmup: 1,
        }),
        // Closest stand-in for stock `nspawn --image` on a udev host: stock nspawn -D, with the
        // loop attach + mount of a fresh copy of the same image inside its timing (as --image
        // would; its dissect/udev/fsck steps are not counted). Both sides then start from a cold
        // file-system cache of the image, which the pre-mounted reference above does not.
        await compare({
          name: 'boot-to-running: mctl-nspawn --image vs losetup + mount + systemd-nspawn -D',
          ours: () => bootToRunning([nspawn, '-q', '--register=no', '--console=pipe', '-b', '-M', 'bench-img', `--image=${image}`]),
          reference: async () => {
            const t0 = process.hrtime.bigint();
            const dev = execFileSync('losetup', ['--find', '--show', '--offset', String(part.start * 512), '--sizelimit', String(part.size * 512), fresh], { encoding: 'utf8' }).trim();
            try {
              execFileSync('mount', [dev, freshMnt]);
              const mountMs = Number(process.hrtime.bigint() - t0) / 1e6;
              try {
                return mountMs + (await bootToRunning(['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--console=pipe', '-b', '-M', 'bench-img-fresh', '-D', freshMnt]));
              } finally {
                execFileSync('umount', [freshMnt]);
              }
            } finally {
              spawnSync('losetup', ['-d', dev]);
            }
          },
          runs: 6,
          warmup: 1,
        }),
        // What the image handling itself costs: the same launcher on the pre-mounted tree.
        await compare({
          name: 'image overhead: mctl-nspawn --image vs mctl-nspawn -D (pre-mounted)',
          ours: () => bootToRunning([nspawn, '-q', '--register=no', '--console=pipe', '-b', '-M', 'bench-img', `--image=${image}`]),
          reference: () => bootToRunning([nspawn, '-q', '--register=no', '--console=pipe', '-b', '-M', 'bench-img-dir', '-D', mnt]),
          runs: 6,
          warmup: 1,
        }),
      ];
    } finally {
      for (const [who, n] of degraded) console.log(`note: ${n} boot(s) of ${who} ended "degraded" instead of "running"`);
      execFileSync('umount', [mnt]);
    }
  } finally {
    spawnSync('losetup', ['-d', loop]);
    rmSync(dir, { recursive: true, force: true });
  }
}
if (import.meta.url === `file://${process.argv[1]}`) await run();
