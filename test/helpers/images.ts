// Test images, built by the project's own recipes (images/*.recipe) and cached outside the repo.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const buildScript = fileURLToPath(new URL('../../images/build.sh', import.meta.url));
const built = new Map<string, string>();

/** Path of the cached, finished tree for images/NAME.recipe (built on first use). Never modify it. */
export function imageTree(name: 'debian' | 'testhost'): string {
  let path = built.get(name);
  if (!path) {
    path = execFileSync('bash', [buildScript, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 15 * 60_000 }).trim();
    built.set(name, path);
  }
  return path;
}

export const debianTree = (): string => imageTree('debian');
export const testhostTree = (): string => imageTree('testhost');
