// Every verb is one CommandModule in this folder; main.ts registers this list.
import type { CommandModule } from 'yargs';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- yargs command modules differ in their argument types
export const commands: CommandModule<object, any>[] = [];
