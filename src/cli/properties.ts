// Printing D-Bus properties as `machinectl show` does (systemd's bus_print_property):
// NAME=VALUE lines, empty values hidden unless --all, timestamps formatted, ids in hex.
import type { Variant } from 'dbus-next';
import { formatTimestamp } from './format.js';

export type Plain = string | number | boolean | Plain[] | { [k: string]: Plain };

function toPlain(v: unknown): Plain {
  if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (Buffer.isBuffer(v)) return [...v];
  if (Array.isArray(v)) return v.map(toPlain);
  if (v && typeof v === 'object') {
    if ('signature' in v && 'value' in v) return toPlain((v as Variant).value);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toPlain(x)]));
  }
  return v as string | number | boolean;
}

/** One property's value as text; undefined when it is "empty" (hidden without --all). */
export function propertyText(name: string, variant: Variant): { text: string; empty: boolean } {
  const sig = variant.signature;
  const value: unknown = variant.value;
  if (sig === 'b') return { text: value ? 'yes' : 'no', empty: false };
  if (sig === 's' || sig === 'o' || sig === 'g') return { text: String(value), empty: value === '' };
  if (sig === 't' && name.endsWith('Timestamp')) {
    const t = BigInt(value as bigint);
    return { text: t === 0n ? '' : formatTimestamp(t), empty: t === 0n };
  }
  if (/^[ynqiuxtdh]$/.test(sig)) return { text: String(value), empty: false };
  if (sig === 'ay') {
    const buf = Buffer.from(value as Buffer);
    return { text: buf.toString('hex'), empty: buf.length === 0 };
  }
  if (sig.startsWith('a') && Array.isArray(value) && /^a[ynqiuxtdsog]$/.test(sig)) {
    return { text: value.map(String).join(' '), empty: value.length === 0 };
  }
  const plain = toPlain(value);
  return { text: JSON.stringify(plain), empty: Array.isArray(plain) ? plain.length === 0 : false };
}

export interface ShowOptions {
  properties: string[];
  all: boolean;
  valueOnly: boolean;
}

/** Lines for `show`: sorted by name, filtered by -p, empties dropped without -a. */
export function renderProperties(props: Record<string, Variant>, opts: ShowOptions): string {
  const wanted = new Set(opts.properties);
  const out: string[] = [];
  for (const name of Object.keys(props).sort()) {
    if (wanted.size > 0 && !wanted.has(name)) continue;
    const { text, empty } = propertyText(name, props[name] as Variant);
    // A property asked for by name is shown even when empty (systemd does the same).
    if (empty && !opts.all && wanted.size === 0) continue;
    out.push(opts.valueOnly ? text : `${name}=${text}`);
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

/** Properties as a JSON object (variants unwrapped, bigints as numbers, byte arrays as hex for Id). */
export function propertiesJson(props: Record<string, Variant>, opts: Pick<ShowOptions, 'properties'>): Record<string, Plain> {
  const wanted = new Set(opts.properties);
  const out: Record<string, Plain> = {};
  for (const name of Object.keys(props).sort()) {
    if (wanted.size > 0 && !wanted.has(name)) continue;
    const v = props[name] as Variant;
    out[name] = v.signature === 'ay' && name.endsWith('Id') ? Buffer.from(v.value as Buffer).toString('hex') : toPlain(v.value);
  }
  return out;
}
