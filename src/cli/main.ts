// mctl: machinectl's verbs against org.freedesktop.machine1 (ours or stock systemd-machined).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runMain, UserError } from '../common/errors.js';
import { packageVersion } from '../common/version.js';
import { commands } from './commands/index.js';
import { preprocessArgv } from './argv.js';
import { OUTPUT_MODES } from './output.js';

runMain('mctl', async () => {
  const tokens = preprocessArgv(hideBin(process.argv));
  const verb = tokens.find((t) => commands.some((c) => String(c.command).split(' ')[0] === t));
  let parser = yargs(tokens)
    .scriptName('mctl')
    .usage('$0 [OPTIONS...] COMMAND ...\n\nSend control commands to or query the machine manager.')
    .parserConfiguration({ 'boolean-negation': false, 'populate--': true })
    .version(packageVersion())
    .help()
    .alias('h', 'help')
    .option('output', { alias: 'o', choices: OUTPUT_MODES, default: 'short' as const, global: true, describe: 'Output format' })
    .option('no-pager', { type: 'boolean', default: false, global: true, describe: 'Accepted for compatibility (mctl never pages)' })
    .option('no-legend', { type: 'boolean', default: false, global: true, describe: 'Omit table headers and footers' })
    .option('no-ask-password', { type: 'boolean', default: false, global: true, describe: 'Accepted for compatibility (mctl never asks for a password)' })
    .option('quiet', { alias: 'q', type: 'boolean', default: false, global: true, describe: 'Suppress informational messages' })
    .option('machine', { alias: 'M', type: 'string', global: true, describe: "Operate on the machine manager inside container NAME (through its system bus socket)" })
    .strict()
    .demandCommand(1, 'a command is required')
    .completion('completion', 'Print a bash completion script (source <(mctl completion))')
    .fail((msg, err) => {
      if (err) throw err;
      throw new UserError((msg ?? 'invalid command line').replace(/\s*\n\s*/g, ' '), { hint: `see mctl ${verb ? `${verb} ` : ''}--help`, exitCode: 2 });
    });
  for (const command of commands) parser = parser.command(command);
  await parser.parseAsync();
});
