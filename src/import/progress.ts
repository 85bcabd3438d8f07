// A one-line progress bar on stderr when it is a terminal (bytes, rate, ETA); silent otherwise,
// so scripts and logs get only the final result.

function human(bytes: number): string {
  const units = ['B', 'K', 'M', 'G', 'T'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)}${units[i]}`;
}

function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

export interface Progress {
  update(bytes: number): void;
  setTotal(total: number | null): void;
  done(): void;
}

/** Render one progress line; exported for tests. */
export function renderProgress(label: string, bytes: number, total: number | null, elapsedSec: number, width: number): string {
  const rate = elapsedSec > 0 ? bytes / elapsedSec : 0;
  const rateText = `${human(rate)}/s`;
  if (total === null || total <= 0) return `${label} ${human(bytes)} ${rateText}`.slice(0, width);
  const frac = Math.min(1, bytes / total);
  const eta = rate > 0 ? (total - bytes) / rate : Infinity;
  const tail = ` ${String(Math.floor(frac * 100)).padStart(3)}% ${human(bytes)}/${human(total)} ${rateText} ETA ${clock(eta)}`;
  const barWidth = Math.max(10, Math.min(40, width - label.length - tail.length - 4));
  const filled = Math.round(frac * barWidth);
  return `${label} [${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]${tail}`.slice(0, width);
}

/** Where progress goes besides the bar: the transfer's record for list-transfers. */
export type ProgressObserver = (bytes: number, total: number | null) => void;

export function createProgress(label: string, options: { enabled?: boolean; stream?: NodeJS.WriteStream; observer?: ProgressObserver | undefined } = {}): Progress {
  const out = options.stream ?? process.stderr;
  const enabled = options.enabled ?? Boolean(out.isTTY);
  let total: number | null = null;
  let last = 0;
  let bytes = 0;
  let shown = false;
  const start = Date.now();
  const draw = (): void => {
    const width = (out.columns || 80) - 1;
    out.write(`\r${renderProgress(label, bytes, total, (Date.now() - start) / 1000, width)}\x1b[K`);
    shown = true;
  };
  return {
    setTotal: (t) => {
      total = t;
    },
    update: (b) => {
      bytes = b;
      options.observer?.(b, total);
      if (!enabled) return;
      const now = Date.now();
      if (now - last < 100) return; // 10 redraws a second are plenty
      last = now;
      draw();
    },
    done: () => {
      if (enabled && shown) out.write('\r\x1b[K');
    },
  };
}
