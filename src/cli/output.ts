// Output: machinectl-style tables, colour only on a terminal, stable JSON.
export type OutputMode = 'short' | 'json' | 'json-pretty' | 'table';
export const OUTPUT_MODES: readonly OutputMode[] = ['short', 'json', 'json-pretty', 'table'];

/** Colour when stdout is a terminal, unless NO_COLOR or SYSTEMD_COLORS=0 says otherwise. */
export function colorEnabled(stream: NodeJS.WriteStream = process.stdout): boolean {
  const forced = process.env['SYSTEMD_COLORS'];
  if (forced !== undefined && forced !== '') return !['0', 'no', 'false', 'off'].includes(forced.toLowerCase());
  if (process.env['NO_COLOR'] !== undefined) return false;
  if (process.env['TERM'] === 'dumb') return false;
  return stream.isTTY === true;
}

const ESC = '\x1b[';
export interface Paint {
  bold(s: string): string;
  underline(s: string): string;
  green(s: string): string;
  red(s: string): string;
  grey(s: string): string;
}

export function painter(enabled = colorEnabled()): Paint {
  const wrap = (code: string) => (s: string) => (enabled ? `${ESC}${code}m${s}${ESC}0m` : s);
  return { bold: wrap('1'), underline: wrap('4'), green: wrap('32'), red: wrap('31'), grey: wrap('90') };
}

/** Display width of a string (ANSI codes removed; good enough for the ASCII we print). */
function width(s: string): number {
  // eslint-disable-next-line no-control-regex
  return [...s.replace(/\x1b\[[0-9;]*m/g, '')].length;
}

export interface TableOptions {
  legend: boolean;
  paint: Paint;
}

/** Columns padded to the widest cell, header underlined on a tty (as systemd's table does). */
export function renderTable(headers: string[], rows: string[][], options: TableOptions): string {
  const widths = headers.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat((widths[i] ?? 0) - width(c))))
      .join(' ')
      .trimEnd();
  const out: string[] = [];
  if (options.legend) {
    const header = headers.map((h, i) => (i === headers.length - 1 ? h : h + ' '.repeat((widths[i] ?? 0) - width(h)))).join(' ');
    out.push(options.paint.underline(header.trimEnd()));
  }
  for (const r of rows) out.push(line(r));
  return out.length ? `${out.join('\n')}\n` : '';
}

/** Key/value block with right-aligned keys, as `machinectl status` prints. */
export function renderFields(fields: [string, string][]): string {
  const w = Math.max(0, ...fields.map(([k]) => k.length));
  const out: string[] = [];
  for (const [key, value] of fields) {
    const lines = value.split('\n');
    out.push(`${key.padStart(w)}: ${lines[0]}`);
    for (const more of lines.slice(1)) out.push(`${' '.repeat(w + 2)}${more}`);
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

/** JSON that survives bigint (uint64 properties become numbers when safe, else strings). */
export function toJson(value: unknown, pretty: boolean): string {
  return JSON.stringify(
    value,
    (_k, v: unknown) => {
      if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
      if (v instanceof Buffer) return [...v];
      return v;
    },
    pretty ? 2 : undefined,
  );
}

export function isJson(mode: OutputMode): boolean {
  return mode === 'json' || mode === 'json-pretty';
}

export function printJson(value: unknown, mode: OutputMode): void {
  process.stdout.write(`${toJson(value, mode === 'json-pretty')}\n`);
}
