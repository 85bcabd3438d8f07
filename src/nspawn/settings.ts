// .nspawn settings files (systemd.nspawn(5)): lookup, parsing, trust and the merge with the
// command line. A file is trusted when it lies in /etc/systemd/nspawn or /run/systemd/nspawn,
// or when --settings=trusted says so; an untrusted file (next to the image) cannot grant
// privileges: the keys listed in UNTRUSTED_IGNORED are dropped with a warning.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UserError } from '../common/errors.js';
import { parseOomScoreAdjust, parseRlimitValue, RLIMIT_NAMES } from './rlimits.js';
import { parseCpuAffinity, parsePersonality } from './process-attrs.js';
import {
  ValueError, parseBoolean, parseVolatile, parseKillSignal, parseId128, parseHostnameValue, parseEnvironment,
  parseAbsolutePath, parseBind, parseTmpfs, parseOverlay, parseInaccessible, parseResolvConf, parseTimezone,
  parseLinkJournal, parseCapabilityList, parseAmbientCapabilityList, parseSuppressSync, addSyscallFilter, parseUser,
  type ContainerOptions, type SettingsMode,
} from './options.js';

export const TRUSTED_SETTINGS_DIRS = ['/etc/systemd/nspawn', '/run/systemd/nspawn'];

/** [Network] keys, kept as written for the networking part (src/nspawn/network.ts) to apply. */
export interface NetworkSettings {
  private?: boolean;
  virtualEthernet?: boolean;
  virtualEthernetExtra?: string[];
  interface?: string[];
  macvlan?: string[];
  ipvlan?: string[];
  bridge?: string;
  zone?: string;
  port?: string[];
}

/** User-namespace keys, kept as written for src/nspawn/userns.ts. */
export interface UserNamespaceSettings {
  privateUsers?: string;
  privateUsersOwnership?: string;
}

export interface SettingsFile {
  path: string;
  trusted: boolean;
  options: ContainerOptions;
  network: NetworkSettings;
  userNamespace: UserNamespaceSettings;
  /** Keys that parsed fine but that mctl-nspawn does not implement (reported, not applied). */
  unsupported: string[];
  /** Warnings for the user (unknown keys, keys ignored in an untrusted file). */
  warnings: string[];
}

// Keys whose values are checked but which this launcher does not act on (yet).
const UNSUPPORTED = new Set([
  'Exec.PivotRoot', 'Files.BindUser',
]);
const LIMITS = RLIMIT_NAMES.map((l) => `Limit${l}`);

/** Keys an untrusted file may not set (systemd.nspawn(5), "untrusted" settings). */
const UNTRUSTED_IGNORED = new Set([
  'Exec.Capability', 'Exec.AmbientCapability', 'Exec.MachineID', 'Exec.PrivateUsers', 'Exec.SystemCallFilter',
  'Exec.OOMScoreAdjust', 'Exec.CPUAffinity', 'Exec.LinkJournal', 'Exec.PivotRoot',
  ...LIMITS.map((l) => `Exec.${l}`),
  'Files.Bind', 'Files.BindReadOnly', 'Files.TemporaryFileSystem', 'Files.Inaccessible', 'Files.Overlay',
  'Files.OverlayReadOnly', 'Files.BindUser', 'Files.PrivateUsersOwnership', 'Files.PrivateUsersChown',
  'Network.Private', 'Network.VirtualEthernet', 'Network.VirtualEthernetExtra', 'Network.Interface', 'Network.MACVLAN',
  'Network.IPVLAN', 'Network.Bridge', 'Network.Zone', 'Network.Port',
]);

/** Split a value into words the way systemd's extract_first_word(EXTRACT_UNQUOTE) does. */
export function splitWords(text: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < text.length) {
    while (i < text.length && /\s/.test(text[i]!)) i++;
    if (i >= text.length) break;
    let word = '';
    let quote: string | null = null;
    for (; i < text.length; i++) {
      const c = text[i]!;
      if (quote) {
        if (c === quote) quote = null;
        else if (c === '\\' && quote === '"' && i + 1 < text.length) word += text[++i];
        else word += c;
      } else if (c === '"' || c === "'") quote = c;
      else if (c === '\\' && i + 1 < text.length) word += text[++i];
      else if (/\s/.test(c)) break;
      else word += c;
    }
    if (quote) throw new ValueError('unbalanced quotes');
    words.push(word);
  }
  return words;
}

type Applier = (s: SettingsFile, value: string) => void;
const o = (s: SettingsFile) => s.options;
const push = <T>(a: T[] | undefined, ...v: T[]): T[] => [...(a ?? []), ...v];
const mount = (parse: (v: string) => NonNullable<ContainerOptions['mounts']>[number]): Applier => (s, v) => {
  o(s).mounts = push(o(s).mounts, parse(v));
};
const strList = (key: keyof NetworkSettings): Applier => (s, v) => {
  (s.network as Record<string, unknown>)[key] = v === '' ? [] : push(s.network[key] as string[] | undefined, ...splitWords(v));
};
const ignoreChecked = (check: (v: string) => unknown): Applier => (_s, v) => void check(v);

const KEYS: Record<string, Applier> = {
  'Exec.Boot': (s, v) => {
    const on = parseBoolean(v);
    if (on && o(s).startMode === 'pid2') throw new ValueError('Boot= and ProcessTwo= may not both be enabled');
    o(s).startMode = on ? 'boot' : (o(s).startMode === 'boot' ? 'pid1' : o(s).startMode ?? 'pid1');
  },
  'Exec.ProcessTwo': (s, v) => {
    const on = parseBoolean(v);
    if (on && o(s).startMode === 'boot') throw new ValueError('Boot= and ProcessTwo= may not both be enabled');
    o(s).startMode = on ? 'pid2' : (o(s).startMode === 'pid2' ? 'pid1' : o(s).startMode ?? 'pid1');
  },
  'Exec.Ephemeral': (s, v) => void (o(s).ephemeral = parseBoolean(v)),
  'Exec.Parameters': (s, v) => void (o(s).parameters = v === '' ? [] : push(o(s).parameters, ...splitWords(v))),
  'Exec.Environment': (s, v) => {
    if (v === '') o(s).environment = [];
    for (const w of splitWords(v)) {
      if (!w.includes('=')) throw new ValueError(`invalid environment assignment '${w}'`);
      o(s).environment = push(o(s).environment, parseEnvironment(w)!);
    }
  },
  'Exec.User': (s, v) => void (o(s).user = parseUser(v)),
  'Exec.WorkingDirectory': (s, v) => void (o(s).workingDirectory = parseAbsolutePath(v)),
  'Exec.PivotRoot': ignoreChecked((v) => v.split(':').forEach(parseAbsolutePath)),
  'Exec.Capability': (s, v) => void (o(s).capabilityAdd = (o(s).capabilityAdd ?? 0n) | parseCapabilityList(v)),
  'Exec.DropCapability': (s, v) => void (o(s).capabilityDrop = (o(s).capabilityDrop ?? 0n) | parseCapabilityList(v)),
  'Exec.AmbientCapability': (s, v) => void (o(s).capabilityAmbient = (o(s).capabilityAmbient ?? 0n) | parseAmbientCapabilityList(v)),
  'Exec.NoNewPrivileges': (s, v) => void (o(s).noNewPrivileges = parseBoolean(v)),
  'Exec.KillSignal': (s, v) => void (o(s).killSignal = parseKillSignal(v)),
  'Exec.Personality': (s, v) => void (o(s).personality = parsePersonality(v)),
  'Exec.MachineID': (s, v) => void (o(s).uuid = parseId128(v)),
  'Exec.PrivateUsers': (s, v) => void (s.userNamespace.privateUsers = v),
  'Exec.NotifyReady': (s, v) => void (o(s).notifyReady = parseBoolean(v)),
  'Exec.SystemCallFilter': (s, v) => void (o(s).syscallFilter = addSyscallFilter(o(s).syscallFilter, v)),
  'Exec.OOMScoreAdjust': (s, v) => void (o(s).oomScoreAdjust = parseOomScoreAdjust(v)),
  // repeated assignments extend the set, an empty one resets it (systemd's parse_cpu_set_extend)
  'Exec.CPUAffinity': (s, v) => {
    const cpus = parseCpuAffinity(v);
    o(s).cpuAffinity = cpus.length === 0 ? [] : [...new Set([...(o(s).cpuAffinity ?? []), ...cpus])].sort((a, b) => a - b);
  },
  'Exec.Hostname': (s, v) => void (o(s).hostname = parseHostnameValue(v)),
  'Exec.ResolvConf': (s, v) => void (o(s).resolvConf = parseResolvConf(v)),
  'Exec.Timezone': (s, v) => void (o(s).timezone = parseTimezone(v)),
  'Exec.LinkJournal': (s, v) => void (o(s).linkJournal = parseLinkJournal(v)),
  'Exec.SuppressSync': (s, v) => void (o(s).suppressSync = parseSuppressSync(v)),
  ...Object.fromEntries(RLIMIT_NAMES.map((name) => [`Exec.Limit${name}`, (s: SettingsFile, v: string) => {
    o(s).rlimits = { ...o(s).rlimits, [name]: parseRlimitValue(name, v) };
  }])),
  'Files.ReadOnly': (s, v) => void (o(s).readOnly = parseBoolean(v)),
  'Files.Volatile': (s, v) => void (o(s).volatile = parseVolatile(v)),
  'Files.Bind': mount((v) => parseBind(v, false)),
  'Files.BindReadOnly': mount((v) => parseBind(v, true)),
  'Files.BindUser': ignoreChecked(() => undefined),
  'Files.TemporaryFileSystem': mount(parseTmpfs),
  'Files.Inaccessible': mount(parseInaccessible),
  'Files.Overlay': mount((v) => parseOverlay(v, false)),
  'Files.OverlayReadOnly': mount((v) => parseOverlay(v, true)),
  'Files.PrivateUsersOwnership': (s, v) => void (s.userNamespace.privateUsersOwnership = v),
  'Files.PrivateUsersChown': (s, v) => void (s.userNamespace.privateUsersOwnership = parseBoolean(v) ? 'chown' : 'off'),
  'Network.Private': (s, v) => void (s.network.private = parseBoolean(v)),
  'Network.VirtualEthernet': (s, v) => void (s.network.virtualEthernet = parseBoolean(v)),
  'Network.VirtualEthernetExtra': strList('virtualEthernetExtra'),
  'Network.Interface': strList('interface'),
  'Network.MACVLAN': strList('macvlan'),
  'Network.IPVLAN': strList('ipvlan'),
  'Network.Bridge': (s, v) => void (s.network.bridge = v),
  'Network.Zone': (s, v) => void (s.network.zone = v),
  'Network.Port': strList('port'),
};

/** Parse the text of a .nspawn file. Errors carry "PATH:LINE: Key=: problem". */
export function parseSettings(text: string, path: string, trusted: boolean): SettingsFile {
  const s: SettingsFile = { path, trusted, options: {}, network: {}, userNamespace: {}, unsupported: [], warnings: [] };
  const lines = text.split('\n');
  let section: string | null = null;
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i]!.trim();
    // A trailing backslash continues the line (comments inside a continuation are dropped).
    while (line.endsWith('\\') && i + 1 < lines.length) {
      const next = lines[++i]!.trim();
      line = line.slice(0, -1) + (next.startsWith('#') || next.startsWith(';') ? '' : ` ${next}`);
    }
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const where = `${path}:${lineNo}`;
    if (line.startsWith('[')) {
      if (!line.endsWith(']') || line.length < 3) throw new UserError(`${where}: invalid section header '${line}'`);
      section = line.slice(1, -1);
      if (!['Exec', 'Files', 'Network'].includes(section)) s.warnings.push(`${where}: unknown section [${section}], ignoring`);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) throw new UserError(`${where}: expected KEY=VALUE, got '${line}'`);
    if (section === null) throw new UserError(`${where}: assignment outside of a section`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    const full = `${section}.${key}`;
    const apply = KEYS[full];
    if (!apply) {
      if (['Exec', 'Files', 'Network'].includes(section)) s.warnings.push(`${where}: unknown key ${key}= in [${section}], ignoring`);
      continue;
    }
    if (!trusted && UNTRUSTED_IGNORED.has(full)) {
      s.warnings.push(`${where}: ignoring ${key}=, ${path} is not trusted (use --settings=trusted or put it in /etc/systemd/nspawn)`);
      continue;
    }
    try {
      apply(s, value);
    } catch (err) {
      if (err instanceof ValueError) throw new UserError(`${where}: ${key}=: ${err.message}`);
      throw err;
    }
    if (UNSUPPORTED.has(full) && !s.unsupported.includes(key)) s.unsupported.push(key);
  }
  return s;
}

export interface SettingsLookup {
  /** Machine name the file is named after (before the -x random suffix). */
  machineName: string;
  /** The -D directory or the --image file; its parent is the untrusted search place. */
  rootPath: string | undefined;
  mode: SettingsMode;
  trustedDirs?: readonly string[];
}

/** Find and parse NAME.nspawn; null when there is none or --settings=no. */
export function loadSettings(lookup: SettingsLookup): SettingsFile | null {
  if (lookup.mode === 'no') return null;
  const trustedDirs = lookup.trustedDirs ?? TRUSTED_SETTINGS_DIRS;
  const file = `${lookup.machineName}.nspawn`;
  for (const dir of trustedDirs) {
    const text = readIfExists(join(dir, file));
    if (text !== null) return parseSettings(text, join(dir, file), true);
  }
  if (lookup.rootPath !== undefined) {
    const path = join(dirname(lookup.rootPath.replace(/\/+$/, '') || '/'), file);
    const text = readIfExists(path);
    if (text !== null) return parseSettings(text, path, lookup.mode === 'trusted');
  }
  return null;
}

function readIfExists(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new UserError(`cannot read ${path}: ${code ?? String(err)}`);
  }
}

// Settings that travel together: if the command line sets any of them, the file's are not used
// (nspawn's settings mask groups). Everything else merges field by field.
const GROUPS: Array<Array<keyof ContainerOptions>> = [['capabilityAdd', 'capabilityDrop']];

/**
 * Combine command line and file: with --settings=yes/trusted what the command line set wins,
 * with override the file wins. Returns a new options object.
 */
export function mergeSettings(cmdline: ContainerOptions, file: SettingsFile | null, mode: SettingsMode): ContainerOptions {
  if (!file) return { ...cmdline };
  const merged: ContainerOptions = { ...cmdline };
  const fileOpts = file.options;
  const grouped = new Set(GROUPS.flat());
  const take = (keys: Array<keyof ContainerOptions>) => {
    const fileHas = keys.some((k) => fileOpts[k] !== undefined);
    const cmdHas = keys.some((k) => cmdline[k] !== undefined);
    if (!fileHas) return;
    if (mode === 'override' || !cmdHas) for (const k of keys) (merged as Record<string, unknown>)[k] = fileOpts[k];
  };
  for (const g of GROUPS) take(g);
  for (const k of Object.keys(fileOpts) as Array<keyof ContainerOptions>) if (!grouped.has(k)) take([k]);
  // each Limit*= is a setting of its own (nspawn masks them one by one)
  if (fileOpts.rlimits) merged.rlimits = mode === 'override' ? { ...cmdline.rlimits, ...fileOpts.rlimits } : { ...fileOpts.rlimits, ...cmdline.rlimits };
  return merged;
}
