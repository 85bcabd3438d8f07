// mctl-nspawn: spawn a command or boot an OS in a light-weight container.
// argv + .nspawn file → ContainerSpec → launch(). The import graph is kept small on purpose:
// dbus-next is only loaded when there is a bus to register with, koffi only by the runtime.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runMain, UserError } from '../common/errors.js';
import { parseCommandLine, checkConflicts, helpText, mentionsNetworkOption, type ContainerOptions, type ConsoleMode as OptionConsoleMode } from './options.js';
import { loadSettings, mergeSettings } from './settings.js';
import { deriveMachineName, ephemeralName, chooseMachineId } from './machine-id.js';
import { prepareDirectory, planRoot } from './mounts-plan.js';
import { setupResolvConf, setupTimezone, setupLinkJournal } from './host-integration.js';
import { credentialHostFiles, credentialEnvironment } from './credentials.js';
import { defaultBoundingSet, CAPABILITY_NAMES } from './capabilities.js';
import { SIGRTMIN } from './signals.js';
import { stdioIsTerminal } from '../sys/native-addon.js';
import { RLIMIT_NAMES, type RlimitName } from './rlimits.js';
import type { ConsoleMode, ContainerSpec } from './spec.js';

const SIGKILL = 9;

function say(quiet: boolean, line: string): void {
  if (!quiet) process.stderr.write(`${line}\n`);
}

function resolveConsole(mode: OptionConsoleMode | undefined): ConsoleMode {
  const tty = stdioIsTerminal();
  if (mode === undefined) return tty ? 'interactive' : 'read-only';
  if (mode === 'autopipe') return tty ? 'interactive' : 'pipe';
  return mode;
}

/** With -M and no -D, the machine's directory in the image pool (as nspawn's image_find()). */
function findRoot(o: ContainerOptions): string | undefined {
  if (o.directory !== undefined || o.image !== undefined) return o.directory;
  if (o.machine === undefined) return process.cwd();
  const pool = process.env['MCTL_POOL'] || '/var/lib/machines';
  const candidate = join(pool, o.machine);
  if (existsSync(candidate) || o.template !== undefined) return candidate;
  throw new UserError(`no image '${o.machine}' in ${pool}`, { hint: 'use -D PATH' });
}

function environmentRecord(assignments: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const a of assignments) {
    const eq = a.indexOf('=');
    env[a.slice(0, eq)] = a.slice(eq + 1);
  }
  return env;
}

/** The bounding set with --ambient-capability's set, which must lie within it (nspawn's rule). */
function ambientWithin(o: ContainerOptions, bounding: number[]): { bounding: number[]; ambient: number[] } {
  const ambient = CAPABILITY_NAMES.map((_, i) => i).filter((i) => ((o.capabilityAmbient ?? 0n) >> BigInt(i)) & 1n);
  const outside = ambient.filter((c) => !bounding.includes(c));
  if (outside.length > 0) {
    throw new UserError(`--ambient-capability: ${outside.map((c) => CAPABILITY_NAMES[c]!.toUpperCase()).join(', ')} not in the bounding set`, { hint: 'add it with --capability=' });
  }
  return { bounding, ambient };
}

function boundingSet(o: ContainerOptions, privateNetwork: boolean): number[] {
  let mask = 0n;
  for (const c of defaultBoundingSet(privateNetwork)) mask |= 1n << BigInt(c);
  mask = (mask | (o.capabilityAdd ?? 0n)) & ~(o.capabilityDrop ?? 0n);
  return CAPABILITY_NAMES.map((_, i) => i).filter((i) => (mask >> BigInt(i)) & 1n);
}

runMain('mctl-nspawn', async () => {
  const argv = process.argv.slice(2);
  // The networking code is loaded only when an option (or --help) may need it: it costs more
  // than the rest of the front end together.
  const wantsHelp = argv.includes('--help') || argv.includes('-h');
  const networkModule = wantsHelp || mentionsNetworkOption(argv) ? await import('./network.js') : undefined;
  const cl = parseCommandLine(argv, networkModule?.NETWORK_OPTIONS ?? []);
  if (cl.action === 'help') {
    process.stdout.write(helpText((networkModule ?? (await import('./network.js'))).NETWORK_HELP));
    return 0;
  }
  if (cl.action === 'version') {
    const { packageVersion } = await import('../common/version.js');
    process.stdout.write(`mctl-nspawn ${packageVersion()}\n`);
    return 0;
  }
  const given = cl.options;
  // -M NAME alone boots the pool image NAME: a directory, or NAME.raw / a block device (--image).
  const imageMod = given.image !== undefined || (given.directory === undefined && given.machine !== undefined) ? await import('./image.js') : undefined;
  if (imageMod && given.image === undefined && given.machine !== undefined) {
    const found = imageMod.resolveMachineImage(given.machine);
    if (found?.kind === 'image') given.image = found.path;
  }
  if (given.image === undefined) given.directory = findRoot(given);

  // The .nspawn file is named after the machine name before -x adds its random suffix.
  const baseName = deriveMachineName(given.machine, given.directory ?? given.image);
  const settings = loadSettings({ machineName: baseName, rootPath: given.directory ?? given.image, mode: cl.settings });
  if (settings) {
    for (const w of settings.warnings) say(cl.quiet, `mctl-nspawn: ${w}`);
    if (settings.unsupported.length) say(cl.quiet, `mctl-nspawn: ${settings.path}: not supported, ignored: ${settings.unsupported.join(', ')}`);
    if (settings.trusted) {
      // Network and user-namespace keys are groups, as in nspawn: the command line wins unless override.
      const { networkFromFile, usernsFromFile } = await import('./network.js');
      const fileNet = networkFromFile(settings.network);
      const fileUsers = usernsFromFile(settings.userNamespace);
      if (fileNet && (cl.settings === 'override' || given.network === undefined)) given.network = fileNet;
      if (fileUsers && (cl.settings === 'override' || given.userns === undefined)) given.userns = fileUsers;
    }
  }
  const o = mergeSettings(given, settings, cl.settings);
  checkConflicts(o);

  // --image: lock, dissect and mount it privately; from here on its root is checked and used like -D.
  const image = o.image !== undefined && imageMod ? imageMod.prepareImageRoot(o.image, { readOnly: o.readOnly === true, ephemeral: o.ephemeral === true, volatile: o.volatile ?? 'no', ...(o.imagePolicy !== undefined ? { policy: o.imagePolicy } : {}) }) : undefined;
  let root: string;
  let plan: ReturnType<typeof planRoot>;
  try {
    root = (await prepareDirectory(image ? { ...o, directory: image.root, template: undefined } : o)).root;
    plan = planRoot(o, root);
  } catch (err) {
    image?.release();
    throw err;
  }
  const machineName = o.machine ?? (o.ephemeral ? ephemeralName(baseName) : baseName);
  if (image) {
    plan.readOnlyRoot = image.readOnly;
    plan.treeWritable = plan.rootLayer === 'plain' && !image.readOnly;
    plan.mounts.unshift(...image.mounts);
    plan.cleanup.unshift(() => image.release());
  }
  let netUsers: import('./network.js').NetUsernsSetup | undefined;
  try {
    // Without network or user-namespace settings there is nothing to set up: skip loading it all.
    const network = o.network !== undefined || o.userns !== undefined ? await import('./network.js') : undefined;
    const netPlan = network?.resolveNetwork(o.network);
    const privateNetwork = netPlan?.privateNetwork ?? false;
    const uuid = chooseMachineId(o.uuid, root);
    // With mctl's own addressing + NAT the container reaches what the host reaches: resolv.conf as on the host.
    const ctx = { root, treeWritable: plan.treeWritable, privateNetwork: privateNetwork && !(netPlan?.veth && netPlan.auto && !netPlan.bridge) };
    // Host integration first, so the user's own mounts can still override these paths.
    const journal = setupLinkJournal(o.linkJournal ?? 'auto', uuid, { ...ctx, ephemeral: o.ephemeral === true, transientRoot: image !== undefined });
    if (journal.undo) plan.cleanup.push(journal.undo);
    if (journal.warning) say(cl.quiet, `mctl-nspawn: ${journal.warning}`);
    const integration = [...setupResolvConf(o.resolvConf ?? 'auto', ctx), ...setupTimezone(o.timezone ?? 'auto', ctx), ...journal.mounts];
    netUsers = network
      ? await network.prepareNetworkAndUserns({ machineName, root, network: o.network, userns: o.userns, treeWritable: plan.treeWritable })
      : { privateNetwork: false, hostLikeConnectivity: false, userNamespace: null, root, afterNamespaces: [], onAbort: [], loopbackForwards: [], network: null, cleanup: async () => undefined };
    const startMode = o.startMode ?? 'pid1';
    const credentials = o.credentials ?? [];
    const spec: ContainerSpec = {
      root: netUsers.root,
      readOnlyRoot: plan.readOnlyRoot,
      rootLayer: plan.rootLayer,
      machineName,
      hostname: o.hostname ?? machineName,
      uuid,
      payload: {
        kind: startMode === 'boot' ? 'boot' : 'command',
        argv: o.parameters ?? [],
        asPid2: startMode === 'pid2',
        user: o.user ?? null,
        chdir: o.workingDirectory ?? null,
        env: { ...credentialEnvironment(credentials), ...environmentRecord(o.environment ?? []) },
      },
      console: resolveConsole(o.console),
      killSignal: o.killSignal ?? (startMode === 'boot' ? SIGRTMIN + 3 : SIGKILL),
      namespaces: { privateNetwork, userNamespace: netUsers.userNamespace },
      loopbackForwards: netUsers.loopbackForwards,
      mounts: [...integration, ...plan.mounts],
      capabilities: ambientWithin(o, boundingSet(o, privateNetwork)),
      noNewPrivileges: o.noNewPrivileges ?? false,
      ...(o.suppressSync ? { suppressSync: true } : {}),
      ...(o.syscallFilter ? { syscallFilter: o.syscallFilter } : {}),
      seccomp: true,
      hostFiles: credentialHostFiles(credentials),
      notifyReady: o.notifyReady ?? false,
      cgroup: null,
      containerManager: 'mctl',
      quiet: cl.quiet,
      rlimits: Object.entries(o.rlimits ?? {}).map(([name, l]) => ({ resource: RLIMIT_NAMES.indexOf(name as RlimitName), soft: l.soft, hard: l.hard })),
      ...(o.oomScoreAdjust !== undefined ? { oomScoreAdjust: o.oomScoreAdjust } : {}),
      ...(o.cpuAffinity !== undefined ? { cpuAffinity: o.cpuAffinity } : {}),
      ...(o.personality !== undefined ? { personality: o.personality } : {}),
    };

    const { Registration, registrationPlan } = await import('./register.js');
    const registerMode = o.register ?? 'auto';
    const keepUnit = o.keepUnit ?? false;
    // Host-side interface indices for RegisterMachineWithNetwork, filled by launch() from prepare's report.
    const netifIndices: number[] = [];
    const hooks: import('./launch.js').LaunchHooks = { network: netUsers.network, netifIndices };
    if (registrationPlan(registerMode, keepUnit) !== 'nothing') {
      const registration = new Registration(registerMode, keepUnit, {
        machineName, uuid, rootDirectory: root, netifIndices, slice: o.slice,
        // Always: with the supervisor as the scope's Controller= it is KillSignal= + KillMode=mixed
        // as nspawn passes them; in the fallback without a controller the service must know how
        // to stop PID 1 itself.
        killSignal: spec.killSignal,
        properties: o.properties ?? [], mounts: spec.mounts,
      });
      // Skip the slower hook path of the launcher when there is plainly no bus to talk to.
      if (registerMode === 'yes' || (await registration.busMayExist())) {
        hooks.afterNamespaces = [(leader) => registration.start(leader)];
        hooks.onAbort = [() => registration.stop()];
        hooks.busController = registration.busController;
      }
    }
    if (image && imageMod) {
      // Always take the hook path for images: the host-side mounts are detached and the image
      // lock handed to the supervisor once the container's namespace exists. First, so the
      // staging mount point (shared by all image starts) is free again as soon as possible.
      const ih = imageMod.imageLaunchHooks(image);
      hooks.afterNamespaces = [...(ih.afterNamespaces ?? []), ...(hooks.afterNamespaces ?? [])];
      hooks.onAbort = [...(ih.onAbort ?? []), ...(hooks.onAbort ?? [])];
      hooks.lockFiles = image.lock.fds.map((fd, i) => ({ fd, path: image.lock.paths[i]! }));
    }
    // User-namespace hooks (chown) first; the network's undo last (onAbort runs in reverse).
    hooks.afterNamespaces = [...netUsers.afterNamespaces, ...(hooks.afterNamespaces ?? [])];
    hooks.onAbort = [...netUsers.onAbort, ...(hooks.onAbort ?? [])];
    const { launch } = await import('./launch.js');
    await launch(spec, hooks);
  } catch (err) {
    await netUsers?.cleanup();
    for (const undo of plan.cleanup.reverse()) undo();
    throw err;
  }
});
