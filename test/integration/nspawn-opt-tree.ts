// A writable Debian tree for the nspawn-opt tests without copying 165 MB per file: an overlay
// with the cached tree (never written) as its lower layer and an upper dir in the test's work
// dir. The mount is ours: release() unmounts it (called from after()).
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { debianTree } from '../helpers/images.js';

export interface TestTree {
  path: string;
  release(): void;
}

export function overlayTree(work: string): TestTree {
  const path = join(work, 'tree');
  const upper = join(work, '.tree-upper');
  const scratch = join(work, '.tree-work');
  for (const d of [path, upper, scratch]) mkdirSync(d, { recursive: true });
  const r = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${debianTree()},upperdir=${upper},workdir=${scratch}`, path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`overlay over the cached tree: ${r.stderr}`);
  return {
    path,
    release() {
      spawnSync('umount', [path]);
    },
  };
}
