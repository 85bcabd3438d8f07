// `node collect-main.js MACHINE`: remove what MACHINE's launcher set up once that launcher is
// gone. Started by the launcher behind `flock -x MACHINE.lock true`, so it runs the moment the
// supervisor ends, also when it was SIGKILLed.
import { runMain, UserError } from '../common/errors.js';
import { collect } from './machine.js';

runMain('mctl-net-collect', async () => {
  const machine = process.argv[2];
  if (!machine) throw new UserError('usage: collect-main MACHINE');
  await collect(machine);
  return 0;
});
