// mctl-nspawn's command line: a hand-written getopt_long equivalent (the launcher's start
// latency is judged, and yargs alone costs more than a whole container start here).
// Names, short options and value syntax follow systemd-nspawn 252; every value is validated
// here so that a bad option fails before anything is created.
import { UserError } from '../common/errors.js';
import { isValidHostname } from '../common/names.js';
import { parseSignal } from './signals.js';
import { CAPABILITY_NAMES, capabilityNumber } from './capabilities.js';
// network.ts pulls in the whole networking stack: only its types here; main.ts loads it when needed.
import type { NetOptionDef, NetworkSettings as NetworkOptionSettings, UsernsSettings } from './network.js';
import { parseOomScoreAdjust, parseRlimitAssignment, type Rlimits } from './rlimits.js';
import { parseCpuAffinity, parsePersonality, type Personality } from './process-attrs.js';
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';

export type StartMode = 'pid1' | 'pid2' | 'boot';
export type VolatileMode = 'no' | 'yes' | 'state' | 'overlay';
export type ConsoleMode = 'interactive' | 'read-only' | 'passive' | 'pipe' | 'autopipe';
export type SettingsMode = 'yes' | 'no' | 'trusted' | 'override';
export type RegisterMode = 'yes' | 'no' | 'auto';
export const RESOLV_CONF_MODES = [
  'off', 'copy-host', 'copy-static', 'copy-uplink', 'copy-stub', 'replace-host', 'replace-static',
  'replace-uplink', 'replace-stub', 'bind-host', 'bind-static', 'bind-uplink', 'bind-stub', 'delete', 'auto',
] as const;
export type ResolvConfMode = (typeof RESOLV_CONF_MODES)[number];
export const TIMEZONE_MODES = ['off', 'copy', 'bind', 'symlink', 'delete', 'auto'] as const;
export type TimezoneMode = (typeof TIMEZONE_MODES)[number];
export const LINK_JOURNAL_MODES = ['no', 'auto', 'guest', 'host', 'try-guest', 'try-host'] as const;
export type LinkJournalMode = (typeof LINK_JOURNAL_MODES)[number];

/** A path on the host, or ("+/x") one relative to the container's root directory. */
export interface SourcePath {
  path: string;
  inContainer: boolean;
}

export type CustomMount =
  | { kind: 'bind'; source: SourcePath | null; destination: string; readOnly: boolean; recursive: boolean; idmap: 'no' | 'idmap' | 'rootidmap' }
  | { kind: 'tmpfs'; destination: string; options: string }
  | { kind: 'overlay'; lower: SourcePath[]; upper: SourcePath | null; destination: string; readOnly: boolean }
  | { kind: 'inaccessible'; destination: string };

export interface Credential {
  id: string;
  data: Buffer;
}

/**
 * Everything the command line or a .nspawn file can set. A field left undefined was not given,
 * which is what the .nspawn merge (settings.ts) needs to know; defaults are applied later.
 */
export interface ContainerOptions {
  directory?: string;
  template?: string;
  ephemeral?: boolean;
  image?: string;
  /** --image-policy= (systemd.image-policy(7)), checked when the image is dissected */
  imagePolicy?: string;
  readOnly?: boolean;
  volatile?: VolatileMode;
  startMode?: StartMode;
  /** The command (or, with --boot, init's arguments). */
  parameters?: string[];
  user?: string;
  workingDirectory?: string;
  /** NAME=VALUE assignments, in order; later ones win. */
  environment?: string[];
  killSignal?: number;
  notifyReady?: boolean;
  machine?: string;
  hostname?: string;
  uuid?: string;
  slice?: string;
  properties?: string[];
  register?: RegisterMode;
  keepUnit?: boolean;
  capabilityAdd?: bigint;
  capabilityDrop?: bigint;
  /** --ambient-capability= / AmbientCapability=: raised in the payload's ambient (and inheritable) set. */
  capabilityAmbient?: bigint;
  noNewPrivileges?: boolean;
  /** --suppress-sync= / SuppressSync=. */
  suppressSync?: boolean;
  /** --system-call-filter= / SystemCallFilter=: names and @groups added to nspawn's allow-list, or (deny) removed from it. */
  syscallFilter?: SyscallFilter;
  resolvConf?: ResolvConfMode;
  timezone?: TimezoneMode;
  linkJournal?: LinkJournalMode;
  mounts?: CustomMount[];
  console?: ConsoleMode;
  credentials?: Credential[];
  /** Network options (one group, as nspawn merges them with .nspawn files); see network.ts. */
  network?: NetworkOptionSettings;
  /** --private-users*, -U; see network.ts and userns.ts. */
  userns?: UsernsSettings;
  /** --rlimit= / Limit*=, per resource. */
  rlimits?: Rlimits;
  /** --oom-score-adjust= / OOMScoreAdjust=. */
  oomScoreAdjust?: number;
  /** --cpu-affinity= / CPUAffinity=: the CPUs (ascending); empty = no affinity set. */
  cpuAffinity?: number[];
  /** --personality= / Personality=. */
  personality?: Personality;
}

export interface CommandLine {
  options: ContainerOptions;
  quiet: boolean;
  settings: SettingsMode;
  action: 'run' | 'help' | 'version';
}

// ---------------------------------------------------------------------------------------------
// Value parsers, shared with the .nspawn parser (settings.ts). Each throws a bare message; the
// caller prefixes it with the option or file:line it came from.

export class ValueError extends Error {}

export function parseBoolean(text: string): boolean {
  const t = text.toLowerCase();
  if (['1', 'yes', 'y', 'true', 't', 'on'].includes(t)) return true;
  if (['0', 'no', 'n', 'false', 'f', 'off'].includes(t)) return false;
  throw new ValueError(`'${text}' is not a boolean`);
}

function parseEnum<T extends string>(text: string, values: readonly T[], what: string): T {
  if ((values as readonly string[]).includes(text)) return text as T;
  throw new ValueError(`unknown ${what} '${text}' (choose from ${values.join(', ')})`);
}

export const parseResolvConf = (t: string): ResolvConfMode => parseEnum(t, RESOLV_CONF_MODES, 'mode');
export const parseTimezone = (t: string): TimezoneMode => parseEnum(t, TIMEZONE_MODES, 'mode');
export function parseLinkJournal(t: string): LinkJournalMode {
  return parseEnum(t, LINK_JOURNAL_MODES, 'mode');
}

export function parseVolatile(text: string): VolatileMode {
  if (text === 'state' || text === 'overlay') return text;
  try {
    return parseBoolean(text) ? 'yes' : 'no';
  } catch {
    throw new ValueError(`unknown mode '${text}' (choose from no, yes, state, overlay)`);
  }
}

export function parseKillSignal(text: string): number {
  const n = parseSignal(text);
  if (n === undefined) throw new ValueError(`unknown signal '${text}'`);
  return n;
}

/** A 128-bit id as systemd writes it: 32 hex digits, optionally in the dashed UUID form. */
export function parseId128(text: string): string {
  const hex = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(text)
    ? text.replace(/-/g, '')
    : text;
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new ValueError(`invalid UUID '${text}'`);
  if (/^0+$/.test(hex)) throw new ValueError('the UUID may not be all zeroes');
  return hex.toLowerCase();
}

export function parseHostnameValue(text: string): string {
  if (!isValidHostname(text)) throw new ValueError(`invalid hostname '${text}'`);
  return text;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** NAME=VALUE, or a bare NAME that copies the launcher's own value (dropped when unset). */
export function parseEnvironment(text: string, inherit: NodeJS.ProcessEnv = process.env): string | null {
  const eq = text.indexOf('=');
  const name = eq < 0 ? text : text.slice(0, eq);
  if (!ENV_NAME.test(name)) throw new ValueError(`invalid environment assignment '${text}'`);
  if (eq >= 0) return text;
  const value = inherit[name];
  return value === undefined ? null : `${name}=${value}`;
}

export function parseAbsolutePath(text: string): string {
  if (!isAbsolute(text)) throw new ValueError(`'${text}' is not an absolute path`);
  return simplifyPath(text);
}

/** path_simplify(): collapse "//" and "/./", drop a trailing "/"; ".." is refused. */
export function simplifyPath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new ValueError(`'${path}' contains '..'`);
  return (path.startsWith('/') ? '/' : '') + parts.join('/');
}

/**
 * Split on `sep` the way systemd's extract_first_word() does for these options: a backslash
 * escapes the next character (so "\:" is a literal colon), empty fields are kept.
 * With `max`, the last field takes the rest of the text unsplit (escapes kept as written).
 */
export function splitEscaped(text: string, sep: string, max = Infinity): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (out.length === max - 1) {
      out.push(text.slice(i));
      return out;
    }
    if (c === '\\' && i + 1 < text.length) {
      cur += text[++i];
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out;
}

function parseSourcePath(text: string): SourcePath {
  if (text.startsWith('+')) return { path: parseAbsolutePath(text.slice(1) || '/'), inContainer: true };
  return { path: parseAbsolutePath(text), inContainer: false };
}

/** --bind / --bind-ro / Bind= / BindReadOnly=: SRC[:DST[:OPTIONS]]. */
export function parseBind(text: string, readOnly: boolean): CustomMount {
  const [src = '', dst, opts] = splitEscaped(text, ':', 3);
  if (dst === '') throw new ValueError(`'${text}': empty destination`);
  const source = src === '' ? null : parseSourcePath(src);
  if (!source && dst === undefined) throw new ValueError(`'${text}': an empty source needs a destination`);
  const destination = dst === undefined ? source!.path : parseAbsolutePath(dst);
  let recursive = true;
  let idmap: 'no' | 'idmap' | 'rootidmap' = 'no';
  for (const o of (opts ?? '').split(',').filter(Boolean)) {
    if (o === 'rbind') recursive = true;
    else if (o === 'norbind') recursive = false;
    else if (o === 'idmap' || o === 'rootidmap') idmap = o;
    else if (o === 'noidmap') idmap = 'no';
    else throw new ValueError(`'${text}': unknown bind option '${o}' (known: rbind, norbind, idmap, noidmap, rootidmap)`);
  }
  return { kind: 'bind', source, destination, readOnly, recursive, idmap };
}

/** --tmpfs / TemporaryFileSystem=: PATH[:OPTIONS], options default to mode=0755. */
export function parseTmpfs(text: string): CustomMount {
  const [path = '', options] = splitEscaped(text, ':', 2);
  return { kind: 'tmpfs', destination: parseAbsolutePath(path), options: options || 'mode=0755' };
}

/** --overlay / --overlay-ro: LOWER[:LOWER...][:UPPER]:DEST; an empty or missing upper is temporary. */
export function parseOverlay(text: string, readOnly: boolean): CustomMount {
  const parts = splitEscaped(text, ':');
  if (parts.length < 2) throw new ValueError(`'${text}': needs at least two colon-separated directories`);
  const destination = parseAbsolutePath(parts.pop()!);
  let upper: SourcePath | null = null;
  if (!readOnly && parts.length >= 2) {
    const u = parts.pop()!;
    upper = u === '' ? null : parseSourcePath(u);
  }
  const lower = parts.map((p) => {
    if (p === '') throw new ValueError(`'${text}': empty lower directory`);
    return parseSourcePath(p);
  });
  return { kind: 'overlay', lower, upper, destination, readOnly };
}

export function parseInaccessible(text: string): CustomMount {
  return { kind: 'inaccessible', destination: parseAbsolutePath(text) };
}

/** credential_name_valid(): a usable file name of at most 255 bytes. */
function parseCredentialId(id: string): string {
  if (id === '' || id === '.' || id === '..' || id.includes('/') || Buffer.byteLength(id) > 255) {
    throw new ValueError(`invalid credential name '${id}'`);
  }
  return id;
}

/** C-style escapes in --set-credential values, as systemd's cunescape() accepts them. */
export function cUnescape(text: string): Buffer {
  const out: number[] = [];
  const simple: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, '\\': 92, '"': 34, "'": 39, s: 32 };
  const bytes = Buffer.from(text, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== 0x5c || i + 1 >= bytes.length) {
      out.push(bytes[i]!);
      continue;
    }
    const c = String.fromCharCode(bytes[++i]!);
    if (c in simple) out.push(simple[c]!);
    else if (c === 'x' && /^[0-9a-fA-F]{2}$/.test(bytes.subarray(i + 1, i + 3).toString('latin1'))) {
      out.push(parseInt(bytes.subarray(i + 1, i + 3).toString('latin1'), 16));
      i += 2;
    } else if (/[0-7]/.test(c) && /^[0-7]{3}$/.test(bytes.subarray(i, i + 3).toString('latin1'))) {
      out.push(parseInt(bytes.subarray(i, i + 3).toString('latin1'), 8) & 0xff);
      i += 2;
    } else throw new ValueError(`invalid escape '\\${c}'`);
  }
  return Buffer.from(out);
}

const CREDENTIALS_TOTAL_MAX = 1024 * 1024;

export function parseSetCredential(text: string): Credential {
  const colon = text.indexOf(':');
  if (colon < 0) throw new ValueError(`'${text}': missing ':VALUE'`);
  return { id: parseCredentialId(text.slice(0, colon)), data: cUnescape(text.slice(colon + 1)) };
}

/** ID:PATH; a relative PATH is looked up in $CREDENTIALS_DIRECTORY (credentials we were given). */
export function parseLoadCredential(text: string, env: NodeJS.ProcessEnv = process.env): Credential {
  const colon = text.indexOf(':');
  if (colon < 0) throw new ValueError(`'${text}': missing ':PATH'`);
  const id = parseCredentialId(text.slice(0, colon));
  let path = text.slice(colon + 1);
  if (path === '') throw new ValueError(`'${text}': empty path`);
  if (!isAbsolute(path)) {
    const dir = env['CREDENTIALS_DIRECTORY'];
    if (!dir) throw new ValueError(`credential '${path}' is not available (no credentials were passed to us)`);
    path = `${dir}/${path}`;
  }
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new ValueError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return { id, data };
}

export function addCredential(list: Credential[], cred: Credential): Credential[] {
  if (list.some((c) => c.id === cred.id)) throw new ValueError(`duplicate credential '${cred.id}'`);
  const total = list.reduce((n, c) => n + c.data.length, 0) + cred.data.length;
  if (total > CREDENTIALS_TOTAL_MAX) throw new ValueError('credentials exceed 1 MiB in total');
  return [...list, cred];
}

/** unit_name_is_valid() for a slice: NAME.slice with the unit name character set. */
export function parseSlice(text: string): string {
  if (!/^[A-Za-z0-9:_.\\-]+\.slice$/.test(text) || text.length > 255 || text.startsWith('.')) {
    throw new ValueError(`invalid slice name '${text}'`);
  }
  return text;
}

export function parseProperty(text: string): string {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new ValueError(`'${text}' is not NAME=VALUE`);
  return text;
}

/** A comma- or space-separated capability list as a bit mask; "all" is every capability. */
export function parseCapabilityList(text: string): bigint {
  let mask = 0n;
  for (const word of text.split(/[,\s]+/).filter(Boolean)) {
    if (word.toLowerCase() === 'all') {
      mask |= (1n << BigInt(CAPABILITY_NAMES.length)) - 1n;
      continue;
    }
    const n = /^[0-9]+$/.test(word) && Number(word) < CAPABILITY_NAMES.length ? Number(word) : capabilityNumber(word);
    if (n === undefined) throw new ValueError(`unknown capability '${word}'`);
    mask |= 1n << BigInt(n);
  }
  return mask;
}

/** For settings the runtime implements on x86-64 hosts only (seccomp tables, personality values). */
export function requireX86_64(what: string): void {
  if (process.arch !== 'x64') throw new ValueError(`${what} not supported on this architecture`);
}

/** --suppress-sync=BOOL / SuppressSync=: its seccomp rules exist for x86-64 (and i386 payloads) only. */
export function parseSuppressSync(text: string): boolean {
  const on = parseBoolean(text);
  if (on) requireX86_64('suppressing sync is');
  return on;
}

export interface SyscallFilter {
  allow: string[];
  deny: string[];
}

/**
 * One --system-call-filter= / SystemCallFilter= value: whitespace-separated system call names
 * and @groups, all removed from the allow-list when the value starts with "~"; values add up
 * (nspawn's rule). Names and groups are checked against systemd 252's by the runtime.
 */
export function addSyscallFilter(cur: SyscallFilter | undefined, text: string): SyscallFilter {
  const deny = text.startsWith('~');
  const items = (deny ? text.slice(1) : text).split(/\s+/).filter((w) => w !== '');
  for (const item of items) if (!/^@?[a-z0-9_-]+$/.test(item)) throw new ValueError(`invalid system call or group name '${item}'`);
  if (items.length > 0) requireX86_64('system call filters are');
  const next = { allow: [...(cur?.allow ?? [])], deny: [...(cur?.deny ?? [])] };
  next[deny ? 'deny' : 'allow'].push(...items);
  return next;
}

/** A capability list for the ambient set: as parseCapabilityList, without "all" (nspawn refuses it there). */
export function parseAmbientCapabilityList(text: string): bigint {
  if (text.split(/[,\s]+/).some((w) => w.toLowerCase() === 'all')) throw new ValueError("the value 'all' is not supported for ambient capabilities");
  return parseCapabilityList(text);
}

export function parseUser(text: string): string {
  // A user name, or a numeric UID; resolved inside the container at start.
  if (text === '' || /[\s:/]/.test(text) || text.length > 256) throw new ValueError(`invalid user name '${text}'`);
  return text;
}

// ---------------------------------------------------------------------------------------------
// The option table.

type Arg = 'none' | 'required' | 'optional';
interface OptionDef {
  long: string;
  short?: string;
  arg: Arg;
  apply(cl: CommandLine, value: string | undefined): void;
}

function list<T>(cur: T[] | undefined, item: T): T[] {
  return [...(cur ?? []), item];
}

const mountOpt = (parse: (v: string) => CustomMount) => (cl: CommandLine, v: string | undefined) => {
  cl.options.mounts = list(cl.options.mounts, parse(v!));
};

export const OPTIONS: OptionDef[] = [
  { long: 'help', short: 'h', arg: 'none', apply: (cl) => void (cl.action = 'help') },
  { long: 'version', arg: 'none', apply: (cl) => void (cl.action = 'version') },
  { long: 'quiet', short: 'q', arg: 'none', apply: (cl) => void (cl.quiet = true) },
  { long: 'no-pager', arg: 'none', apply: () => undefined },
  {
    long: 'settings',
    arg: 'required',
    apply: (cl, v) => {
      if (v === 'trusted' || v === 'override') cl.settings = v;
      else {
        try {
          cl.settings = parseBoolean(v!) ? 'yes' : 'no';
        } catch {
          throw new ValueError(`unknown mode '${v}' (choose from yes, no, trusted, override)`);
        }
      }
    },
  },
  { long: 'directory', short: 'D', arg: 'required', apply: (cl, v) => void (cl.options.directory = nonEmpty(v!)) },
  { long: 'template', arg: 'required', apply: (cl, v) => void (cl.options.template = nonEmpty(v!)) },
  { long: 'ephemeral', short: 'x', arg: 'none', apply: (cl) => void (cl.options.ephemeral = true) },
  { long: 'image', short: 'i', arg: 'required', apply: (cl, v) => void (cl.options.image = nonEmpty(v!)) },
  { long: 'image-policy', arg: 'required', apply: (cl, v) => void (cl.options.imagePolicy = v!) },
  { long: 'read-only', arg: 'none', apply: (cl) => void (cl.options.readOnly = true) },
  { long: 'volatile', arg: 'optional', apply: (cl, v) => void (cl.options.volatile = v === undefined ? 'yes' : parseVolatile(v)) },
  { long: 'as-pid2', short: 'a', arg: 'none', apply: (cl) => setStartMode(cl, 'pid2') },
  { long: 'boot', short: 'b', arg: 'none', apply: (cl) => setStartMode(cl, 'boot') },
  { long: 'chdir', arg: 'required', apply: (cl, v) => void (cl.options.workingDirectory = parseAbsolutePath(v!)) },
  {
    long: 'setenv',
    short: 'E',
    arg: 'required',
    apply: (cl, v) => {
      const a = parseEnvironment(v!);
      cl.options.environment = a === null ? (cl.options.environment ?? []) : list(cl.options.environment, a);
    },
  },
  { long: 'user', short: 'u', arg: 'required', apply: (cl, v) => void (cl.options.user = parseUser(v!)) },
  { long: 'kill-signal', arg: 'required', apply: (cl, v) => void (cl.options.killSignal = parseKillSignal(v!)) },
  { long: 'notify-ready', arg: 'required', apply: (cl, v) => void (cl.options.notifyReady = parseBoolean(v!)) },
  {
    long: 'machine',
    short: 'M',
    arg: 'required',
    apply: (cl, v) => {
      if (!isValidHostname(v!)) throw new ValueError(`invalid machine name '${v}'`);
      cl.options.machine = v!;
    },
  },
  { long: 'hostname', arg: 'required', apply: (cl, v) => void (cl.options.hostname = parseHostnameValue(v!)) },
  { long: 'uuid', arg: 'required', apply: (cl, v) => void (cl.options.uuid = parseId128(v!)) },
  { long: 'slice', short: 'S', arg: 'required', apply: (cl, v) => void (cl.options.slice = parseSlice(v!)) },
  { long: 'property', arg: 'required', apply: (cl, v) => void (cl.options.properties = list(cl.options.properties, parseProperty(v!))) },
  {
    long: 'register',
    arg: 'required',
    apply: (cl, v) => {
      if (v === 'auto') cl.options.register = 'auto';
      else {
        try {
          cl.options.register = parseBoolean(v!) ? 'yes' : 'no';
        } catch {
          throw new ValueError(`unknown mode '${v}' (choose from yes, no, auto)`);
        }
      }
    },
  },
  { long: 'keep-unit', arg: 'none', apply: (cl) => void (cl.options.keepUnit = true) },
  {
    long: 'capability',
    arg: 'required',
    apply: (cl, v) => void (cl.options.capabilityAdd = (cl.options.capabilityAdd ?? 0n) | parseCapabilityList(v!)),
  },
  {
    long: 'drop-capability',
    arg: 'required',
    apply: (cl, v) => void (cl.options.capabilityDrop = (cl.options.capabilityDrop ?? 0n) | parseCapabilityList(v!)),
  },
  {
    long: 'ambient-capability',
    arg: 'required',
    apply: (cl, v) => void (cl.options.capabilityAmbient = (cl.options.capabilityAmbient ?? 0n) | parseAmbientCapabilityList(v!)),
  },
  // nspawn requires the argument; we also take the bare flag (it can only mean "yes").
  { long: 'no-new-privileges', arg: 'optional', apply: (cl, v) => void (cl.options.noNewPrivileges = v === undefined ? true : parseBoolean(v)) },
  { long: 'suppress-sync', arg: 'required', apply: (cl, v) => void (cl.options.suppressSync = parseSuppressSync(v!)) },
  { long: 'system-call-filter', arg: 'required', apply: (cl, v) => void (cl.options.syscallFilter = addSyscallFilter(cl.options.syscallFilter, v!)) },
  {
    long: 'rlimit',
    arg: 'required',
    apply: (cl, v) => {
      const [name, limit] = parseRlimitAssignment(v!);
      cl.options.rlimits = { ...cl.options.rlimits, [name]: limit };
    },
  },
  { long: 'oom-score-adjust', arg: 'required', apply: (cl, v) => void (cl.options.oomScoreAdjust = parseOomScoreAdjust(v!)) },
  { long: 'cpu-affinity', arg: 'required', apply: (cl, v) => void (cl.options.cpuAffinity = parseCpuAffinity(v!)) },
  { long: 'personality', arg: 'required', apply: (cl, v) => void (cl.options.personality = parsePersonality(v!)) },
  { long: 'resolv-conf', arg: 'required', apply: (cl, v) => void (cl.options.resolvConf = parseResolvConf(v!)) },
  { long: 'timezone', arg: 'required', apply: (cl, v) => void (cl.options.timezone = parseTimezone(v!)) },
  { long: 'link-journal', arg: 'required', apply: (cl, v) => void (cl.options.linkJournal = parseLinkJournal(v!)) },
  { long: 'j', short: 'j', arg: 'none', apply: (cl) => void (cl.options.linkJournal = 'try-guest') },
  { long: 'bind', arg: 'required', apply: mountOpt((v) => parseBind(v, false)) },
  { long: 'bind-ro', arg: 'required', apply: mountOpt((v) => parseBind(v, true)) },
  { long: 'tmpfs', arg: 'required', apply: mountOpt(parseTmpfs) },
  { long: 'overlay', arg: 'required', apply: mountOpt((v) => parseOverlay(v, false)) },
  { long: 'overlay-ro', arg: 'required', apply: mountOpt((v) => parseOverlay(v, true)) },
  { long: 'inaccessible', arg: 'required', apply: mountOpt(parseInaccessible) },
  {
    long: 'console',
    arg: 'required',
    apply: (cl, v) => void (cl.options.console = parseEnum(v!, ['interactive', 'read-only', 'passive', 'pipe', 'autopipe'] as const, 'console mode')),
  },
  { long: 'pipe', short: 'P', arg: 'none', apply: (cl) => void (cl.options.console = 'pipe') },
  { long: 'set-credential', arg: 'required', apply: (cl, v) => void (cl.options.credentials = addCredential(cl.options.credentials ?? [], parseSetCredential(v!))) },
  { long: 'load-credential', arg: 'required', apply: (cl, v) => void (cl.options.credentials = addCredential(cl.options.credentials ?? [], parseLoadCredential(v!))) },
];

/**
 * Long and short names of the networking and user-namespace options (defined in network.ts).
 * Only their names live here, so that a plain start does not load the networking code;
 * a unit test keeps this list in step with network.ts.
 */
export const NETWORK_OPTION_NAMES = {
  long: [
    'private-network', 'network-veth', 'network-veth-extra', 'network-bridge', 'network-zone', 'network-interface',
    'network-macvlan', 'network-ipvlan', 'network-namespace-path', 'port', 'network-auto', 'private-users',
    'private-users-ownership', 'private-users-chown',
  ],
  short: ['n', 'p', 'U'],
};

/** True when argv may use one of the network.ts options (a false positive only costs load time). */
export function mentionsNetworkOption(argv: readonly string[]): boolean {
  return argv.some((a) => {
    if (a.startsWith('--')) return NETWORK_OPTION_NAMES.long.includes(a.slice(2).split('=')[0]!);
    return /^-[A-Za-z]/.test(a) && NETWORK_OPTION_NAMES.short.some((c) => a.slice(1).includes(c));
  });
}

/** Networking and user namespaces (owned by the net part, src/nspawn/network.ts) in our table's terms. */
function networkOptionDefs(defs: readonly NetOptionDef[]): OptionDef[] {
  return defs.map(
    (d): OptionDef => ({
      long: d.long,
      ...(d.short ? { short: d.short } : {}),
      arg: d.arg,
      apply: (cl, v) => {
        const net = { ...cl.options.network };
        const users = { ...cl.options.userns };
        d.apply(net, users, v);
        if (Object.keys(net).length) cl.options.network = net;
        if (Object.keys(users).length) cl.options.userns = users;
      },
    }),
  );
}

function nonEmpty(v: string): string {
  if (v === '') throw new ValueError('empty value');
  return v;
}

function setStartMode(cl: CommandLine, mode: StartMode): void {
  const cur = cl.options.startMode;
  if (cur && cur !== mode) throw new UserError('--boot and --as-pid2 may not be combined');
  cl.options.startMode = mode;
}


function applyOption(cl: CommandLine, def: OptionDef, shown: string, value: string | undefined): void {
  try {
    def.apply(cl, value);
  } catch (err) {
    if (err instanceof ValueError) throw new UserError(`${shown}: ${err.message}`);
    throw err;
  }
}

/**
 * Parse argv (without node and script). Like getopt_long with a leading "+": options end at
 * "--" or at the first non-option, which starts the command.
 */
export function parseCommandLine(argv: readonly string[], networkDefs: readonly NetOptionDef[] = []): CommandLine {
  const table = [...OPTIONS, ...networkOptionDefs(networkDefs)];
  const byLong = new Map(table.filter((o) => o.long.length > 1).map((o) => [o.long, o]));
  const byShort = new Map(table.filter((o) => o.short).map((o) => [o.short!, o]));
  const cl: CommandLine = { options: {}, quiet: false, settings: 'yes', action: 'run' };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const def = byLong.get(name);
      if (!def) throw new UserError(`unrecognized option '--${name}'`, { hint: 'see --help' });
      let value: string | undefined = eq < 0 ? undefined : a.slice(eq + 1);
      if (def.arg === 'none' && value !== undefined) throw new UserError(`option '--${name}' doesn't allow an argument`);
      if (def.arg === 'required' && value === undefined) {
        if (i + 1 >= argv.length) throw new UserError(`option '--${name}' requires an argument`);
        value = argv[++i];
      }
      applyOption(cl, def, `--${name}`, value);
      if (cl.action !== 'run') return cl;
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      // A cluster of short options: "-bq", "-Dpath", "-D path".
      for (let j = 1; j < a.length; j++) {
        const c = a[j]!;
        const def = byShort.get(c);
        if (!def) throw new UserError(`invalid option -- '${c}'`, { hint: 'see --help' });
        let value: string | undefined;
        if (def.arg === 'required') {
          if (j + 1 < a.length) value = a.slice(j + 1);
          else if (i + 1 < argv.length) value = argv[++i];
          else throw new UserError(`option requires an argument -- '${c}'`);
          j = a.length;
        }
        applyOption(cl, def, def.long.length > 1 ? `--${def.long}` : `-${c}`, value);
        if (cl.action !== 'run') return cl;
      }
      continue;
    }
    break;
  }
  if (i < argv.length) cl.options.parameters = argv.slice(i);
  checkConflicts(cl.options);
  return cl;
}

/** The combinations systemd-nspawn refuses, with the same wording where it has one. */
export function checkConflicts(o: ContainerOptions): void {
  if (o.directory !== undefined && o.image !== undefined) throw new UserError('--directory= and --image= may not be combined');
  if (o.template !== undefined && o.image !== undefined) throw new UserError('--template= and --image= may not be combined');
  if (o.ephemeral && o.template !== undefined) throw new UserError('--ephemeral and --template= may not be combined');
  if (o.ephemeral && (o.linkJournal === 'host' || o.linkJournal === 'guest')) {
    throw new UserError('--ephemeral and --link-journal={host,guest} may not be combined');
  }
  if (o.readOnly && o.volatile !== undefined && o.volatile !== 'no') {
    throw new UserError('--read-only and --volatile= may not be combined (--volatile already makes the root read-only)');
  }
  if (o.ephemeral && o.volatile !== undefined && o.volatile !== 'no') {
    throw new UserError('--ephemeral and --volatile= may not be combined');
  }
  // (nspawn: "AmbientCapability= setting is not useful for boot mode")
  if (o.capabilityAmbient && o.startMode === 'boot') throw new UserError('--ambient-capability= may not be combined with --boot');
}

/** The --help text; `networkHelp` is network.ts' NETWORK_HELP section. */
export const helpText = (networkHelp: string): string => `mctl-nspawn [OPTIONS...] [COMMAND [ARGUMENTS...]]

Spawn a command or boot an OS in a light-weight container.

  -h --help                 Show this help
     --version              Print the version
  -q --quiet                Do not show status information
     --settings=MODE        Load a .nspawn settings file: yes, no, trusted, override

Image:
  -D --directory=PATH       Root directory for the container
     --template=PATH        Populate the root directory from this one if it is missing
  -x --ephemeral            Run on a throw-away snapshot of the root, removed at exit
  -i --image=PATH           Root file system disk image
     --image-policy=POLICY  Which partitions of the image may be used (systemd.image-policy)
     --read-only            Mount the root directory read-only
     --volatile[=MODE]      Volatile mode: no, yes, state, overlay

Execution:
  -a --as-pid2              Run a stub init as PID 1 and the command as PID 2
  -b --boot                 Boot the OS (run its init)
     --chdir=PATH           Working directory in the container
  -E --setenv=NAME[=VALUE]  Set an environment variable for PID 1
  -u --user=USER            Run the command as this user or UID
     --kill-signal=SIGNAL   Signal that asks PID 1 to shut down
     --notify-ready=BOOL    Wait for READY=1 from the payload before reporting ready

System identity:
  -M --machine=NAME         Machine name (default: the directory's name)
     --hostname=NAME        Host name inside the container (default: machine name)
     --uuid=UUID            Machine UUID

Properties:
  -S --slice=SLICE          Slice for the container's scope
     --property=NAME=VALUE  Scope unit property
     --register=MODE        Register with org.freedesktop.machine1: yes, no, auto
     --keep-unit            Use the service unit we run in instead of a new scope

Security:
     --capability=CAP       Keep this capability in addition to the defaults
     --drop-capability=CAP  Drop this capability from the defaults
     --ambient-capability=CAP
                            Raise this capability in the payload's ambient set (it
                            must be in the bounding set; not with --boot)
     --no-new-privileges[=BOOL]
                            Set PR_SET_NO_NEW_PRIVS for the payload
     --suppress-sync=BOOL   Make sync(), fsync()… no-ops and refuse O_SYNC/O_DSYNC
                            (fast, but data is at risk on a host crash)
     --system-call-filter=LIST
                            Allow these system calls or @groups in addition to the
                            defaults; with a leading ~, refuse them (EPERM)

Resources:
     --rlimit=NAME=LIMIT    Resource limit for the payload: NAME is NOFILE, NPROC,
                            CORE, AS, CPU… (RLIMIT_ optional), LIMIT is
                            SOFT[:HARD] or infinity (default NOFILE: 1024 soft)
     --oom-score-adjust=N   OOM score adjustment of the payload (-1000..1000)
     --cpu-affinity=CPUS    CPUs the payload may run on: numbers and ranges (0,2-3)
     --personality=ARCH     Architecture uname reports inside: x86 or x86-64

Integration:
     --resolv-conf=MODE     /etc/resolv.conf: off, copy-host, bind-host,
                            replace-host, delete, auto (and -static/-stub/-uplink)
     --timezone=MODE        /etc/localtime: off, copy, bind, symlink, delete, auto
     --link-journal=MODE    Journal linking: no, auto, guest, host, try-guest, try-host
  -j                        Same as --link-journal=try-guest

Mounts:
     --bind=SRC[:DST[:OPTS]]
                            Bind mount from the host (OPTS: rbind, norbind);
                            "\\:" is a literal colon, "+" makes SRC container-relative
     --bind-ro=SRC[:DST[:OPTS]]
                            The same, read-only
     --inaccessible=PATH    Hide a path behind an inaccessible node
     --tmpfs=PATH[:OPTS]    Mount an empty tmpfs (default mode=0755)
     --overlay=LOWER[:LOWER...]:UPPER:DST
                            Overlay mount from host directories
     --overlay-ro=LOWER[:LOWER...]:DST
                            Read-only overlay mount
${networkHelp}
Input/Output:
     --console=MODE         interactive, read-only, passive, pipe, autopipe
  -P --pipe                 Same as --console=pipe

Credentials:
     --set-credential=ID:VALUE
                            Pass a credential with this value
     --load-credential=ID:PATH
                            Pass a credential read from a file

See docs/nspawn.md for details and the differences from systemd-nspawn.
`;
