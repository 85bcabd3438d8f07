// Machine identity: the machine name (-M, or the directory's name as systemd derives it), the
// hostname and the 128-bit id exported as $container_uuid.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { UserError } from '../common/errors.js';
import { cleanupHostname, isValidHostname } from '../common/names.js';

/**
 * -M NAME, else the basename of the root (the host's name for "/"), cleaned up into a valid
 * hostname. This is also the name the .nspawn file is looked up under.
 */
export function deriveMachineName(machine: string | undefined, rootPath: string | undefined): string {
  if (machine !== undefined) return machine;
  const abs = resolve(rootPath ?? '.');
  const raw = abs === '/' ? hostname() : basename(abs).replace(/\.raw$/, '');
  const name = cleanupHostname(raw);
  if (!isValidHostname(name)) throw new UserError(`cannot derive a machine name from ${abs}`, { hint: 'use -M NAME' });
  return name;
}

/** -x without -M: a random suffix, so that several throw-away instances can run at once. */
export function ephemeralName(name: string): string {
  const suffix = randomBytes(8).toString('hex');
  return `${name.slice(0, 64 - suffix.length - 1).replace(/[.-]+$/, '')}-${suffix}`;
}

const ID128 = /^[0-9a-f]{32}$/;

/** Random bytes from the kernel; node:crypto would add its load time to every start. */
function randomBytes(n: number): Buffer {
  const buf = Buffer.alloc(n);
  const fd = openSync('/dev/urandom', 'r');
  try {
    readSync(fd, buf, 0, n, null);
  } finally {
    closeSync(fd);
  }
  return buf;
}

/** The tree's /etc/machine-id when it holds a valid, non-zero id; else null ("uninitialized" included). */
export function readTreeMachineId(root: string): string | null {
  let text: string;
  try {
    text = readFileSync(join(root, 'etc/machine-id'), 'utf8').trim();
  } catch {
    return null;
  }
  return ID128.test(text) && !/^0+$/.test(text) ? text : null;
}

/** A random v4 UUID as 32 hex digits (what sd_id128_randomize() produces). */
export function randomId128(): string {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  return b.toString('hex');
}

/** --uuid / MachineID= first; then the tree's own machine-id; otherwise a fresh random id. */
export function chooseMachineId(given: string | undefined, root: string): string {
  return given ?? readTreeMachineId(root) ?? randomId128();
}

/** 32 hex digits → the dashed form machined and $container_uuid readers also accept. */
export function id128ToUuid(id: string): string {
  return `${id.slice(0, 8)}-${id.slice(8, 12)}-${id.slice(12, 16)}-${id.slice(16, 20)}-${id.slice(20)}`;
}
