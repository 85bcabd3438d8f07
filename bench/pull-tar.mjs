// pull-tar of a ~250 MB .tar.xz rootfs from loopback vs `curl -s URL | xz -d | tar -x` into the
// same disk, alternating runs, medians, MB/s and the ratio; then checks both trees are identical.
//
// The archive: the project's Debian recipe tree plus real, already-compressed files (host .deb
// packages under var/cache/apt/archives, as a rootfs keeping its apt cache would) until the
// .tar.xz reaches MCTL_BENCH_PULL_MB (default 250). Cached under /var/cache/mctl-test.
// Needs root (pull-tar writes the pool and runs tar in a network namespace) and `npm run build`.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';

import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compare, median } from './lib.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const cache = process.env.MCTL_IMAGE_CACHE || '/var/cache/mctl-test';
const targetMB = Number(process.env.MCTL_BENCH_PULL_MB || 250);
const runs = Number(process.env.MCTL_BENCH_RUNS || 5);
const TAR_FLAGS = ['--numeric-owner', '--xattrs', "--xattrs-include='*'", '--acls'];

function sh(script, args = []) {
  return execFileSync('sh', ['-c', script, 'sh', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 });
}

function buildTarball() {
  const tree = execFileSync('bash', [join(root, 'images/build.sh'), 'debian'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const key = createHash('sha256').update(`${tree}\n${targetMB}\npad-v1`).digest('hex').slice(0, 16);
  const out = join(cache, `import-bench-${key}.tar.xz`);
  if (existsSync(out)) return out;
  console.log(`building ${out} (one time)…`);
  const staging = join(cache, `import-bench-staging-${process.pid}`);
  try {
    sh('cp -a --reflink=auto "$1" "$2"', [tree, staging]);
    const debs = '/var/cache/apt/archives';
    const have = 55 * 1024 * 1024; // the Debian tree alone compresses to ~50 MB
    let added = 0;
    const files = existsSync(debs) ? readdirSync(debs).filter((f) => f.endsWith('.deb')).sort() : [];
    const dest = join(staging, 'var/cache/apt/archives');
    mkdirSync(dest, { recursive: true });
    for (const f of files) {
      if (have + added >= targetMB * 1024 * 1024) break;
      sh('cp -a --reflink=auto "$1" "$2"', [join(debs, f), dest]);
      added += statSync(join(debs, f)).size;
    }
    sh(`tar ${TAR_FLAGS.join(' ')} -cf - -C "$1" . | xz -T0 -3 > "$2.tmp"`, [staging, out]);
    renameSync(`${out}.tmp`, out);
  } finally {
    rmSync(staging, { recursive: true, force: true });
    rmSync(`${out}.tmp`, { force: true });
  }
  return out;
}

function startServer(file) {
  // A separate process: the timed commands run synchronously here and would starve an in-process server.
  const code = `
    const http = require('node:http'), fs = require('node:fs');
    const size = fs.statSync(process.argv[1]).size;
    const s = http.createServer((req, res) => {
      if (req.url !== '/bench.tar.xz') { res.writeHead(404); return res.end(); }
      res.writeHead(200, { 'content-length': size });
      fs.createReadStream(process.argv[1], { highWaterMark: 1 << 20 }).pipe(res);
    });
    s.listen(0, '127.0.0.1', () => console.log(s.address().port));`;
  const child = spawn(process.execPath, ['-e', code, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => child.stdout.once('data', (d) => resolve({ child, url: `http://127.0.0.1:${String(d).trim()}/bench.tar.xz` })));
}

const cpu = { ours: [], reference: [] };
const cpuFile = `/tmp/mctl-bench-pull-cpu-${process.pid}`;

/** Wall ms of ARGV; its CPU seconds (user+sys, children included) go to cpu[SIDE]. */
function timed(side, argv, options) {
  const t0 = process.hrtime.bigint();
  execFileSync('/usr/bin/time', ['-f', '%U %S', '-o', cpuFile, ...argv], options);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const [u, s] = readFileSync(cpuFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
  cpu[side].push(u + s);
  return ms;
}

/** Tree listing that shows any difference in type, mode, owner, size, links, target, mtime or xattrs. */
function fingerprint(dir) {
  const list = sh(`cd "$1" && find . -printf '%P %y %m %U %G %s %n %l %T@\\n' | sort`, [dir]);
  const xattrs = sh(`cd "$1" && getfattr -R -P -h -d -m - -e hex . 2>/dev/null || true`, [dir]);
  return createHash('sha256').update(list).update(xattrs).digest('hex');
}

export default async function run() {
  if (process.getuid?.() !== 0) throw new Error('pull-tar benchmark needs root');
  const tarball = buildTarball();
  const xzMB = statSync(tarball).size / 1e6;
  const tarMB = Number(sh('xz --robot -l "$1" | awk \'$1=="totals"{print $5}\'', [tarball]).trim()) / 1e6;
  console.log(`archive: ${tarball}: ${xzMB.toFixed(0)} MB .tar.xz, ${tarMB.toFixed(0)} MB tar`);
  const work = '/var/tmp/mctl-bench-pull'; // same disk as /var/lib/machines
  rmSync(work, { recursive: true, force: true });
  const pool = join(work, 'pool');
  const refDir = join(work, 'ref');
  mkdirSync(pool, { recursive: true });
  const { child, url } = await startServer(tarball);
  const env = { ...process.env, MCTL_POOL: pool };
  const mctl = join(root, 'bin/mctl');
  const clean = () => {
    rmSync(join(pool, 'bench'), { recursive: true, force: true });
    rmSync(refDir, { recursive: true, force: true });
    execFileSync('sync');
  };
  try {
    const result = await compare({
      name: `pull-tar ${xzMB.toFixed(0)} MB .tar.xz vs curl | xz -d | tar -x`,
      runs,
      warmup: 1,
      ours: async () => {
        clean();
        return timed('ours', [process.execPath, mctl, 'pull-tar', '--verify=no', url, 'bench'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
      },
      reference: async () => {
        clean();
        mkdirSync(refDir);
        return timed('reference', ['sh', '-c', `curl -sf "$1" | xz -d | tar ${TAR_FLAGS.join(' ')} -xpf - -C "$2"`, 'sh', url, refDir], { stdio: ['ignore', 'ignore', 'inherit'] });
      },
    });
    console.log(`  throughput: ours ${(xzMB / (result.ours / 1000)).toFixed(1)} MB/s compressed (${(tarMB / (result.ours / 1000)).toFixed(1)} MB/s unpacked), reference ${(xzMB / (result.reference / 1000)).toFixed(1)} MB/s compressed (${(tarMB / (result.reference / 1000)).toFixed(1)} MB/s unpacked)`);
    // CPU time is what a busy machine shows least noisily (the warm-up pair included)
    const co = median(cpu.ours);
    const cr = median(cpu.reference);
    console.log(`  CPU (user+sys, all processes but the server): ours ${co.toFixed(2)} s, reference ${cr.toFixed(2)} s, ratio ${(co / cr).toFixed(3)}`);
    // one more pair, kept, to check the trees are identical
    clean();
    execFileSync(process.execPath, [mctl, 'pull-tar', '--verify=no', url, 'bench'], { env, stdio: 'ignore' });
    mkdirSync(refDir);
    sh(`curl -sf "$1" | xz -d | tar ${TAR_FLAGS.join(' ')} -xpf - -C "$2"`, [url, refDir]);
    const same = fingerprint(join(pool, 'bench')) === fingerprint(refDir);
    console.log(`  trees identical (type, mode, owner, size, links, target, mtime, xattrs/ACLs): ${same ? 'yes' : 'NO'}`);
    if (!same) process.exitCode = 1;
    return [result];
  } finally {
    child.kill();
    rmSync(work, { recursive: true, force: true });
    rmSync(cpuFile, { force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
