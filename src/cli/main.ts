// mctl: machinectl's verbs against org.freedesktop.machine1 (ours or stock systemd-machined).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runMain } from '../common/errors.js';
import { packageVersion } from '../common/version.js';
import { commands } from './commands/index.js';

runMain('mctl', async () => {
  let parser = yargs(hideBin(process.argv))
    .scriptName('mctl')
    .usage('$0 [OPTIONS...] COMMAND ...\n\nSend control commands to or query the machine manager.')
    .version(packageVersion())
    .help()
    .alias('h', 'help')
    .strict()
    .demandCommand(1, 'a command is required (see mctl --help)')
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    });
  for (const command of commands) parser = parser.command(command);
  await parser.parseAsync();
});
