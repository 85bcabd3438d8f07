// pull-tar, pull-raw, import-tar, import-raw, import-fs, export-tar, export-raw: image
// transfers, run in this process through src/import (no import daemon needed). Ctrl-C cancels
// a transfer and removes its partial image. Each running transfer is listed in
// /run/mctl/transfers (list-transfers), and cancel-transfer signals it as Ctrl-C would.
import type { Argv, CommandModule } from 'yargs';
import { UserError } from '../../common/errors.js';
import {
  cancelTransfer,
  defaultNameFromDirectory,
  defaultNameFromFile,
  defaultNameFromUrl,
  exportImage,
  importDirectory,
  importImage,
  listTransfers,
  openTransferRecord,
  parseFormat,
  parseVerifyMode,
  pull,
  type ImageKind,
  type TransferRecord,
  type TransferType,
} from '../../import/index.js';
import { isJson, painter, printJson, renderTable, type OutputMode } from '../output.js';

interface CommonArgs {
  quiet?: boolean;
  output?: OutputMode;
  'no-legend'?: boolean;
}
interface PullArgs extends CommonArgs {
  url: string;
  name?: string;
  verify: string;
  force: boolean;
  'read-only': boolean;
}
interface ImportArgs extends CommonArgs {
  file: string;
  name?: string;
  force: boolean;
  'read-only': boolean;
}
interface ExportArgs extends CommonArgs {
  name: string;
  file?: string;
  format?: string;
}

interface Listed {
  type: TransferType;
  remote: string;
  /** The local image name, or a function deriving the default one (may throw: then ""). */
  local: string | undefined | (() => string);
}

function localName(local: Listed['local']): string {
  if (typeof local !== 'function') return local ?? '';
  try {
    return local();
  } catch {
    return ''; // the transfer itself reports the bad name
  }
}

/**
 * Run a transfer with SIGINT/SIGTERM wired to its AbortSignal (Ctrl-C, and cancel-transfer,
 * which sends SIGTERM as importd does), published in the transfer list while it runs.
 */
async function cancellable<T>(listed: Listed, run: (signal: AbortSignal, record: TransferRecord) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const record = openTransferRecord({ type: listed.type, remote: listed.remote, local: localName(listed.local) });
  try {
    return await run(controller.signal, record);
  } finally {
    record.close();
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

/** yargs turns a lone "-" positional into ""; give it back its meaning (stdin/stdout, download only). */
function dash(value: string | undefined): string | undefined {
  return value === '' && process.argv.includes('-') ? '-' : value;
}

function say(argv: CommonArgs, line: string): void {
  if (!argv.quiet) process.stderr.write(`${line}\n`);
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

function replaceOptions<T>(y: Argv<T>): Argv<T & { force: boolean; 'read-only': boolean }> {
  return y
    .option('force', { type: 'boolean', default: false, describe: 'Replace an existing image (and its .nspawn file) of the same name' })
    .option('read-only', { type: 'boolean', default: false, describe: 'Mark the new image read-only' });
}

function pullCommand(kind: ImageKind): CommandModule<object, PullArgs> {
  const what = kind === 'tar' ? 'a container image (.tar, optionally xz/gzip/zstd/bzip2-compressed)' : 'a disk image (.raw, optionally compressed)';
  return {
    command: `pull-${kind} <url> [name]`,
    describe: `Download ${what} into the image pool`,
    builder: (y) =>
      replaceOptions(
        y
          .positional('url', { type: 'string', demandOption: true, describe: 'http://, https:// or file:// URL of the image' })
          .positional('name', { type: 'string', describe: 'Local image name (default: from the URL; "-" = download and verify only)' })
          .option('verify', { type: 'string', default: 'signature', choices: ['no', 'checksum', 'signature'], describe: 'Check the download: no, checksum (SHA256SUMS or FILE.sha256), signature (checksum list signed, checked with gpgv)' }),
      ) as unknown as Argv<PullArgs>,
    handler: async (argv) => {
      const name = dash(argv.name);
      const listed: Listed = { type: `pull-${kind}`, remote: argv.url, local: name === '-' ? '' : name ?? (() => defaultNameFromUrl(argv.url, kind)) };
      const result = await cancellable(listed, (signal, record) =>
        pull({ url: argv.url, kind, name, verify: parseVerifyMode(argv.verify), force: argv.force, readOnly: argv['read-only'], signal, onProgress: (b, t) => record.update(b, t), log: (l) => {
            if (process.stderr.isTTY) say(argv, l); // details only for people watching; logs get the result line
          },
        }),
      );
      if (result.name === null) say(argv, `Downloaded${argv.verify === 'no' ? '' : ' and verified'} ${mib(result.bytes)} (sha256 ${result.sha256}); nothing kept.`);
      else say(argv, `Pulled image '${result.name}' (${mib(result.bytes)}, ${result.compression}) into ${result.path}.`);
    },
  };
}

function importCommand(kind: ImageKind): CommandModule<object, ImportArgs> {
  return {
    command: `import-${kind} <file> [name]`,
    describe: `Import a ${kind === 'tar' ? 'tar archive' : 'raw disk image'} (compression detected) from FILE or "-" (stdin) into the image pool`,
    builder: (y) =>
      replaceOptions(
        y
          .positional('file', { type: 'string', demandOption: true, describe: 'Source file, or "-" for standard input' })
          .positional('name', { type: 'string', describe: 'Local image name (default: from FILE; required for "-")' }),
      ) as unknown as Argv<ImportArgs>,
    handler: async (argv) => {
      const file = dash(argv.file) ?? '-';
      const listed: Listed = { type: `import-${kind}`, remote: file, local: argv.name ?? (() => defaultNameFromFile(file, kind)) };
      const result = await cancellable(listed, (signal, record) =>
        importImage({ file, kind, name: argv.name, force: argv.force, readOnly: argv['read-only'], signal, onProgress: (b, t) => record.update(b, t) }),
      );
      say(argv, `Imported image '${result.name}' (${mib(result.bytes)}, ${result.compression}) into ${result.path}.`);
    },
  };
}

const importFs: CommandModule<object, ImportArgs> = {
  command: 'import-fs <file> [name]',
  describe: 'Copy a directory tree into the image pool',
  builder: (y) =>
    replaceOptions(
      y
        .positional('file', { type: 'string', demandOption: true, describe: 'Source directory' })
        .positional('name', { type: 'string', describe: 'Local image name (default: the directory name)' }),
    ) as unknown as Argv<ImportArgs>,
  handler: async (argv) => {
    const listed: Listed = { type: 'import-fs', remote: argv.file, local: argv.name ?? (() => defaultNameFromDirectory(argv.file)) };
    const result = await cancellable(listed, (signal) => importDirectory({ directory: argv.file, name: argv.name, force: argv.force, readOnly: argv['read-only'], signal }));
    say(argv, `Imported image '${result.name}' into ${result.path}.`);
  },
};

function exportCommand(kind: ImageKind): CommandModule<object, ExportArgs> {
  return {
    command: `export-${kind} <name> [file]`,
    describe: `Write ${kind === 'tar' ? 'a directory image as a tar archive' : 'a raw image'} to FILE or stdout (compression from the suffix or --format)`,
    builder: (y) =>
      y
        .positional('name', { type: 'string', demandOption: true, describe: 'Image to export' })
        .positional('file', { type: 'string', describe: 'Destination (.xz/.gz/.zst/.bz2 selects compression); "-" or none = standard output' })
        .option('format', { type: 'string', choices: ['uncompressed', 'xz', 'gzip', 'zstd', 'bzip2'], describe: 'Compression, overriding the file suffix' }) as unknown as Argv<ExportArgs>,
    handler: async (argv) => {
      const file = dash(argv.file) ?? '-';
      if (file === '') throw new UserError('empty file name');
      const listed: Listed = { type: `export-${kind}`, remote: file, local: argv.name };
      const result = await cancellable(listed, (signal, record) =>
        exportImage({ name: argv.name, kind, file, format: argv.format === undefined ? undefined : parseFormat(argv.format), signal, onProgress: (b, t) => record.update(b, t) }),
      );
      if (file !== '-') say(argv, `Exported image '${argv.name}' (${mib(result.bytes)} before ${result.compression} compression) to ${file}.`);
    },
  };
}

const listTransfersCommand: CommandModule<object, CommonArgs> = {
  command: 'list-transfers',
  describe: 'Show the image transfers running on this host',
  handler: (argv) => {
    const transfers = listTransfers();
    const output = argv.output ?? 'short';
    if (isJson(output)) {
      printJson(transfers.map((t) => ({ id: t.id, progress: t.progress, type: t.type, local: t.local, remote: t.remote, pid: t.pid, started: t.started })), output);
      return;
    }
    const legend = !argv['no-legend'];
    const rows = transfers.map((t) => [String(t.id), t.progress === null ? 'n/a' : `${Math.floor(t.progress * 100)}%`, t.type, t.local, t.remote]);
    if (rows.length > 0) process.stdout.write(renderTable(['ID', 'PERCENT', 'TYPE', 'LOCAL', 'REMOTE'], rows, { legend, paint: painter() }));
    if (legend) process.stdout.write(rows.length > 0 ? `\n${rows.length} transfers listed.\n` : 'No transfers.\n');
  },
};

interface CancelArgs extends CommonArgs {
  id: string[];
}

const cancelTransferCommand: CommandModule<object, CancelArgs> = {
  command: 'cancel-transfer <id..>',
  describe: 'Cancel running transfers (as Ctrl-C would: the partial image is removed); waits until each has cleaned up',
  builder: (y) => y.positional('id', { type: 'string', array: true, demandOption: true, describe: 'Transfer ID (see list-transfers)' }) as unknown as Argv<CancelArgs>,
  handler: async (argv) => {
    for (const raw of argv.id.map(String)) {
      if (!/^[0-9]+$/.test(raw) || Number(raw) < 1 || Number(raw) > 0xffffffff) throw new UserError(`invalid transfer ID '${raw}'`, { hint: 'see mctl list-transfers', exitCode: 2 });
      const t = await cancelTransfer(Number(raw));
      say(argv, `Canceled transfer ${t.id} (${t.type} ${t.local || t.remote}).`);
    }
  },
};

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- yargs command modules differ in their argument types
export const transferCommands: CommandModule<object, any>[] = [
  pullCommand('tar'),
  pullCommand('raw'),
  importCommand('tar'),
  importCommand('raw'),
  importFs,
  exportCommand('tar'),
  exportCommand('raw'),
  listTransfersCommand,
  cancelTransferCommand,
];
