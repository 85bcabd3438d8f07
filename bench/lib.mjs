// Shared side-by-side benchmark runner: runs "ours" and "reference" in pairs whose order
// alternates (A B, B A, A B, …) so drift of a noisy machine hits both equally, and reports
// medians and the ratio ours/reference pair by pair. The order alternates because a run can
// slow the next one down: measured on this VM, a systemd-nspawn run leaves the kernel work that
// makes the next container start (ours or its own) 4-8 ms slower, and with a fixed A B order
// that cost would always land on the same side. Public tools only: plain Node timing processes.
import { spawnSync } from 'node:child_process';

export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Wall time in ms of one whole command; throws if it fails (a failing benchmark is no benchmark). */
export function timeCommand(argv, options = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { stdio: options.stdio ?? 'ignore', env: options.env ?? process.env, timeout: options.timeoutMs ?? 120_000 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw r.error;
  if (r.status !== (options.expectStatus ?? 0)) throw new Error(`${argv.join(' ')} exited with ${r.status ?? r.signal}`);
  return ms;
}

/**
 * Compare two measurements. `ours` and `reference` are either argv arrays (timed as whole
 * processes) or async functions returning a number (ms, or any unit given in `unit`).
 */
export async function compare({ name, ours, reference, runs = 10, warmup = 2, unit = 'ms', lowerIsBetter = true }) {
  const measure = async (m) => (Array.isArray(m) ? timeCommand(m) : await m());
  for (let i = 0; i < warmup; i++) {
    await measure(ours);
    await measure(reference);
  }
  const a = [];
  const b = [];
  const ratios = [];
  for (let i = 0; i < runs; i++) {
    const oursFirst = i % 2 === 0;
    const first = await measure(oursFirst ? ours : reference);
    const second = await measure(oursFirst ? reference : ours);
    const [x, y] = oursFirst ? [first, second] : [second, first];
    a.push(x);
    b.push(y);
    ratios.push(x / y);
  }
  const result = { name, unit, runs, ours: median(a), reference: median(b), ratio: median(ratios), lowerIsBetter };
  const fmt = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(2));
  console.log(`${name}: ours ${fmt(result.ours)} ${unit}, reference ${fmt(result.reference)} ${unit}, ratio ours/reference ${result.ratio.toFixed(3)} (median of ${runs} pairs)`);
  return result;
}
