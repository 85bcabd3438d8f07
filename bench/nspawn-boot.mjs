// Boot-to-running of the Debian test tree (tmpfs overlay on top, --volatile=overlay on both
// sides), ours vs systemd-nspawn 252, alternating: from spawning the launcher until
// `systemctl is-system-running --wait` inside answers. Each container is powered off after.
import { compare } from './lib.mjs';
import { bootArgv, bootContainer, debianTree, findInit, stopContainer, waitRunning } from './nspawn-common.mjs';

async function bootOnce(argv) {
  const t0 = process.hrtime.bigint();
  const c = bootContainer(argv);
  try {
    const init = await findInit(c.child.pid);
    await waitRunning(init);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  } finally {
    const code = await stopContainer(c);
    if (code !== 0) throw new Error(`${argv[0]} exited with ${code} after SIGTERM`);
  }
}

export default async function run() {
  const { ours, reference } = bootArgv(debianTree(), 'bench-nspawn-boot');
  return [await compare({ name: 'Debian boot to running', ours: () => bootOnce(ours), reference: () => bootOnce(reference), runs: 8, warmup: 1 })];
}
if (import.meta.url === `file://${process.argv[1]}`) await run();
