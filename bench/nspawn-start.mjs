// Start latency of a command container, `/bin/true` on the Debian test tree (read-only), ours
// vs systemd-nspawn 252, alternating; wall time and CPU time (user+sys, /usr/bin/time) per run;
// and vs `node -e 0`, the floor of any Node entry point.
import { spawnSync } from 'node:child_process';
import { compare } from './lib.mjs';
import { nodeFloor } from './cli-startup.mjs';
import { OURS, debianTree } from './nspawn-common.mjs';

function cpuMs(argv) {
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', ...argv], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
  const [u, s] = r.stderr.trim().split('\n').pop().split(' ').map(Number);
  return (u + s) * 1000;
}

export default async function run() {
  const tree = debianTree();
  const ours = [OURS, '-q', '--register=no', '--read-only', '-D', tree, '/bin/true'];
  const reference = ['systemd-nspawn', '-q', '--register=no', '--keep-unit', '--read-only', '-D', tree, '/bin/true'];
  return [
    await compare({ name: 'start /bin/true (wall)', ours, reference, runs: 30, warmup: 3 }),
    await compare({ name: 'start /bin/true (CPU user+sys)', ours: () => cpuMs(ours), reference: () => cpuMs(reference), runs: 20, warmup: 2 }),
    // What the launcher adds to Node's own start-up (the part of the gap mctl can still close).
    await compare({ name: 'start /bin/true vs node -e 0 (wall)', ours, reference: nodeFloor, runs: 20, warmup: 2 }),
  ];
}
if (import.meta.url === `file://${process.argv[1]}`) await run();
