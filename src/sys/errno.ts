// errno numbers and names for x86-64/aarch64 Linux (asm-generic), so failures can be reported
// as "mount(/proc): EPERM" instead of a bare number.
import { constants } from 'node:os';

const byNumber = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!byNumber.has(value)) byNumber.set(value, name);
}

export function errnoName(errno: number): string {
  return byNumber.get(errno) ?? `errno ${errno}`;
}

export function errnoNumber(name: string): number {
  const value = (constants.errno as Record<string, number | undefined>)[name];
  if (value === undefined) throw new Error(`unknown errno name ${name}`);
  return value;
}

/** A failed system call: which call, on what, and the errno name. */
export class SysError extends Error {
  readonly call: string;
  readonly errno: number;
  readonly code: string;
  readonly path: string | undefined;

  constructor(call: string, errno: number, path?: string, detail?: string) {
    const code = errnoName(errno);
    const where = path === undefined ? '' : `(${path})`;
    super(`${call}${where}: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'SysError';
    this.call = call;
    this.errno = errno;
    this.code = code;
    this.path = path;
  }
}
