// mctl-nspawn: spawn a command or boot an OS in a light-weight container.
import { runMain } from '../common/errors.js';
import { packageVersion } from '../common/version.js';

runMain('mctl-nspawn', async () => {
  const args = process.argv.slice(2);
  if (args.includes('--version')) {
    process.stdout.write(`mctl-nspawn ${packageVersion()}\n`);
    return 0;
  }
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write('mctl-nspawn [OPTIONS...] [COMMAND [ARGS...]]\n\nSpawn a command or OS in a light-weight container.\n');
    return 0;
  }
  throw new Error('not implemented yet');
});
