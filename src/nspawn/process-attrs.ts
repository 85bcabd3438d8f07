// --cpu-affinity= / CPUAffinity= and --personality= / Personality=: two attributes of the
// container's PID 1 that its children inherit, applied by the runtime right before the payload
// (sched_setaffinity, personality), as systemd-nspawn 252 reads and applies them.
import { ValueError, requireX86_64 } from './options.js';

/** systemd's limit for a CPU index in a CPU set (CPU_SET_MAX_CPU-style). */
export const MAX_CPU_INDEX = 8191;

/**
 * --cpu-affinity=LIST / CPUAffinity=LIST: CPU numbers and ranges ("0-3"), separated by commas or
 * whitespace, as systemd's parse_cpu_set() reads them. Returns the CPUs in ascending order; an
 * empty list means "no affinity set" (the setting is reset).
 */
export function parseCpuAffinity(text: string): number[] {
  const cpus = new Set<number>();
  for (const word of text.split(/[\s,]+/).filter((w) => w !== '')) {
    const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(word);
    const from = m ? Number(m[1]) : NaN;
    const to = m?.[2] !== undefined ? Number(m[2]) : from;
    if (!m || to < from) throw new ValueError(`invalid CPU affinity '${text}': '${word}' is not a CPU number or range`);
    if (to > MAX_CPU_INDEX) throw new ValueError(`invalid CPU affinity '${text}': CPU ${to} is out of range (0..${MAX_CPU_INDEX})`);
    for (let c = from; c <= to; c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** "0-3,8" for a sorted CPU list (the helper's cpu-affinity value). */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(j > i ? `${cpus[i]}-${cpus[j]}` : String(cpus[i]));
    i = j + 1;
  }
  return parts.join(',');
}

/** --personality= / Personality=: the architecture uname(2) reports (nspawn: x86 and x86-64 only). */
export type Personality = 'x86' | 'x86-64';

export function parsePersonality(text: string): Personality {
  if (text !== 'x86' && text !== 'x86-64') throw new ValueError(`unknown personality '${text}' (x86 or x86-64)`);
  // Only an x86-64 host can run either; on others nspawn refuses them too.
  requireX86_64(`personality '${text}' is`);
  return text;
}
