// Name rules shared by machines and images, as systemd applies them (hostname_is_valid()
// with no flags): labels of [A-Za-z0-9-] separated by single dots, no '-' at a label edge,
// at most 64 characters. systemd's man page also claims '_' is allowed; its code rejects it,
// and so do we.
import { UserError } from './errors.js';

const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;

export function isValidHostname(name: string): boolean {
  if (name.length === 0 || name.length > 64) return false;
  return name.split('.').every((label) => LABEL.test(label));
}

/** Machine names: a valid hostname; ".host" is the reserved name of the host itself. */
export function isValidMachineName(name: string): boolean {
  return name === '.host' || isValidHostname(name);
}

/** Image names: like machine names; a leading dot marks a hidden image. */
export function isValidImageName(name: string): boolean {
  if (name.startsWith('.')) return isValidHostname(name.slice(1));
  return isValidHostname(name);
}

export function assertMachineName(name: string): string {
  if (!isValidMachineName(name)) {
    throw new UserError(`invalid machine name '${name}'`, {
      hint: 'use letters, digits, "-" and "." (at most 64 characters)',
    });
  }
  return name;
}

export function assertImageName(name: string): string {
  if (!isValidImageName(name)) {
    throw new UserError(`invalid image name '${name}'`, {
      hint: 'use letters, digits, "-" and "." (at most 64 characters)',
    });
  }
  return name;
}

/** hostname_cleanup(): turn a directory basename into a usable machine name. */
export function cleanupHostname(raw: string): string {
  let s = raw.replace(/[^A-Za-z0-9.-]/g, '-').replace(/\.{2,}/g, '.');
  s = s
    .split('.')
    .map((l) => l.replace(/^-+|-+$/g, ''))
    .filter((l) => l.length > 0)
    .join('.');
  return s.slice(0, 64).replace(/[.-]+$/, '');
}
