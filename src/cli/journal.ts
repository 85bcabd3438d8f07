// The journal excerpt under `mctl status NAME`: the last lines the host's journal holds for the
// machine's unit since the machine started, as machinectl shows them (it calls
// show_journal_by_unit: the unit's own messages and systemd's about it, `-n` lines, local
// journal only). We ask journalctl for the same thing; no journalctl, no journal, no unit or no
// entries simply means no excerpt.
import { execFile } from 'node:child_process';

export interface JournalOptions {
  /** How many lines (machinectl's -n/--lines, default 10); 0 = none. */
  lines: number;
  /** Machine start, µs since the epoch (0 = unknown): older entries belong to earlier runs. */
  sinceUsec: number;
  /** Cut lines to this many columns (Infinity = as they are). */
  width: number;
}

/** `journalctl -u UNIT -n N --since=@START`; [] when there is nothing to show, whatever the reason. */
export function unitJournal(unit: string, options: JournalOptions): Promise<string[]> {
  if (!unit || options.lines <= 0) return Promise.resolve([]);
  // Newest first (-r): with --since, journalctl -n counts from the oldest entry after it, and we
  // want the newest N that are not older than the machine, as machinectl shows them.
  const args = ['--no-pager', '--quiet', '--output=short', '--reverse', `--lines=${options.lines}`, `--unit=${unit}`];
  if (options.sinceUsec > 0) args.push(`--since=@${Math.floor(options.sinceUsec / 1_000_000)}`);
  return new Promise((resolve) => {
    execFile('journalctl', args, { encoding: 'utf8', timeout: 10_000, maxBuffer: 4 << 20, env: { ...process.env, SYSTEMD_PAGER: 'cat', SYSTEMD_COLORS: '0' } }, (err, stdout) => {
      if (err) return resolve([]); // not installed, no journal files, timed out: leave it out
      const lines = oldestFirst(stdout.split('\n').filter((l) => l.length > 0));
      resolve(options.width === Infinity ? lines : lines.map((l) => (l.length > options.width ? `${l.slice(0, options.width - 1)}…` : l)));
    });
  });
}

/** Reverse the entries of `-r` output; a multi-line message's indented continuation lines stay with it. */
function oldestFirst(lines: string[]): string[] {
  const entries: string[][] = [];
  for (const line of lines) {
    const last = entries[entries.length - 1];
    if (last && /^\s/.test(line)) last.push(line);
    else entries.push([line]);
  }
  return entries.reverse().flat();
}
