// Cold start of the programs' `--version` against systemd's, and against Node's own start-up
// (`node -e 0`): the floor every latency bar has to live with while Node is the entry point, so
// the "vs node -e 0" lines show what mctl itself adds (bin/ loads a bundle with a code cache:
// scripts/bundle.mjs).
import { fileURLToPath } from 'node:url';
import { compare } from './lib.mjs';

const bin = (name) => fileURLToPath(new URL(`../bin/${name}`, import.meta.url));
// As bin/ starts Node: without NODE_EXTRA_CA_CERTS, whose parsing at start-up bin/ avoids.
export const nodeFloor = ['env', '-u', 'NODE_EXTRA_CA_CERTS', process.execPath, '-e', '0'];

export default async function run() {
  return [
    await compare({ name: 'mctl-nspawn --version vs systemd-nspawn --version', ours: [bin('mctl-nspawn'), '--version'], reference: ['systemd-nspawn', '--version'], runs: 20 }),
    await compare({ name: 'mctl --version vs machinectl --version', ours: [bin('mctl'), '--version'], reference: ['machinectl', '--version'], runs: 20 }),
    await compare({ name: 'mctl-nspawn --version vs node -e 0 (Node start-up floor)', ours: [bin('mctl-nspawn'), '--version'], reference: nodeFloor, runs: 20 }),
    await compare({ name: 'mctl --version vs node -e 0 (Node start-up floor)', ours: [bin('mctl'), '--version'], reference: nodeFloor, runs: 20 }),
  ];
}
if (import.meta.url === `file://${process.argv[1]}`) await run();
