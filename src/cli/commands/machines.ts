// list, status, show: what is running and what it looks like.
import { readFileSync, readdirSync } from 'node:fs';
import type { CommandModule } from 'yargs';
import type { GlobalArgs } from '../session.js';
import type { Variant } from 'dbus-next';
import { Machine1, MACHINE_IFACE, type Address, type PropertyMap } from '../machine1.js';
import { Systemd1 } from '../systemd1.js';
import { byName, formatAddress, formatRelative, formatTimestamp } from '../format.js';
import { isJson, printJson, renderFields, renderTable } from '../output.js';
import { cgroupTreeLines, containerCgroupFromLeader, unitCgroupFromLeader } from '../cgroup-tree.js';
import { propertiesJson, renderProperties } from '../properties.js';
import { withSession, machineName, stringList, type Args } from '../run.js';
import { unitJournal } from '../journal.js';
import { UserError } from '../../common/errors.js';
import type { Session } from '../session.js';

interface ListArgs {
  all: boolean;
  'max-addresses': string;
}

/** Errors of per-machine extras (OS, addresses) only blank a column, as in machinectl. */
async function optional<T>(p: Promise<T>, fallback: T): Promise<T> {
  try {
    return await p;
  } catch {
    return fallback;
  }
}

function maxAddresses(text: string): number {
  if (text === 'all') return Infinity;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`invalid --max-addresses '${text}' (a number or "all")`);
  return n;
}

export interface MachineRow {
  machine: string;
  class: string;
  service: string;
  os: string | null;
  version: string | null;
  addresses: string[];
}

async function listRows(m1: Machine1, all: boolean): Promise<MachineRow[]> {
  const machines = (await m1.listMachines()).filter((m) => all || !m.name.startsWith('.')).sort(byName);
  return Promise.all(
    machines.map(async (m) => {
      const os = await optional(m1.osRelease(m.name), {} as Record<string, string>);
      const addrs = await optional(m1.addresses(m.name), [] as Address[]);
      return {
        machine: m.name,
        class: m.class,
        service: m.service,
        os: os['ID'] ?? null,
        version: os['VERSION_ID'] ?? null,
        addresses: addrs.map((a) => formatAddress(a.family, a.bytes)),
      };
    }),
  );
}

const list: CommandModule<GlobalArgs, Args<ListArgs>> = {
  command: 'list',
  describe: 'List running machines',
  builder: (y) =>
    y
      .option('all', { alias: 'a', type: 'boolean', default: false, describe: 'Also show machines whose name starts with "." (the host)' })
      .option('max-addresses', { type: 'string', default: '1', describe: 'Addresses shown per machine (a number or "all")' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const limit = maxAddresses(argv['max-addresses']);
      const rows = await listRows(new Machine1(s), argv.all);
      if (isJson(argv.output)) return printJson(rows, argv.output);
      const table = rows.map((r) => {
        const shown = r.addresses.slice(0, limit);
        const more = r.addresses.length > shown.length ? '…' : '';
        return [s.paint.bold(r.machine), r.class, r.service, r.os ?? '-', r.version ?? '-', shown.length ? shown.join(' ') + more : '-'];
      });
      process.stdout.write(renderTable(['MACHINE', 'CLASS', 'SERVICE', 'OS', 'VERSION', 'ADDRESSES'], table, { legend: !argv['no-legend'], paint: s.paint }));
      if (!argv['no-legend']) process.stdout.write(rows.length ? `\n${rows.length} machine${rows.length === 1 ? '' : 's'} listed.\n` : 'No machines.\n');
    }),
};

function interfaceNames(): Map<number, string> {
  const map = new Map<number, string>();
  try {
    for (const name of readdirSync('/sys/class/net')) {
      try {
        map.set(Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8')), name);
      } catch {
        // Interface vanished while we looked.
      }
    }
  } catch {
    // No sysfs: show indexes.
  }
  return map;
}

function comm(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

const val = <T>(props: PropertyMap, key: string, fallback: T): T => ((props[key] as Variant | undefined)?.value as T | undefined) ?? fallback;

/** Everything `status` shows about one machine, also its JSON form (documented in docs/mctl.md). */
export interface MachineStatus {
  name: string;
  id: string;
  class: string;
  service: string;
  unit: string;
  leader: number;
  root: string;
  state: string;
  since: number;
  networkInterfaces: { index: number; name: string | null }[];
  addresses: string[];
  os: Record<string, string>;
  uidShift: number | null;
  cgroup: string | null;
}

export async function machineStatus(s: Session, m1: Machine1, name: string): Promise<MachineStatus> {
  const path = await m1.getMachine(name);
  const props = await m1.properties(path, MACHINE_IFACE, { machine: name });
  const ifnames = interfaceNames();
  const unit = val(props, 'Unit', '');
  const leader = val(props, 'Leader', 0);
  let cgroup: string | undefined;
  if (unit) cgroup = (await new Systemd1(s).controlGroup(unit)) ?? (leader ? unitCgroupFromLeader(leader, unit) : undefined);
  else if (leader) cgroup = containerCgroupFromLeader(leader);
  return {
    name: val(props, 'Name', name),
    id: Buffer.from(val<Buffer | number[]>(props, 'Id', [])).toString('hex'),
    class: val(props, 'Class', ''),
    service: val(props, 'Service', ''),
    unit,
    leader,
    root: val(props, 'RootDirectory', ''),
    state: val(props, 'State', ''),
    since: Number(BigInt(val<bigint | number>(props, 'Timestamp', 0))),
    networkInterfaces: val<number[]>(props, 'NetworkInterfaces', []).map((i) => ({ index: i, name: ifnames.get(i) ?? null })),
    addresses: (await optional(m1.addresses(name), [] as Address[])).map((a) => formatAddress(a.family, a.bytes)),
    os: await optional(m1.osRelease(name), {} as Record<string, string>),
    uidShift: await optional(m1.uidShift(name), null as number | null),
    cgroup: cgroup ?? null,
  };
}

function renderStatus(st: MachineStatus, s: Session, full: boolean, journal: string[]): string {
  const p = s.paint;
  const fields: [string, string][] = [];
  if (st.since) fields.push(['Since', `${formatTimestamp(BigInt(st.since))}; ${formatRelative(BigInt(st.since))}`]);
  if (st.leader) fields.push(['Leader', `${st.leader}${comm(st.leader) ? ` (${comm(st.leader)})` : ''}`]);
  if (st.service || st.class) fields.push(['Service', `${st.service}${st.class ? `; class ${st.class}` : ''}`]);
  if (st.state) fields.push(['State', st.state === 'running' ? p.green(st.state) : st.state]);
  if (st.root) fields.push(['Root', st.root]);
  if (st.networkInterfaces.length) fields.push(['Iface', st.networkInterfaces.map((i) => i.name ?? String(i.index)).join(' ')]);
  if (st.addresses.length) fields.push(['Address', st.addresses.join('\n')]);
  const pretty = st.os['PRETTY_NAME'] ?? st.os['NAME'];
  if (pretty) fields.push(['OS', pretty]);
  if (st.uidShift !== null) fields.push(['UID Shift', String(st.uidShift)]);
  const width = full || !process.stdout.isTTY ? Infinity : Math.max(40, (process.stdout.columns ?? 80) - 18);
  const tree = st.cgroup ? cgroupTreeLines(st.cgroup, width) : [];
  // A machine registered without a unit (no systemd) still has a control group to show.
  if (st.unit) fields.push(['Unit', [st.unit, ...tree].join('\n')]);
  else if (st.cgroup) fields.push(['CGroup', [st.cgroup, ...tree].join('\n')]);
  // machinectl prints the journal excerpt after an empty line
  return `${p.bold(st.name)}${st.id ? `(${st.id})` : ''}\n${renderFields(fields)}${journal.length ? `\n${journal.join('\n')}\n` : ''}`;
}

function lineCount(v: unknown): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UserError(`invalid --lines '${String(v)}'`, { hint: 'a number of lines, 0 for none', exitCode: 2 });
  return n;
}

interface StatusArgs {
  name: string[];
  full: boolean;
  lines: unknown;
}

const status: CommandModule<GlobalArgs, Args<StatusArgs>> = {
  command: 'status <name..>',
  describe: 'Show information about one or more machines (with their process tree)',
  builder: (y) =>
    y
      .positional('name', { type: 'string', array: true, demandOption: true, describe: 'machine name' })
      .option('full', { alias: 'l', type: 'boolean', default: false, describe: 'Do not shorten process command lines and journal lines' })
      .option('lines', { alias: 'n', type: 'string', default: '10', describe: 'Journal lines to show (0 for none)' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const names = stringList(argv.name).map(machineName);
      const lines = lineCount(argv.lines);
      const m1 = new Machine1(s);
      const all: MachineStatus[] = [];
      for (const n of names) all.push(await machineStatus(s, m1, n));
      if (isJson(argv.output)) return printJson(names.length === 1 ? all[0] : all, argv.output);
      // Only the local journal, as machinectl: with -M the unit lives in the container's journal.
      const width = argv.full || !process.stdout.isTTY ? Infinity : Math.max(40, process.stdout.columns ?? 80);
      const journals = await Promise.all(all.map((st) => (argv.machine ? [] : unitJournal(st.unit, { lines, sinceUsec: st.since, width }))));
      process.stdout.write(all.map((st, i) => renderStatus(st, s, argv.full, journals[i] ?? [])).join('\n'));
    }),
};

interface ShowArgs {
  name?: string[] | undefined;
  property: string | string[];
  value: boolean;
  all: boolean;
}

export function propertyList(v: unknown): string[] {
  return stringList(v).flatMap((p) => p.split(',')).filter((p) => p.length > 0);
}

const show: CommandModule<GlobalArgs, Args<ShowArgs>> = {
  command: 'show [name..]',
  describe: 'Show properties of machines, or of the machine manager with no name',
  builder: (y) =>
    y
      .positional('name', { type: 'string', array: true, describe: 'machine name' })
      .option('property', { alias: 'p', type: 'string', default: [] as string[], describe: 'Show only this property (repeatable, or comma-separated)' })
      .option('value', { type: 'boolean', default: false, describe: 'Print values only, without NAME=' })
      .option('all', { alias: 'a', type: 'boolean', default: false, describe: 'Also show empty properties' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const m1 = new Machine1(s);
      const names = stringList(argv.name).map(machineName);
      const opts = { properties: propertyList(argv.property), all: argv.all, valueOnly: argv.value };
      const sets: PropertyMap[] = [];
      if (names.length === 0) sets.push(await m1.managerProperties());
      for (const n of names) sets.push(await m1.properties(await m1.getMachine(n), MACHINE_IFACE, { machine: n }));
      if (isJson(argv.output)) {
        const objs = sets.map((p) => propertiesJson(p, opts));
        return printJson(names.length > 1 ? objs : objs[0], argv.output);
      }
      process.stdout.write(sets.map((p) => renderProperties(p, opts)).join('\n'));
    }),
};

export const machineCommands = [list, status, show];
