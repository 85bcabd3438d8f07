// --resolv-conf, --timezone and --link-journal: how the container's /etc/resolv.conf,
// /etc/localtime and journal relate to the host's. When the tree may be written (plain,
// writable root) the files are changed in the tree as systemd-nspawn does; otherwise (read-only,
// ephemeral or volatile root) the copy modes fall back to read-only bind mounts, as nspawn does
// for a read-only /etc, and "delete" does nothing.
import { copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, renameSync, rmdirSync, rmSync, symlinkSync, unlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { UserError } from '../common/errors.js';
import type { LinkJournalMode, ResolvConfMode, TimezoneMode } from './options.js';
import type { MountOp } from './spec.js';

export interface IntegrationContext {
  root: string;
  treeWritable: boolean;
  privateNetwork: boolean;
  /** Host paths, overridable for tests. */
  host?: { etc?: string; run?: string; usrLib?: string; journal?: string };
}

function lexists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

function sameContent(a: string, b: string): boolean {
  try {
    return readFileSync(a).equals(readFileSync(b));
  } catch {
    return false;
  }
}

/** Replace `dest` with a copy of `src` atomically (tmp + rename); nothing is written when it already matches. */
function copyInto(src: string, dest: string): void {
  if (!isSymlink(dest) && sameContent(src, dest)) return;
  mkdirSync(dirname(dest), { recursive: true });
  const tmp = `${dest}.#mctl-${process.pid}`;
  try {
    copyFileSync(src, tmp);
    renameSync(tmp, dest);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new UserError(`cannot copy ${src} to ${dest}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

export function resolvConfSource(mode: ResolvConfMode, ctx: IntegrationContext): string {
  const etc = ctx.host?.etc ?? '/etc';
  const run = ctx.host?.run ?? '/run';
  const usrLib = ctx.host?.usrLib ?? '/usr/lib';
  if (mode.endsWith('-static')) return join(usrLib, 'systemd/resolv.conf');
  if (mode.endsWith('-uplink')) return join(run, 'systemd/resolve/resolv.conf');
  if (mode.endsWith('-stub')) return join(run, 'systemd/resolve/stub-resolv.conf');
  return join(etc, 'resolv.conf');
}

/** nspawn's "auto": off with a private network, the resolved stub when resolved runs, else the host's file. */
export function resolveResolvConfAuto(ctx: IntegrationContext): ResolvConfMode {
  if (ctx.privateNetwork) return 'off';
  const run = ctx.host?.run ?? '/run';
  const etc = ctx.host?.etc ?? '/etc';
  const prefer = ctx.treeWritable ? 'copy' : 'bind';
  if (existsSync(join(run, 'systemd/resolve/stub-resolv.conf')) && existsSync(join(run, 'systemd/resolve/io.systemd.Resolve'))) return `${prefer}-stub`;
  if (existsSync(join(etc, 'resolv.conf'))) return `${prefer}-host`;
  return ctx.treeWritable ? 'delete' : 'off';
}

export function setupResolvConf(requested: ResolvConfMode, ctx: IntegrationContext): MountOp[] {
  const mode = requested === 'auto' ? resolveResolvConfAuto(ctx) : requested;
  if (mode === 'off') return [];
  const dest = join(ctx.root, 'etc/resolv.conf');
  if (mode === 'delete') {
    if (ctx.treeWritable && lexists(dest)) unlinkSync(dest);
    return [];
  }
  const src = resolvConfSource(mode, ctx);
  if (!existsSync(src)) {
    if (requested === 'auto') return [];
    throw new UserError(`--resolv-conf=${mode}: ${src} does not exist`);
  }
  const kind = mode.split('-')[0];
  if (kind === 'bind' || !ctx.treeWritable) {
    if (!existsSync(join(ctx.root, 'etc'))) return [];
    return [{ kind: 'bind', source: src, destination: '/etc/resolv.conf', readOnly: true, recursive: false }];
  }
  // copy-*: leave a symlink (e.g. to resolved's stub) alone; replace-*: replace whatever is there.
  if (kind === 'copy' && isSymlink(dest)) return [];
  copyInto(src, dest);
  return [];
}

/** The zone name of the host's /etc/localtime symlink ("Europe/Berlin"), or null. */
function hostZone(localtime: string): string | null {
  try {
    const target = readlinkSync(localtime);
    const m = /(?:^|\/)zoneinfo\/(.+)$/.exec(target);
    return m ? m[1]! : null;
  } catch {
    return null;
  }
}

export function setupTimezone(requested: TimezoneMode, ctx: IntegrationContext): MountOp[] {
  const localtime = join(ctx.host?.etc ?? '/etc', 'localtime');
  const dest = join(ctx.root, 'etc/localtime');
  let mode: TimezoneMode = requested;
  if (mode === 'auto') {
    if (!lexists(localtime)) mode = ctx.treeWritable ? 'delete' : 'off';
    else if (!ctx.treeWritable) mode = 'bind';
    else mode = isSymlink(localtime) ? 'symlink' : 'copy';
  }
  if (mode === 'off') return [];
  if (mode === 'delete') {
    if (ctx.treeWritable && lexists(dest)) unlinkSync(dest);
    return [];
  }
  if (!existsSync(localtime)) throw new UserError(`--timezone=${mode}: the host has no ${localtime}`);
  if (mode === 'bind' || !ctx.treeWritable) {
    if (!existsSync(join(ctx.root, 'etc'))) return [];
    return [{ kind: 'bind', source: localtime, destination: '/etc/localtime', readOnly: true, recursive: false }];
  }
  if (mode === 'symlink') {
    const zone = hostZone(localtime);
    // The container must have the zone file; otherwise fall back to a copy, as nspawn does.
    if (zone && existsSync(join(ctx.root, 'usr/share/zoneinfo', zone))) {
      const target = `../usr/share/zoneinfo/${zone}`;
      // Already pointing at that zone (relative or absolute link): leave it as it is.
      if (isSymlink(dest) && hostZone(dest) === zone) return [];
      mkdirSync(dirname(dest), { recursive: true });
      if (lexists(dest)) unlinkSync(dest);
      symlinkSync(target, dest);
      return [];
    }
  }
  if (isSymlink(dest)) unlinkSync(dest);
  copyInto(localtime, dest);
  return [];
}

/** What --link-journal does: mounts for the container, and the undo of host changes for a failed start. */
export interface JournalLink {
  mounts: MountOp[];
  /** Removes what was created on the host (a guest symlink, a fresh host directory); null if nothing. */
  undo: (() => void) | null;
  /** A line for the user when a try-/auto mode skipped the link for a reason worth knowing. */
  warning: string | null;
}

function isMountPoint(path: string): boolean {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === path);
  } catch {
    return false;
  }
}

/** The host's own machine id (/etc/machine-id), or null when it has none. */
function hostMachineId(ctx: IntegrationContext): string | null {
  try {
    const id = readFileSync(join(ctx.host?.etc ?? '/etc', 'machine-id'), 'utf8').trim();
    return /^[0-9a-f]{32}$/.test(id) ? id : null;
  } catch {
    return null;
  }
}

/**
 * --link-journal, as systemd-nspawn 252's setup_journal(), with MACHINE-ID the container's id
 * (--uuid, the tree's /etc/machine-id or the random one), P the host's
 * /var/log/journal/MACHINE-ID and Q the tree's:
 *   no                 nothing; nothing either with --ephemeral (the journal dies with the layer)
 *   host / try-host    mkdir P on the host (not its parents) and bind it onto Q
 *   guest / try-guest  P becomes a symlink to Q (left in place, so the host's journalctl sees the
 *                      container's journal); the journal stays in the tree
 *   auto               P a directory: bind it; P a symlink to Q (an earlier guest run): keep it
 * Failures (host and machine ids equal, P or Q already a mount point, a P that is in the way)
 * are errors for host/guest; try-* and auto skip the link instead (with a warning where nspawn
 * warns).
 */
export function setupLinkJournal(
  mode: LinkJournalMode,
  machineId: string,
  ctx: IntegrationContext & { ephemeral?: boolean; transientRoot?: boolean },
): JournalLink {
  const none: JournalLink = { mounts: [], undo: null, warning: null };
  if (mode === 'no' || ctx.ephemeral) return none;
  const tryOnly = mode === 'auto' || mode.startsWith('try-');
  const guest = mode === 'guest' || mode === 'try-guest';
  const host = mode === 'host' || mode === 'try-host';
  const fail = (why: string): JournalLink => {
    if (tryOnly) return none;
    throw new UserError(`--link-journal=${mode}: ${why}`);
  };
  const hostId = hostMachineId(ctx);
  // nspawn fails even under auto here; a host without a machine id simply gets no link from auto/try-*
  if (hostId === null) return fail(`the host has no machine ID in ${join(ctx.host?.etc ?? '/etc', 'machine-id')}`);
  if (hostId === machineId) {
    const why = `host and machine ids are equal (${machineId}): refusing to link journals`;
    if (tryOnly) return { ...none, warning: why };
    throw new UserError(`--link-journal=${mode}: ${why}`);
  }
  const treeJournal = join(ctx.root, 'var/log/journal');
  if (!existsSync(treeJournal)) {
    if (!ctx.treeWritable) return fail(`${treeJournal} does not exist and the tree is read-only`);
    mkdirSync(treeJournal, { recursive: true, mode: 0o755 });
  }
  const journalRoot = ctx.host?.journal ?? '/var/log/journal';
  const p = join(journalRoot, machineId);
  const q = join(treeJournal, machineId);
  if (isMountPoint(p)) return fail(`${p}: already a mount point, refusing to use for journal`);
  if (isMountPoint(q)) return fail(`${q}: already a mount point, refusing to use for journal`);
  // A disk image's root is a mount point that exists only while it runs: a host symlink into it
  // would dangle (nspawn leaves exactly that behind); --link-journal=host works for images.
  if (guest && ctx.transientRoot) return fail('a disk image\'s journal cannot be linked from the host (use --link-journal=host)');
  const makeQ = (): void => {
    if (!existsSync(q) && ctx.treeWritable) mkdirSync(q, { mode: 0o755 });
  };

  if (isSymlink(p)) {
    if ((guest || mode === 'auto') && resolve(journalRoot, readlinkSync(p)) === q) {
      makeQ();
      return none;
    }
    unlinkSync(p); // a stale link (another tree): nspawn replaces it
  } else if (lexists(p) && guest) {
    // a host directory in the way of the guest symlink: only an empty one may go
    try {
      rmdirSync(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return fail(code === 'ENOTDIR' ? `${p} already exists and is neither a symlink nor a directory` : `cannot remove ${p}: ${code}`);
    }
  }

  if (guest) {
    try {
      symlinkSync(q, p);
    } catch (err) {
      return fail(`cannot link ${p} to ${q}: ${(err as NodeJS.ErrnoException).code}`);
    }
    makeQ();
    return { mounts: [], undo: () => rmSync(p, { force: true }), warning: null };
  }

  let undo: (() => void) | null = null;
  if (host) {
    try {
      mkdirSync(p, { mode: 0o755 });
      undo = () => rmdirQuiet(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') return fail(`cannot create ${p}: ${code}`);
    }
  } else if (!existsSync(p)) {
    return none;
  }
  if (!existsSync(q) && !ctx.treeWritable) return fail(`${q} does not exist and the tree is read-only`);
  makeQ();
  return { mounts: [{ kind: 'bind', source: p, destination: `/var/log/journal/${machineId}`, readOnly: false, recursive: false }], undo, warning: null };
}

function rmdirQuiet(path: string): void {
  try {
    rmdirSync(path);
  } catch {
    // not empty any more: the container wrote to it, keep it
  }
}
