// --set-credential / --load-credential: the container finds them in /run/host/credentials
// (directory 0500, files 0400, on the runtime's /run/host tmpfs which is made read-only) and
// PID 1 gets $CREDENTIALS_DIRECTORY pointing there, as with systemd-nspawn.
import type { Credential } from './options.js';
import type { HostFile } from './spec.js';

export const CREDENTIALS_DIRECTORY = '/run/host/credentials';

export function credentialHostFiles(credentials: readonly Credential[]): HostFile[] {
  return credentials.map((c) => ({
    path: `credentials/${c.id}`,
    content: c.data.toString('base64'),
    encoding: 'base64' as const,
    mode: 0o400,
    dirMode: 0o500,
  }));
}

export function credentialEnvironment(credentials: readonly Credential[]): Record<string, string> {
  return credentials.length > 0 ? { CREDENTIALS_DIRECTORY } : {};
}
