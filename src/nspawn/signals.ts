// Signal names as systemd's signal_from_string() accepts them: "SIGTERM", "TERM", a number,
// and the real-time range "SIGRTMIN+N" / "RTMIN+N" / "SIGRTMAX-N". glibc reserves two
// real-time signals for itself, so SIGRTMIN is 34 on Linux; node's table lacks RT signals.
import { constants } from 'node:os';

export const SIGRTMIN = 34;
export const SIGRTMAX = 64;

/** Parse a signal name or number; undefined when it is not one. */
export function parseSignal(text: string): number | undefined {
  if (/^[0-9]+$/.test(text)) {
    const n = Number(text);
    return n >= 1 && n <= SIGRTMAX ? n : undefined;
  }
  const name = text.startsWith('SIG') ? text.slice(3) : text;
  const rt = /^RTM(IN|AX)(?:([+-])([0-9]+))?$/.exec(name);
  if (rt) {
    const base = rt[1] === 'IN' ? SIGRTMIN : SIGRTMAX;
    const off = rt[3] === undefined ? 0 : Number(rt[3]) * (rt[2] === '-' ? -1 : 1);
    if (rt[1] === 'IN' && off < 0) return undefined;
    if (rt[1] === 'AX' && off > 0) return undefined;
    const n = base + off;
    return n >= SIGRTMIN && n <= SIGRTMAX ? n : undefined;
  }
  const table = constants.signals as Record<string, number>;
  const n = table[`SIG${name}`];
  return n === undefined ? undefined : n;
}

/** The name systemd prints for a signal number ("SIGRTMIN+3" for 37). */
export function signalName(n: number): string {
  if (n >= SIGRTMIN && n <= SIGRTMAX) return n === SIGRTMIN ? 'SIGRTMIN' : `SIGRTMIN+${n - SIGRTMIN}`;
  const table = constants.signals as Record<string, number>;
  for (const [name, value] of Object.entries(table)) if (value === n) return name;
  return String(n);
}
