// Cold start of the launcher's `--version` against systemd-nspawn's: the Node start-up floor
// every other latency bar has to live with.
import { fileURLToPath } from 'node:url';
import { compare } from './lib.mjs';

const ours = fileURLToPath(new URL('../bin/mctl-nspawn', import.meta.url));
export default async function run() {
  return [
    await compare({ name: 'mctl-nspawn --version vs systemd-nspawn --version', ours: [ours, '--version'], reference: ['systemd-nspawn', '--version'], runs: 20 }),
  ];
}
if (import.meta.url === `file://${process.argv[1]}`) await run();
