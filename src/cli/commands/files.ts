// bind, copy-to, copy-from: moving files between the host and a running machine.
import { resolve, isAbsolute } from 'node:path';
import type { CommandModule } from 'yargs';
import type { GlobalArgs } from '../session.js';
import { UserError } from '../../common/errors.js';
import { Machine1 } from '../machine1.js';
import { withSession, machineName, type Args } from '../run.js';

interface PathArgs {
  name: string;
  source: string;
  destination?: string;
}

function containerPath(p: string, what: string): string {
  if (!isAbsolute(p)) throw new UserError(`${what} '${p}' must be an absolute path inside the machine`, { exitCode: 2 });
  return p;
}

interface BindArgs extends PathArgs {
  'read-only': boolean;
  mkdir: boolean;
}

const bind: CommandModule<GlobalArgs, Args<BindArgs>> = {
  command: 'bind <name> <source> [destination]',
  describe: 'Bind-mount a host directory into a running machine (destination defaults to the same path)',
  builder: (y) =>
    y
      .positional('name', { type: 'string', demandOption: true, describe: 'machine name' })
      .positional('source', { type: 'string', demandOption: true, describe: 'host path' })
      .positional('destination', { type: 'string', describe: 'path in the machine' })
      .option('read-only', { type: 'boolean', default: false, describe: 'Mount read-only' })
      .option('mkdir', { type: 'boolean', default: false, describe: 'Create the destination directory first' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const name = machineName(argv.name);
      const source = resolve(argv.source);
      const dest = containerPath(argv.destination ?? source, 'destination');
      await new Machine1(s).bind(name, source, dest, argv['read-only'], argv.mkdir);
    }),
};

interface CopyArgs extends PathArgs {
  force: boolean;
}

function copyVerb(direction: 'To' | 'From'): CommandModule<GlobalArgs, Args<CopyArgs>> {
  const to = direction === 'To';
  return {
    command: `copy-${to ? 'to' : 'from'} <name> <source> [destination]`,
    describe: to ? 'Copy files from the host into a machine' : 'Copy files from a machine to the host',
    builder: (y) =>
      y
        .positional('name', { type: 'string', demandOption: true, describe: 'machine name' })
        .positional('source', { type: 'string', demandOption: true, describe: to ? 'host path' : 'path in the machine' })
        .positional('destination', { type: 'string', describe: to ? 'path in the machine (default: same as source)' : 'host path (default: same as source)' })
        .option('force', { type: 'boolean', default: false, describe: 'Replace existing files at the destination' }),
    handler: (argv) =>
      withSession(argv, async (s) => {
        const name = machineName(argv.name);
        // Host paths may be relative to the current directory; machine paths must be absolute.
        const source = to ? resolve(argv.source) : containerPath(argv.source, 'source');
        const dest = argv.destination === undefined ? source : to ? containerPath(argv.destination, 'destination') : resolve(argv.destination);
        if (to && argv.destination === undefined) containerPath(source, 'destination');
        await new Machine1(s).copy(direction, name, source, dest, argv.force);
      }),
  };
}

export const fileCommands = [bind, copyVerb('To'), copyVerb('From')];
