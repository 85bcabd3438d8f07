// pull-tar, pull-raw, import-tar, import-raw, import-fs, export-tar, export-raw: image
// transfers, run in this process through src/import (no import daemon needed). Ctrl-C cancels
// a transfer and removes its partial image.
import type { Argv, CommandModule } from 'yargs';
import { UserError } from '../../common/errors.js';
import { exportImage, importDirectory, importImage, parseFormat, parseVerifyMode, pull, type ImageKind } from '../../import/index.js';

interface CommonArgs {
  quiet?: boolean;
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

/** Run a transfer with SIGINT/SIGTERM wired to its AbortSignal. */
async function cancellable<T>(run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    return await run(controller.signal);
  } finally {
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
      const result = await cancellable((signal) =>
        pull({ url: argv.url, kind, name: dash(argv.name), verify: parseVerifyMode(argv.verify), force: argv.force, readOnly: argv['read-only'], signal, log: (l) => {
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
      const result = await cancellable((signal) => importImage({ file: dash(argv.file) ?? '-', kind, name: argv.name, force: argv.force, readOnly: argv['read-only'], signal }));
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
    const result = await cancellable((signal) => importDirectory({ directory: argv.file, name: argv.name, force: argv.force, readOnly: argv['read-only'], signal }));
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
      const result = await cancellable((signal) => exportImage({ name: argv.name, kind, file, format: argv.format === undefined ? undefined : parseFormat(argv.format), signal }));
      if (file !== '-') say(argv, `Exported image '${argv.name}' (${mib(result.bytes)} before ${result.compression} compression) to ${file}.`);
    },
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- yargs command modules differ in their argument types
export const transferCommands: CommandModule<object, any>[] = [
  pullCommand('tar'),
  pullCommand('raw'),
  importCommand('tar'),
  importCommand('raw'),
  importFs,
  exportCommand('tar'),
  exportCommand('raw'),
];
