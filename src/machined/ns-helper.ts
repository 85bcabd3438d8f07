// Runs inside a container's mount namespace (started through `nsenter --mount=… --root=/`, so
// every thread of this Node process is born in that namespace — a multithreaded process cannot
// setns() into a mount namespace itself). It attaches a detached mount tree (fd 3, made by
// open_tree() in the host) onto a directory of the container (fd 4, opened with RESOLVE_IN_ROOT).
import { moveMount } from '../sys/libc.js';

function main(): number {
  const [verb] = process.argv.slice(2);
  if (verb !== 'move-mount') {
    process.stderr.write(`mctl-machined ns helper: unknown verb '${verb ?? ''}'\n`);
    return 2;
  }
  try {
    // /proc/self/fd/4 is a magic link to the target directory in the container's tree;
    // move_mount() does not follow a final symlink, so "/." makes it resolve the link.
    moveMount(3, '/proc/self/fd/4/.');
    return 0;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 1;
  }
}

process.exitCode = main();
