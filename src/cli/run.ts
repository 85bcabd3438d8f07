// Glue for verb handlers: one Session per invocation, closed when the verb ends, and the
// verb's exit status handed to runMain.
import { Session, type GlobalArgs } from './session.js';
import { UserError } from '../common/errors.js';
import { assertMachineName, assertImageName } from '../common/names.js';

export type Args<T> = GlobalArgs & T;

/** Run a verb with a session; a returned number becomes the exit status. */
export async function withSession<T>(argv: Args<T>, body: (s: Session) => Promise<number | void>): Promise<void> {
  const session = new Session(argv);
  try {
    const code = await body(session);
    if (typeof code === 'number') process.exitCode = code;
  } finally {
    session.close();
  }
}

/** Validate before asking the bus, so a typo gets the name rule, not a D-Bus error. */
export function machineName(name: unknown): string {
  if (typeof name !== 'string' || name === '') throw new UserError('a machine name is required', { hint: 'see mctl list' });
  return assertMachineName(name);
}

export function imageName(name: unknown): string {
  if (typeof name !== 'string' || name === '') throw new UserError('an image name is required', { hint: 'see mctl list-images' });
  return assertImageName(name);
}

export function stringList(v: unknown): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}
