// mctl-machined: the org.freedesktop.machine1 registration service.
import { UserError, runMain } from '../common/errors.js';
import { execve } from '../sys/libc.js';
import { packageVersion } from '../common/version.js';
import type { BackendChoice } from './service.js';
import { stateDir } from './state-file.js';

/**
 * A resident service does not need Node's throughput-first heap sizing: under a burst of calls
 * V8 grows the young generation to 2 × 16 MiB and keeps it, and runs GC helper threads per
 * core. Measured with 1,000 machines (docs/machined.md): RSS 82 → 66 MiB, the Node floor being
 * ~50 MiB; ListMachines and Create/Terminate rates unchanged within noise. --lite-mode/--jitless
 * would save ~10 MiB more but make ListMachines 2-4× slower, so they are not used.
 */
const DEFAULT_NODE_FLAGS = ['--max-semi-space-size=2', '--v8-pool-size=1', '--optimize-for-size'];

/**
 * V8 reads heap flags only when the isolate is created, so the service re-executes itself
 * (execve: same PID, as systemd tracks it) with them, once, before connecting to anything.
 */
function reexecWithNodeFlags(): void {
  const configured = process.env['MCTL_MACHINED_NODE_FLAGS'];
  const flags = configured === undefined ? DEFAULT_NODE_FLAGS : configured.split(/\s+/).filter((f) => f.length > 0);
  if (flags.length === 0 || flags.every((f) => process.execArgv.includes(f))) return;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  try {
    execve(process.execPath, [process.execPath, ...process.execArgv, ...flags, ...process.argv.slice(1)], env);
  } catch (err) {
    log(`mctl-machined: running without ${flags.join(' ')}: ${(err as Error).message}`);
  }
}

const HELP = `mctl-machined [OPTIONS...]

The org.freedesktop.machine1 machine registration service (a systemd-machined replacement).
It connects to the system bus ($DBUS_SYSTEM_BUS_ADDRESS, default /run/dbus/system_bus_socket)
and claims org.freedesktop.machine1.

Options:
  -h --help              Show this help
     --version           Show the version and the scope backend this host would use
     --backend=BACKEND   Scope backend: auto (default), systemd1 or cgroupfs
     --state-dir=DIR     Machine state directory (default $MCTL_MACHINED_STATE_DIR
                         or /run/systemd/machines)

Environment:
  MCTL_MACHINED_NODE_FLAGS          V8/Node flags the service re-executes itself with
                                    (default "${DEFAULT_NODE_FLAGS.join(' ')}"; empty: none)
  MCTL_MACHINED_STATE_DIR           state directory (as --state-dir)
  MCTL_MACHINED_STOP_TIMEOUT_SEC    cgroupfs backend: SIGKILL after this many seconds
                                    of TerminateMachine (default 90)
  MCTL_POOL                         image pool (default /var/lib/machines)
`;

interface Options {
  backend: BackendChoice;
  stateDir: string;
}

function parseArgs(argv: string[]): Options | 'help' | 'version' {
  const opts: Options = { backend: 'auto', stateDir: stateDir() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const [key, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw new UserError(`option ${key} needs a value`);
      return v;
    };
    switch (key) {
      case '-h':
      case '--help':
        return 'help';
      case '--version':
        return 'version';
      case '--backend': {
        const v = value();
        if (v !== 'auto' && v !== 'systemd1' && v !== 'cgroupfs') throw new UserError(`unknown backend '${v}'`, { hint: 'choose auto, systemd1 or cgroupfs' });
        opts.backend = v;
        break;
      }
      case '--state-dir': {
        const v = value();
        if (!v.startsWith('/')) throw new UserError(`state directory must be an absolute path: ${v}`);
        opts.stateDir = v;
        break;
      }
      default:
        throw new UserError(`unknown argument '${arg}'`, { hint: 'see mctl-machined --help' });
    }
  }
  return opts;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

runMain('mctl-machined', async () => {
  const opts = parseArgs(process.argv.slice(2));
  if (opts === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  // The service itself is loaded only after the re-exec below, so the first start stays cheap.
  if (opts === 'version') {
    const { probeBackend } = await import('./service.js');
    process.stdout.write(`mctl-machined ${packageVersion()}\nscope backend: ${await probeBackend()}\n`);
    return 0;
  }
  if (process.getuid?.() !== 0) throw new UserError('mctl-machined must run as root');
  reexecWithNodeFlags();
  const { startService } = await import('./service.js');
  const service = await startService({ backend: opts.backend, stateDir: opts.stateDir, log });
  await new Promise<void>((resolve, reject) => {
    const stop = (): void => {
      service.stop().then(resolve, reject);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    service.bus.on('error', (err: Error) => reject(new Error(`lost the bus connection: ${err.message}`)));
    (service.bus as unknown as NodeJS.EventEmitter).on('end', () => reject(new Error('the bus closed the connection')));
  });
  return 0;
});
