// OpenPGP verification of checksum lists with gpgv (GnuPG's verify-only tool), against a fixed
// keyring and never the caller's own trust database, as systemd-importd does.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../common/errors.js';
import { findProgram, runTool } from './subprocess.js';

/** Where the trusted keys come from; MCTL_IMPORT_KEYRING overrides (tests, special setups). */
export const KEYRING_PATHS = ['/etc/mctl/import-pubring.gpg', '/etc/systemd/import-pubring.gpg', '/usr/lib/systemd/import-pubring.gpg'];

export function findKeyring(): string {
  const override = process.env['MCTL_IMPORT_KEYRING'];
  if (override) {
    if (!existsSync(override)) throw new UserError(`keyring ${override} (MCTL_IMPORT_KEYRING) does not exist`);
    return override;
  }
  const hit = KEYRING_PATHS.find((p) => existsSync(p));
  if (!hit) throw new UserError(`no keyring to verify signatures with (looked for ${KEYRING_PATHS.join(', ')})`, { hint: 'install one, or use --verify=checksum' });
  return hit;
}

async function gpgv(args: string[], work: string): Promise<void> {
  if (!findProgram('gpgv')) throw new UserError('signature verification needs gpgv', { hint: 'install the gpgv package, or use --verify=checksum' });
  // a private, empty home: nothing of root's GnuPG setup takes part
  const tool = runTool('gpgv', ['--homedir', work, '--keyring', findKeyring(), ...args], { stdio: ['ignore', 'ignore', 'pipe'], label: 'gpgv' });
  try {
    await tool.finished;
  } catch {
    throw new UserError('DOWNLOAD INVALID: signature verification failed', { hint: tool.stderr().split('\n').filter((l) => /BAD|no public key|Can't check|not a detached|no signature/i.test(l)).pop()?.replace(/^gpgv: /, '') ?? 'gpgv rejected it' });
  }
}

async function withWorkDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'mctl-gpgv-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Check a detached signature (SHA256SUMS.gpg) over DATA. */
export async function verifyDetached(data: Buffer, signature: Buffer): Promise<void> {
  await withWorkDir(async (dir) => {
    await writeFile(join(dir, 'data'), data);
    await writeFile(join(dir, 'data.sig'), signature);
    await gpgv([join(dir, 'data.sig'), join(dir, 'data')], dir);
  });
}

/** Check an inline/clear-signed document and return the text that the signature covers. */
export async function verifyInline(signed: Buffer): Promise<string> {
  return withWorkDir(async (dir) => {
    await writeFile(join(dir, 'signed'), signed);
    await gpgv(['--output', join(dir, 'plain'), join(dir, 'signed')], dir);
    return readFile(join(dir, 'plain'), 'utf8');
  });
}
