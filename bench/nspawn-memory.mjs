// Host-side memory per running container: the RSS of every host process that exists only
// because of the container and is not the container (ours: the native supervisor; nspawn: its
// main process), with the Debian tree booted to running. Ours vs systemd-nspawn 252.
import { compare } from './lib.mjs';
import { bootArgv, bootContainer, debianTree, findInit, hostSideProcesses, rssKiB, stopContainer, waitRunning } from './nspawn-common.mjs';

async function hostRss(argv) {
  const c = bootContainer(argv);
  try {
    const init = await findInit(c.child.pid);
    await waitRunning(init);
    return hostSideProcesses(c.child.pid, init).reduce((sum, p) => sum + rssKiB(p), 0);
  } finally {
    await stopContainer(c);
  }
}

export default async function run() {
  const { ours, reference } = bootArgv(debianTree(), 'bench-nspawn-mem');
  return [await compare({ name: 'host RSS per running container', ours: () => hostRss(ours), reference: () => hostRss(reference), runs: 3, warmup: 0, unit: 'KiB' })];
}
if (import.meta.url === `file://${process.argv[1]}`) await run();
