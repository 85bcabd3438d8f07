// --resolv-conf, --timezone and --link-journal: how the container's /etc/resolv.conf,
// /etc/localtime and journal relate to the host's. When the tree may be written (plain,
// writable root) the files are changed in the tree as systemd-nspawn does; otherwise (read-only,
// ephemeral or volatile root) the copy modes fall back to read-only bind mounts, as nspawn does
// for a read-only /etc, and "delete" does nothing.
import { copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
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

/**
 * --link-journal. host/try-host: the journal lives in the host's /var/log/journal/ID and is
 * bound into the container; auto does that only when the host directory exists (nspawn's rule).
 * guest/try-guest would need a host symlink into the container's tree that outlives the run;
 * mctl treats them like auto (documented difference).
 */
export function setupLinkJournal(mode: LinkJournalMode, machineId: string | null, ctx: IntegrationContext): MountOp[] {
  if (mode === 'no') return [];
  const journalRoot = ctx.host?.journal ?? '/var/log/journal';
  if (machineId === null) {
    if (mode === 'host' || mode === 'guest') throw new UserError(`--link-journal=${mode}: the container has no /etc/machine-id`);
    return [];
  }
  const hostDir = join(journalRoot, machineId);
  const want = mode === 'host' || mode === 'try-host';
  if (want && !existsSync(hostDir)) {
    if (!existsSync(journalRoot)) {
      if (mode === 'host') throw new UserError(`--link-journal=host: the host has no ${journalRoot}`);
      return [];
    }
    mkdirSync(hostDir, { mode: 0o2755 });
  }
  if (!existsSync(hostDir)) {
    if (mode === 'guest') throw new UserError('--link-journal=guest is not supported by mctl-nspawn (use host or auto)');
    return [];
  }
  if (!ctx.treeWritable && !existsSync(join(ctx.root, 'var/log/journal'))) return [];
  return [{ kind: 'bind', source: hostDir, destination: `/var/log/journal/${machineId}`, readOnly: false, recursive: false }];
}
