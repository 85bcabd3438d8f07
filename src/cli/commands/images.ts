// Image verbs: list-images, image-status, show-image, clone, rename, read-only, remove,
// set-limit, clean — all through the machine manager (so polkit/root rules apply as in machinectl).
import type { CommandModule } from 'yargs';
import type { GlobalArgs } from '../session.js';
import type { Variant } from 'dbus-next';
import { UserError } from '../../common/errors.js';
import { Machine1, IMAGE_IFACE, type PropertyMap } from '../machine1.js';
import { UINT64_MAX, byName, formatBytes, formatRelative, formatTimestamp, parseBoolean, parseSize } from '../format.js';
import { isJson, printJson, renderFields, renderTable } from '../output.js';
import { propertiesJson, renderProperties } from '../properties.js';
import { propertyList } from './machines.js';
import { withSession, imageName, stringList, type Args } from '../run.js';

const num = (v: bigint): number | null => (v === UINT64_MAX || v === 0n ? null : Number(v));

interface ListImagesArgs {
  all: boolean;
}

const listImages: CommandModule<GlobalArgs, Args<ListImagesArgs>> = {
  command: 'list-images',
  describe: 'List images in the pool',
  builder: (y) => y.option('all', { alias: 'a', type: 'boolean', default: false, describe: 'Also show hidden images (names starting with ".")' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const images = (await new Machine1(s).listImages()).filter((i) => argv.all || !i.name.startsWith('.')).sort(byName);
      if (isJson(argv.output)) {
        return printJson(
          images.map((i) => ({ name: i.name, type: i.type, ro: i.readOnly, usage: i.usage === UINT64_MAX ? null : Number(i.usage), created: num(i.crtime), modified: num(i.mtime) })),
          argv.output,
        );
      }
      const rows = images.map((i) => [
        s.paint.bold(i.name),
        i.type,
        i.readOnly ? s.paint.red('yes') : 'no',
        formatBytes(i.usage),
        i.crtime ? formatTimestamp(i.crtime) : '-',
        i.mtime ? formatTimestamp(i.mtime) : '-',
      ]);
      process.stdout.write(renderTable(['NAME', 'TYPE', 'RO', 'USAGE', 'CREATED', 'MODIFIED'], rows, { legend: !argv['no-legend'], paint: s.paint }));
      if (!argv['no-legend']) process.stdout.write(images.length ? `\n${images.length} image${images.length === 1 ? '' : 's'} listed.\n` : 'No images.\n');
    }),
};

const pv = <T>(p: PropertyMap, k: string): T | undefined => (p[k] as Variant | undefined)?.value as T | undefined;

async function optional<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch {
    return undefined;
  }
}

/** `image-status` JSON (documented in docs/mctl.md). */
export interface ImageStatus {
  name: string;
  path: string;
  type: string;
  readOnly: boolean;
  hostname: string | null;
  machineId: string | null;
  os: Record<string, string>;
  machineInfo: Record<string, string>;
  created: number | null;
  modified: number | null;
  usage: number | null;
  usageExclusive: number | null;
  limit: number | null;
  limitExclusive: number | null;
}

interface NamesArgs {
  name: string[];
}

const imageStatus: CommandModule<GlobalArgs, Args<NamesArgs>> = {
  command: 'image-status <name..>',
  describe: 'Show information about images',
  builder: (y) => y.positional('name', { type: 'string', array: true, demandOption: true, describe: 'image name' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const m1 = new Machine1(s);
      const all: ImageStatus[] = [];
      for (const name of stringList(argv.name).map(imageName)) {
        const props = await m1.properties(await m1.getImage(name), IMAGE_IFACE, { image: name });
        const big = (k: string) => BigInt(pv<bigint | number>(props, k) ?? 0);
        const id = await optional(m1.imageCall('GetImageMachineID', name));
        const idBuf = id ? Buffer.from(id[0] as Buffer) : Buffer.alloc(0);
        all.push({
          name: pv<string>(props, 'Name') ?? name,
          path: pv<string>(props, 'Path') ?? '',
          type: pv<string>(props, 'Type') ?? '',
          readOnly: pv<boolean>(props, 'ReadOnly') ?? false,
          hostname: ((await optional(m1.imageCall('GetImageHostname', name)))?.[0] as string | undefined) || null,
          machineId: idBuf.length ? idBuf.toString('hex') : null,
          os: ((await optional(m1.imageCall('GetImageOSRelease', name)))?.[0] as Record<string, string> | undefined) ?? {},
          machineInfo: ((await optional(m1.imageCall('GetImageMachineInfo', name)))?.[0] as Record<string, string> | undefined) ?? {},
          created: num(big('CreationTimestamp')),
          modified: num(big('ModificationTimestamp')),
          usage: num(big('Usage')),
          usageExclusive: num(big('UsageExclusive')),
          limit: num(big('Limit')),
          limitExclusive: num(big('LimitExclusive')),
        });
      }
      if (isJson(argv.output)) return printJson(all.length === 1 ? all[0] : all, argv.output);
      const text = all.map((st) => {
        const f: [string, string][] = [];
        f.push(['Path', st.path]);
        f.push(['Type', st.type]);
        if (st.hostname) f.push(['Hostname', st.hostname]);
        if (st.machineId) f.push(['Machine ID', st.machineId]);
        const pretty = st.os['PRETTY_NAME'] ?? st.os['NAME'];
        if (pretty) f.push(['OS', pretty]);
        f.push(['RO', st.readOnly ? s.paint.red('read-only') : 'writable']);
        if (st.created) f.push(['Created', `${formatTimestamp(st.created)}; ${formatRelative(st.created)}`]);
        if (st.modified) f.push(['Modified', `${formatTimestamp(st.modified)}; ${formatRelative(st.modified)}`]);
        if (st.usage !== null) f.push(['Usage', `${formatBytes(st.usage)}${st.usageExclusive !== null && st.usageExclusive !== st.usage ? ` (exclusive: ${formatBytes(st.usageExclusive)})` : ''}`]);
        if (st.limit !== null) f.push(['Limit', `${formatBytes(st.limit)}${st.limitExclusive !== null && st.limitExclusive !== st.limit ? ` (exclusive: ${formatBytes(st.limitExclusive)})` : ''}`]);
        return `${s.paint.bold(st.name)}\n${renderFields(f)}`;
      });
      process.stdout.write(text.join('\n'));
    }),
};

interface ShowImageArgs {
  name?: string[] | undefined;
  property: string | string[];
  value: boolean;
  all: boolean;
}

const showImage: CommandModule<GlobalArgs, Args<ShowImageArgs>> = {
  command: 'show-image [name..]',
  describe: 'Show properties of images, or of the pool with no name',
  builder: (y) =>
    y
      .positional('name', { type: 'string', array: true, describe: 'image name' })
      .option('property', { alias: 'p', type: 'string', default: [] as string[], describe: 'Show only this property (repeatable, or comma-separated)' })
      .option('value', { type: 'boolean', default: false, describe: 'Print values only' })
      .option('all', { alias: 'a', type: 'boolean', default: false, describe: 'Also show empty properties' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const m1 = new Machine1(s);
      const names = stringList(argv.name).map(imageName);
      const opts = { properties: propertyList(argv.property), all: argv.all, valueOnly: argv.value };
      const sets: PropertyMap[] = [];
      if (names.length === 0) sets.push(await m1.managerProperties());
      for (const n of names) sets.push(await m1.properties(await m1.getImage(n), IMAGE_IFACE, { image: n }));
      if (isJson(argv.output)) {
        const objs = sets.map((p) => propertiesJson(p, opts));
        return printJson(names.length > 1 ? objs : objs[0], argv.output);
      }
      process.stdout.write(sets.map((p) => renderProperties(p, opts)).join('\n'));
    }),
};

interface TwoNames {
  name: string;
  newName: string;
}

interface CloneArgs extends TwoNames {
  'read-only': boolean;
}

const clone: CommandModule<GlobalArgs, Args<CloneArgs>> = {
  command: 'clone <name> <newName>',
  describe: 'Clone an image (btrfs snapshot or reflink copy)',
  builder: (y) =>
    y
      .positional('name', { type: 'string', demandOption: true, describe: 'image to clone' })
      .positional('newName', { type: 'string', demandOption: true, describe: 'name of the copy' })
      .option('read-only', { type: 'boolean', default: false, describe: 'Make the copy read-only' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const from = imageName(argv.name);
      const to = imageName(argv.newName);
      await new Machine1(s).imageCall('CloneImage', from, 'ssb', [to, argv['read-only']], `clone ${from}`);
    }),
};

const rename: CommandModule<GlobalArgs, Args<TwoNames>> = {
  command: 'rename <name> <newName>',
  describe: 'Rename an image',
  builder: (y) =>
    y.positional('name', { type: 'string', demandOption: true, describe: 'image' }).positional('newName', { type: 'string', demandOption: true, describe: 'new name' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const from = imageName(argv.name);
      const to = imageName(argv.newName);
      await new Machine1(s).imageCall('RenameImage', from, 'ss', [to], `rename ${from}`);
    }),
};

interface ReadOnlyArgs {
  name: string;
  value?: string;
}

const readOnly: CommandModule<GlobalArgs, Args<ReadOnlyArgs>> = {
  command: 'read-only <name> [value]',
  describe: 'Mark an image read-only (or writable with "no")',
  builder: (y) =>
    y.positional('name', { type: 'string', demandOption: true, describe: 'image' }).positional('value', { type: 'string', describe: 'yes (default) or no' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const name = imageName(argv.name);
      let ro = true;
      if (argv.value !== undefined) {
        try {
          ro = parseBoolean(argv.value);
        } catch (err) {
          throw new UserError((err as Error).message, { hint: 'use yes or no', exitCode: 2 });
        }
      }
      await new Machine1(s).imageCall('MarkImageReadOnly', name, 'sb', [ro], `read-only ${name}`);
    }),
};

const remove: CommandModule<GlobalArgs, Args<NamesArgs>> = {
  command: 'remove <name..>',
  describe: 'Remove images',
  builder: (y) => y.positional('name', { type: 'string', array: true, demandOption: true, describe: 'image name' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const m1 = new Machine1(s);
      for (const name of stringList(argv.name).map(imageName)) await m1.imageCall('RemoveImage', name, 's', [], `remove ${name}`);
    }),
};

interface LimitArgs {
  a: string;
  b?: string;
}

const setLimit: CommandModule<GlobalArgs, Args<LimitArgs>> = {
  command: 'set-limit <a> [b]',
  describe: 'Set the size limit of an image (NAME BYTES) or of the whole pool (BYTES); "-" removes it',
  builder: (y) =>
    y.positional('a', { type: 'string', demandOption: true, describe: 'image name, or the pool limit' }).positional('b', { type: 'string', describe: 'limit, e.g. 10G, or -' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const [name, text] = argv.b === undefined ? [undefined, argv.a] : [imageName(argv.a), argv.b];
      let bytes: bigint;
      try {
        bytes = parseSize(text);
      } catch (err) {
        throw new UserError((err as Error).message, { hint: 'use a size like 10G, 512M or -', exitCode: 2 });
      }
      const m1 = new Machine1(s);
      if (name === undefined) await m1.setPoolLimit(bytes);
      else await m1.imageCall('SetImageLimit', name, 'st', [bytes], `set-limit ${name}`);
    }),
};

interface CleanArgs {
  all: boolean;
}

const clean: CommandModule<GlobalArgs, Args<CleanArgs>> = {
  command: 'clean',
  describe: 'Remove hidden images and interrupted transfers (with --all: every image)',
  builder: (y) => y.option('all', { alias: 'a', type: 'boolean', default: false, describe: 'Remove all images, not just hidden ones' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const removed = await new Machine1(s).cleanPool(argv.all ? 'all' : 'hidden');
      // Interrupted transfers of this host's pool, which stock systemd-machined does not see
      // (it only removes ".#*" at boot); ours already did this in CleanPool, so this finds none.
      if (argv.machine === undefined && process.getuid?.() === 0) {
        const { cleanStaleTransfers } = await import('../../import/index.js');
        for (const name of await cleanStaleTransfers()) if (!removed.some(([n]) => n === name)) removed.push([name, UINT64_MAX]);
      }
      if (isJson(argv.output)) return printJson(removed.map(([name, freed]) => ({ name, freed: freed === UINT64_MAX ? null : Number(freed) })), argv.output);
      for (const [name, freed] of removed) {
        const what = name.startsWith('.#') ? 'work entry of an interrupted transfer' : 'image';
        s.info(`Removed ${what} '${name}'.${freed !== UINT64_MAX ? ` Freed exclusive disk space: ${formatBytes(freed)}.` : ''}`);
      }
      s.info(`Removed ${removed.length} image${removed.length === 1 ? '' : 's'} in total.`);
    }),
};

export const imageCommands = [listImages, imageStatus, showImage, clone, rename, readOnly, remove, setLimit, clean];
