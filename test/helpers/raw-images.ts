// Disk images of the cached recipe trees, built by test/helpers/raw-images.sh and cached.
// Never modify one: copy it (copyImage) or attach it read-only.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { debianTree } from './images.js';

export type RawImageKind = 'ext4' | 'gpt' | 'mbr' | 'squashfs';

const script = fileURLToPath(new URL('./raw-images.sh', import.meta.url));
const built = new Map<string, string>();

/** Path of the cached image of KIND made from the Debian recipe tree (built on first use). */
export function debianImage(kind: RawImageKind): string {
  let path = built.get(kind);
  if (!path) {
    const out = execFileSync('bash', [script, kind, debianTree()], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 10 * 60_000 });
    path = out.trim().split('\n').pop() ?? '';
    built.set(kind, path);
  }
  return path;
}

/** A private, writable copy of a cached image (reflinked/sparse), e.g. into a test pool. */
export function copyImage(source: string, target: string): string {
  execFileSync('cp', ['--reflink=auto', '--sparse=always', source, target]);
  return target;
}
