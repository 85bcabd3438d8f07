// Disk images of the cached recipe trees, built by test/helpers/raw-images.sh and cached.
// Never modify one: copy it (copyImage) or attach it read-only.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { debianTree } from './images.js';
import { STAGING_DIR } from '../../src/image/mount.js';

export type RawImageKind = 'ext4' | 'gpt' | 'mbr' | 'squashfs' | 'usr';

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

export interface ImageResidue {
  loops: string[];
  mounts: string[];
}

/** Loop devices and mounts that could be left by image tests working in `dir`: compare before/after. */
export function imageResidue(dir: string): ImageResidue {
  const loops = execFileSync('losetup', ['-a', '--noheadings', '-O', 'NAME,BACK-FILE'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(dir) || l.includes('/mctl-test/img-'));
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(STAGING_DIR) || l.includes(dir));
  return { loops, mounts };
}

/**
 * Wait (up to `timeoutMs`) until the residue in `dir` is back to `clean`, then compare. Loop
 * devices detach asynchronously: autoclear runs once the last mount goes, which for a
 * container is when its mount namespace is torn down, just after its processes are reaped.
 */
export async function settledResidue(dir: string, clean: ImageResidue, timeoutMs = 5000): Promise<ImageResidue> {
  const deadline = Date.now() + timeoutMs;
  let now = imageResidue(dir);
  while (JSON.stringify(now) !== JSON.stringify(clean) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    now = imageResidue(dir);
  }
  return now;
}
