// Every verb is one CommandModule in this folder; main.ts registers this list.
// The transfer verbs (pull-tar, import-*, export-*, …) live in transfer.ts, owned by the import part.
import type { CommandModule } from 'yargs';
import { machineCommands } from './machines.js';
import { lifecycleCommands } from './lifecycle.js';
import { interactiveCommands } from './interactive.js';
import { fileCommands } from './files.js';
import { imageCommands } from './images.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- yargs command modules differ in their argument types
export const commands: CommandModule<any, any>[] = [
  ...machineCommands,
  ...lifecycleCommands,
  ...interactiveCommands,
  ...fileCommands,
  ...imageCommands,
  ...(await import('./transfer.js')).transferCommands,
];
