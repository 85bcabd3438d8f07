// start, poweroff/stop, reboot, terminate, kill, enable, disable.
import { existsSync, lstatSync, mkdirSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import type { GlobalArgs } from '../session.js';
import type { Variant } from 'dbus-next';
import { UserError } from '../../common/errors.js';
import { Machine1, IMAGE_IFACE } from '../machine1.js';
import { Systemd1, systemdBooted, jobFailed } from '../systemd1.js';
import { parseSignal, signalNames } from '../format.js';
import { alive, logTail, spawnDetached, waitBooted } from '../detached-start.js';
import { withSession, machineName, stringList, type Args } from '../run.js';
import type { Session } from '../session.js';

export const containerUnit = (name: string): string => `container@${name}.service`;

const SIGRTMIN = 34;
const REGISTER_TIMEOUT_MS = 60_000;
const BOOT_TIMEOUT_S = 120;

interface NamesArgs {
  name: string[];
}

async function useSystemd(s: Session): Promise<boolean> {
  return systemdBooted() && (await new Systemd1(s).available());
}

async function registeredLeader(s: Session, name: string): Promise<number | undefined> {
  try {
    const path = (await s.callRaw({ destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager', member: 'GetMachine', signature: 's', body: [name] })).body[0] as string;
    const reply = await s.callRaw({ destination: 'org.freedesktop.machine1', path, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: ['org.freedesktop.machine1.Machine', 'Leader'] });
    return (reply.body[0] as Variant<number>).value;
  } catch (err) {
    if ((err as { type?: string }).type === 'org.freedesktop.machine1.NoSuchMachine') return undefined;
    throw err;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function startDetached(s: Session, m1: Machine1, name: string, imagePath: string): Promise<void> {
  if ((await registeredLeader(s, name)) !== undefined) throw new UserError(`machine '${name}' is already running`, { hint: 'see mctl status ' + name });
  const props = await m1.properties(imagePath, IMAGE_IFACE, { image: name });
  const root = (props['Path'] as Variant<string> | undefined)?.value;
  if (!root) throw new UserError(`image '${name}' has no path`);
  const started = spawnDetached(name, root);
  s.info(`No systemd on this host: started mctl-nspawn detached for '${name}' (PID ${started.pid}, log ${started.log}).`);
  if (started.missing.length) {
    const why = started.missing.includes('-U') ? 'a user namespace needs a delegated cgroup2 tree, and this host has a legacy/hybrid cgroup layout' : 'the launcher does not support them yet';
    s.info(`Note: started without ${started.missing.join(' ')} (${why}).`);
  }
  const deadline = Date.now() + REGISTER_TIMEOUT_MS;
  let leader: number | undefined;
  while (leader === undefined) {
    leader = await registeredLeader(s, name);
    if (leader !== undefined) break;
    if (!alive(started.pid)) {
      const why = logTail(started.log);
      throw new UserError(`mctl-nspawn for '${name}' exited before the machine registered${why ? `: ${why}` : ''}`, { hint: `see ${started.log}` });
    }
    if (Date.now() > deadline) {
      process.kill(started.pid, 'SIGTERM');
      throw new UserError(`machine '${name}' did not register within ${REGISTER_TIMEOUT_MS / 1000} s; launcher stopped`, { hint: `see ${started.log}` });
    }
    await sleep(100);
  }
  const state = waitBooted(leader, BOOT_TIMEOUT_S);
  if (state && state !== 'running' && state !== 'degraded') s.info(`Machine '${name}' is registered; its boot did not finish (${state}).`);
}

const start: CommandModule<GlobalArgs, Args<NamesArgs>> = {
  command: 'start <name..>',
  describe: 'Start containers as container@NAME.service (without systemd: mctl-nspawn, detached)',
  builder: (y) => y.positional('name', { type: 'string', array: true, demandOption: true, describe: 'image name' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const names = stringList(argv.name).map(machineName);
      const m1 = new Machine1(s);
      const systemd = await useSystemd(s);
      for (const name of names) {
        const image = await m1.getImage(name);
        if (systemd) {
          const unit = containerUnit(name);
          const result = await new Systemd1(s).runJob('StartUnit', unit, 'fail');
          if (result !== 'done') throw jobFailed(unit, result, 'start');
        } else {
          await startDetached(s, m1, name, image);
        }
      }
    }),
};

function killVerb(command: string, describe: string, whom: string, signal: number, aliases: string[] = []): CommandModule<GlobalArgs, Args<NamesArgs>> {
  return {
    command: `${command} <name..>`,
    aliases,
    describe,
    builder: (y) => y.positional('name', { type: 'string', array: true, demandOption: true, describe: 'machine name' }),
    handler: (argv) =>
      withSession(argv, async (s) => {
        const m1 = new Machine1(s);
        for (const name of stringList(argv.name).map(machineName)) await m1.kill(name, whom, signal);
      }),
  };
}

// machinectl 252: poweroff = SIGRTMIN+4 to the leader (systemd's "halt"), reboot = SIGINT.
const poweroff = killVerb('poweroff', 'Power off machines (SIGRTMIN+4 to their init)', 'leader', SIGRTMIN + 4, ['stop']);
const reboot = killVerb('reboot', 'Reboot machines (SIGINT to their init)', 'leader', 2);

const terminate: CommandModule<GlobalArgs, Args<NamesArgs>> = {
  command: 'terminate <name..>',
  describe: 'Terminate machines at once (kill all their processes)',
  builder: (y) => y.positional('name', { type: 'string', array: true, demandOption: true, describe: 'machine name' }),
  handler: (argv) =>
    withSession(argv, async (s) => {
      const m1 = new Machine1(s);
      for (const name of stringList(argv.name).map(machineName)) await m1.terminate(name);
    }),
};

interface KillArgs extends NamesArgs {
  'kill-whom': string;
  signal: string;
}

const kill: CommandModule<GlobalArgs, Args<KillArgs>> = {
  command: 'kill <name..>',
  describe: 'Send a signal to processes of machines',
  builder: (y) =>
    y
      .positional('name', { type: 'string', array: true, demandOption: true, describe: 'machine name' })
      .option('kill-whom', { type: 'string', choices: ['leader', 'all'], default: 'all', describe: 'Signal the leader only, or all processes' })
      .option('signal', { alias: 's', type: 'string', default: 'SIGTERM', describe: 'Signal to send (name or number; "help" lists them)' }),
  handler: async (argv) => {
    if (argv.signal === 'help') {
      process.stdout.write(`${signalNames().join('\n')}\nRTMIN+N\n`);
      return;
    }
    let signal: number;
    try {
      signal = parseSignal(argv.signal);
    } catch (err) {
      throw new UserError((err as Error).message, { hint: 'see mctl kill --signal=help', exitCode: 2 });
    }
    await withSession(argv, async (s) => {
      const m1 = new Machine1(s);
      for (const name of stringList(argv.name).map(machineName)) await m1.kill(name, argv['kill-whom'], signal);
    });
  },
};

// enable/disable without systemd: the same symlinks systemctl would create.
const UNIT_PATH = ['/etc/systemd/system', '/run/systemd/system', '/usr/local/lib/systemd/system', '/lib/systemd/system', '/usr/lib/systemd/system'];

function unitDir(): string {
  return process.env['MCTL_UNIT_DIR'] || '/etc/systemd/system';
}

function findUnitFile(file: string): string | undefined {
  for (const dir of [unitDir(), ...UNIT_PATH]) {
    const p = join(dir, file);
    if (existsSync(p)) return p;
  }
  return undefined;
}

function linkExists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function enableOffline(names: string[]): [string, string, string][] {
  const template = findUnitFile('container@.service');
  if (!template) throw new UserError('container@.service is not installed', { hint: 'install units/container@.service into /etc/systemd/system' });
  const changes: [string, string, string][] = [];
  const wants = join(unitDir(), 'machines.target.wants');
  mkdirSync(wants, { recursive: true });
  for (const name of names) {
    const link = join(wants, containerUnit(name));
    if (linkExists(link)) continue;
    symlinkSync(template, link);
    changes.push(['symlink', link, template]);
  }
  const target = findUnitFile('machines.target');
  const targetLink = join(unitDir(), 'multi-user.target.wants', 'machines.target');
  if (target && !linkExists(targetLink)) {
    mkdirSync(join(unitDir(), 'multi-user.target.wants'), { recursive: true });
    symlinkSync(target, targetLink);
    changes.push(['symlink', targetLink, target]);
  }
  return changes;
}

function disableOffline(names: string[]): [string, string, string][] {
  const changes: [string, string, string][] = [];
  for (const name of names) {
    const link = join(unitDir(), 'machines.target.wants', containerUnit(name));
    if (!linkExists(link)) continue;
    unlinkSync(link);
    changes.push(['unlink', link, '']);
  }
  return changes;
}

function printChanges(s: Session, changes: [string, string, string][]): void {
  for (const [type, file, dest] of changes) {
    if (type === 'symlink') s.info(`Created symlink ${file} → ${dest}.`);
    else if (type === 'unlink') s.info(`Removed ${file}.`);
  }
}

function enableVerb(enable: boolean): CommandModule<GlobalArgs, Args<NamesArgs>> {
  return {
    command: `${enable ? 'enable' : 'disable'} <name..>`,
    describe: enable ? 'Start containers at boot (links container@NAME.service into machines.target.wants)' : 'Do not start containers at boot',
    builder: (y) => y.positional('name', { type: 'string', array: true, demandOption: true, describe: 'image name' }),
    handler: (argv) =>
      withSession(argv, async (s) => {
        const names = stringList(argv.name).map(machineName);
        if (await useSystemd(s)) {
          const units = names.map(containerUnit);
          // machines.target itself must be wanted by multi-user.target for boot-time starts.
          printChanges(s, await new Systemd1(s).unitFiles(enable, enable ? [...units, 'machines.target'] : units));
        } else {
          printChanges(s, enable ? enableOffline(names) : disableOffline(names));
        }
      }),
  };
}

export const lifecycleCommands = [start, poweroff, reboot, terminate, kill, enableVerb(true), enableVerb(false)];
