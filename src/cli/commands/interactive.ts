// login and shell: a terminal in a machine, or one command with its exit status.
import type { CommandModule } from 'yargs';
import type { GlobalArgs } from '../session.js';
import type { Variant } from 'dbus-next';
import { UserError } from '../../common/errors.js';
import { Machine1, MACHINE_IFACE } from '../machine1.js';
import { forwardPty } from '../pty-forward.js';
import { canExecDirect, execDirect, execViaBus } from '../container-exec.js';
import { withSession, machineName, stringList, type Args } from '../run.js';
import type { Session } from '../session.js';

async function forwardSession(s: Session, name: string, fd: number, ignoreHangup: 'always' | 'initial'): Promise<void> {
  s.info(`Connected to machine ${name}. Press ^] three times within 1s to exit session.`);
  const { reason } = await forwardPty(fd, { ignoreHangup });
  s.info(reason === 'escape' ? `\nConnection to machine ${name} terminated by user.` : `\nConnection to machine ${name} terminated.`);
}

interface LoginArgs {
  name?: string;
}

const login: CommandModule<GlobalArgs, Args<LoginArgs>> = {
  command: 'login [name]',
  describe: 'Get a login prompt on a machine (default: the host)',
  builder: (y) => y.positional('name', { type: 'string', describe: 'machine name (default .host)' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const name = machineName(argv.name ?? '.host');
      const { fd } = await new Machine1(s).openLogin(name);
      await forwardSession(s, name, fd, 'always');
    }),
};

interface ShellArgs {
  target?: string;
  command?: string[];
  '--'?: string[];
  uid?: string;
  setenv: string | string[];
}

/** "[USER@]NAME" → user and machine; --uid wins over USER@, as in machinectl. */
export function splitTarget(target: string | undefined, uid: string | undefined): { user: string; machine: string } {
  let user = 'root';
  let machine = target && target.length > 0 ? target : '.host';
  const at = machine.lastIndexOf('@');
  if (at >= 0) {
    if (at > 0) user = machine.slice(0, at);
    machine = machine.slice(at + 1) || '.host';
  }
  if (uid) user = uid;
  return { user, machine };
}

function checkEnv(assignments: string[]): string[] {
  for (const a of assignments) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(a)) throw new UserError(`invalid environment assignment '${a}'`, { hint: 'use -E NAME=VALUE', exitCode: 2 });
  }
  return assignments;
}

const shell: CommandModule<GlobalArgs, Args<ShellArgs>> = {
  command: 'shell [target] [command..]',
  describe: 'Open a shell on a machine, or run COMMAND there and exit with its status',
  builder: (y) =>
    y
      .positional('target', { type: 'string', describe: '[USER@]NAME (default root@.host)' })
      .positional('command', { type: 'string', array: true, describe: 'command and arguments (run as a transient unit; its exit status is returned)' })
      .option('uid', { type: 'string', describe: 'User to run as (overrides USER@)' })
      .option('setenv', { alias: 'E', type: 'string', default: [] as string[], describe: 'Set an environment variable (NAME=VALUE, repeatable)' })
      .example('$0 shell debian', 'Interactive login shell as root')
      .example("$0 shell alice@debian /bin/sh -c 'exit 7'", 'Exits with status 7'),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const { user, machine } = splitTarget(argv.target, argv.uid);
      const name = machineName(machine);
      const command = [...stringList(argv.command), ...stringList(argv['--'])];
      const env = checkEnv(stringList(argv.setenv));
      const m1 = new Machine1(s);
      if (command.length === 0) {
        const term = process.env['TERM'];
        const fullEnv = term && !env.some((e) => e.startsWith('TERM=')) ? [`TERM=${term}`, ...env] : env;
        const { fd } = await m1.openShell(name, user, '', [], fullEnv);
        await forwardSession(s, name, fd, 'initial');
        return 0;
      }
      const props = await m1.properties(await m1.getMachine(name), MACHINE_IFACE, { machine: name });
      const leader = (props['Leader'] as Variant<number> | undefined)?.value ?? 0;
      // With -M the leader PID is one of the container's PID namespace, not ours: bus route only.
      if (name !== '.host' && !s.args.machine && canExecDirect(leader)) {
        // The bus connection is not needed while the command runs.
        s.close();
        return execDirect({ machine: name, leader, user, command, env });
      }
      return execViaBus(m1, { machine: name, user, command, env });
    }),
};

export const interactiveCommands = [login, shell];
