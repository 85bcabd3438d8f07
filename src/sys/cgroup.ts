// cgroup hierarchy layout and paths, as systemd sees them: pure cgroup2 ("unified"), the
// hybrid layout (v1 controllers + name=systemd at /sys/fs/cgroup/systemd + cgroup2 at
// /sys/fs/cgroup/unified), or legacy v1 only. A cgroup is named by its path relative to the
// hierarchy root ("/machine.slice/machine-foo.scope"); this module maps it to directories.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, statfsSync, writeFileSync } from 'node:fs';
import { readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';

export type CgroupLayout = 'unified' | 'hybrid' | 'legacy';

const CGROUP2_SUPER_MAGIC = 0x63677270;
const CGROUP_ROOT = process.env['MCTL_CGROUP_ROOT'] || '/sys/fs/cgroup';

export interface CgroupHierarchies {
  layout: CgroupLayout;
  /** Directory of the cgroup2 hierarchy, if mounted (root itself or …/unified). */
  unified: string | undefined;
  /** Directory of the v1 name=systemd hierarchy (hybrid and legacy). */
  systemd: string | undefined;
}

let detected: CgroupHierarchies | undefined;

function isCgroup2(dir: string): boolean {
  try {
    return statfsSync(dir).type === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
}

/** Which hierarchies this host has (probed once). */
export function cgroupHierarchies(): CgroupHierarchies {
  if (detected) return detected;
  if (isCgroup2(CGROUP_ROOT)) {
    detected = { layout: 'unified', unified: CGROUP_ROOT, systemd: undefined };
  } else {
    const unified = join(CGROUP_ROOT, 'unified');
    const systemd = join(CGROUP_ROOT, 'systemd');
    const hasUnified = isCgroup2(unified);
    detected = {
      layout: hasUnified ? 'hybrid' : 'legacy',
      unified: hasUnified ? unified : undefined,
      systemd: existsSync(join(systemd, 'cgroup.procs')) ? systemd : undefined,
    };
  }
  return detected;
}

/** The directories that hold a tracking cgroup (the ones systemd creates for every unit). */
export function trackingDirs(cgroup: string): string[] {
  const h = cgroupHierarchies();
  return [h.unified, h.systemd].filter((d): d is string => d !== undefined).map((d) => join(d, cgroup));
}

/**
 * The cgroup path of `pid` in the tracking hierarchy: the cgroup2 line ("0::") when cgroup2 is
 * the main or hybrid hierarchy, otherwise name=systemd. Undefined if the process is gone.
 */
export function pidCgroup(pid: number): string | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  const h = cgroupHierarchies();
  const v2 = lines.find((l) => l.startsWith('0::'))?.slice(3);
  const named = lines.find((l) => /^\d+:name=systemd:/.test(l))?.replace(/^\d+:name=systemd:/, '');
  if (h.layout === 'legacy') return named;
  if (h.layout === 'hybrid') return named ?? v2;
  return v2;
}

const UNIT_SUFFIX = /\.(service|scope|socket|mount|swap|timer|path|target|device|automount)$/;

/**
 * cg_path_get_unit(): the first path component below the slices that names a unit, e.g.
 * "/machine.slice/systemd-nspawn@foo.service/payload" → "systemd-nspawn@foo.service".
 * "/" and paths made only of slices have none.
 */
export function unitOfCgroup(cgroup: string): string | undefined {
  for (const part of cgroup.split('/').filter((p) => p.length > 0)) {
    if (part.endsWith('.slice')) continue;
    return UNIT_SUFFIX.test(part) ? part : undefined;
  }
  return undefined;
}

/** Create the cgroup in every tracking hierarchy (parents too). */
export function createCgroup(cgroup: string): void {
  for (const dir of trackingDirs(cgroup)) mkdirSync(dir, { recursive: true });
}

/** Move a process into the cgroup in every tracking hierarchy. */
export function attachProcess(cgroup: string, pid: number): void {
  for (const dir of trackingDirs(cgroup)) writeFileSync(join(dir, 'cgroup.procs'), `${pid}\n`);
}

/** PIDs in the cgroup and all its children (tracking hierarchy). */
export function cgroupPids(cgroup: string): number[] {
  const dir = trackingDirs(cgroup)[0];
  if (!dir) return [];
  const pids: number[] = [];
  const walk = (d: string): void => {
    try {
      for (const line of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (line) pids.push(Number(line));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    } catch {
      // the cgroup went away while walking: whatever is gone has no processes
    }
  };
  walk(dir);
  return pids;
}

/** Whether any process lives in the cgroup or below (cgroup.events when cgroup2 has it). */
export function cgroupPopulated(cgroup: string): boolean {
  const unified = cgroupHierarchies().unified;
  if (unified) {
    try {
      const events = readFileSync(join(unified, cgroup, 'cgroup.events'), 'utf8');
      return /^populated 1$/m.test(events);
    } catch {
      return false;
    }
  }
  return cgroupPids(cgroup).length > 0;
}

/** The cgroup.events file to watch for "populated" changes, when cgroup2 is available. */
export function cgroupEventsFile(cgroup: string): string | undefined {
  const unified = cgroupHierarchies().unified;
  return unified ? join(unified, cgroup, 'cgroup.events') : undefined;
}

export function cgroupExists(cgroup: string): boolean {
  return trackingDirs(cgroup).some((d) => existsSync(d));
}

/** Remove the cgroup and its (empty) children, deepest first, in every hierarchy. */
export function removeCgroup(cgroup: string): void {
  const rm = (d: string): void => {
    let entries: string[] = [];
    try {
      entries = readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) rm(join(d, e));
    try {
      rmdirSync(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  };
  for (const dir of trackingDirs(cgroup)) rm(dir);
}

/**
 * removeCgroup() without blocking the event loop: rmdir of a cgroup waits for the kernel to
 * take its controllers offline (an RCU grace period, often milliseconds), so a service that
 * removes many of them does it on the thread pool.
 */
export async function removeCgroupAsync(cgroup: string): Promise<void> {
  const rm = async (d: string): Promise<void> => {
    let entries: string[] = [];
    try {
      entries = (await readdir(d, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) await rm(join(d, e));
    try {
      await rmdir(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  };
  await Promise.all(trackingDirs(cgroup).map((d) => rm(d)));
}

/**
 * On pure cgroup2, let a slice hand controllers down (cgroup.subtree_control), so a delegated
 * scope below it gets them too. Best effort: a controller busy elsewhere is skipped.
 */
export function enableControllers(cgroup: string): void {
  const h = cgroupHierarchies();
  if (h.layout !== 'unified' || !h.unified) return;
  const parts = cgroup.split('/').filter((p) => p);
  let dir = h.unified;
  for (let i = 0; i < parts.length; i++) {
    let available: string[] = [];
    try {
      available = readFileSync(join(dir, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean);
    } catch {
      return;
    }
    for (const c of available) {
      try {
        writeFileSync(join(dir, 'cgroup.subtree_control'), `+${c}\n`);
      } catch {
        // e.g. EBUSY when processes sit in an inner node: leave that controller off
      }
    }
    dir = join(dir, parts[i] as string);
  }
}
