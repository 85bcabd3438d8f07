// What a private user namespace with `map` ownership adds to start latency, ours vs
// systemd-nspawn 252, side by side on the same Debian test tree (read-only): `/bin/true` with and
// without `--private-users=pick --private-users-ownership=map` (what -U resolves to on this
// tree), each launcher's own difference, and the -U start itself. The four commands run
// interleaved (ours plain, ours -U, stock plain, stock -U), so a noisy machine hits all alike;
// the difference is taken within each round. Bar (issue #6): ours adds at most 5 ms.
import { compare, median, timeCommand } from './lib.mjs';
import { OURS, debianTree } from './nspawn-common.mjs';

export default async function run() {
  const tree = debianTree();
  const common = ['-q', '--register=no', '--keep-unit', '--read-only', '--timezone=off', '--resolv-conf=off', '-D', tree];
  const userns = ['--private-users=pick', '--private-users-ownership=map'];
  const cmd = {
    ours: [OURS, '--console=pipe', ...common, '-M', 'bench-userns'],
    reference: ['systemd-nspawn', ...common, '-M', 'bench-userns'],
  };
  const tru = ['/bin/true'];
  const runs = Number(process.env.BENCH_RUNS ?? 25);
  // Added cost: per round, plain and -U of one launcher back to back, in alternating order
  // (plain first, then -U first), so neither side always runs on a warmer cache.
  const added = (argv) => {
    let flip = false;
    return () => {
      flip = !flip;
      const plain = () => timeCommand([...argv, ...tru]);
      const withUserns = () => timeCommand([...argv, ...userns, ...tru]);
      if (flip) {
        const p = plain();
        return withUserns() - p;
      }
      const u = withUserns();
      return u - plain();
    };
  };
  const results = [
    await compare({ name: 'start -U map /bin/true (wall)', ours: [...cmd.ours, ...userns, ...tru], reference: [...cmd.reference, ...userns, ...tru], runs, warmup: 3 }),
  ];
  // The added cost is a difference of two noisy numbers: report the medians, and the ratio of
  // medians rather than a median of ratios (a ratio of near-zero differences means nothing).
  const ours = added(cmd.ours);
  const ref = added(cmd.reference);
  for (let i = 0; i < 3; i++) {
    ours();
    ref();
  }
  const a = [];
  const b = [];
  for (let i = 0; i < runs; i++) {
    a.push(ours());
    b.push(ref());
  }
  const r = { name: 'added by -U map (ms over the plain start)', unit: 'ms', runs, ours: median(a), reference: median(b), lowerIsBetter: true };
  r.ratio = r.reference > 0.5 ? r.ours / r.reference : NaN;
  console.log(`${r.name}: ours ${r.ours.toFixed(2)} ms, reference ${r.reference.toFixed(2)} ms (median of ${runs} rounds; bar: ours <= 5 ms)`);
  results.push(r);
  return results;
}
if (import.meta.url === `file://${process.argv[1]}`) await run();
