// mctl-machined: the org.freedesktop.machine1 registration service.
import { runMain } from '../common/errors.js';
import { packageVersion } from '../common/version.js';

runMain('mctl-machined', async () => {
  const args = process.argv.slice(2);
  if (args.includes('--version')) {
    process.stdout.write(`mctl-machined ${packageVersion()}\n`);
    return 0;
  }
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write('mctl-machined [OPTIONS...]\n\nThe org.freedesktop.machine1 machine registration service.\n');
    return 0;
  }
  throw new Error('not implemented yet');
});
