// Every verb is one CommandModule in this folder; main.ts registers this list.
// The transfer verbs (pull-tar, import-*, export-*, …) live in transfer.ts, owned by the import part.
import type { CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { verbOf } from '../argv.js';
import { machineCommands } from './machines.js';
import { lifecycleCommands } from './lifecycle.js';
import { interactiveCommands } from './interactive.js';
import { fileCommands } from './files.js';
import { imageCommands } from './images.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- yargs command modules differ in their argument types
const local: CommandModule<any, any>[] = [...machineCommands, ...lifecycleCommands, ...interactiveCommands, ...fileCommands, ...imageCommands];

// The transfer verbs pull in the import machinery; load them only when the verb is not one of
// ours (a transfer verb, an unknown one, help or completion), so `mctl list` starts faster.
const localVerbs = new Set(local.map((c) => String(c.command).split(' ')[0]));
const argv = hideBin(process.argv);
const verb = verbOf(argv);
const wantsAll = (verb === undefined ? argv.some((a) => a === '--help' || a === '-h') : !localVerbs.has(verb)) || argv.includes('--get-yargs-completions');

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- yargs command modules differ in their argument types
export const commands: CommandModule<any, any>[] = [...local, ...(wantsAll ? (await import('./transfer.js')).transferCommands : [])];
