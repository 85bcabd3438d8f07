// --network-namespace-path=PATH: run the container in an existing network namespace (one made
// by `ip netns add`, CNI, another container's /proc/PID/ns/net …) instead of a new one.
//
// The launcher's main thread enters the namespace just before it starts the runtime, which then
// creates no network namespace of its own: the runtime (spawned or exec'd from this very thread)
// and so the container inherit the one this thread is in. setns() of a network namespace is
// allowed in a multithreaded process and moves only the calling thread; the launcher's other
// threads, and everything it did before, stay in the host's.
import { closeSync, openSync, constants } from 'node:fs';
import { UserError } from '../common/errors.js';
import { SysError } from '../sys/errno.js';
import { ioctlBuffer, setns, CLONE } from '../sys/libc.js';

const NS_GET_NSTYPE = 0xb703; // _IO(0xb7, 0x3)

/** Check that PATH is a network namespace (as nspawn does) and move this thread into it. */
export function joinNetworkNamespace(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY);
  } catch (err) {
    throw new UserError(`--network-namespace-path: cannot open ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    let type: number;
    try {
      type = ioctlBuffer(fd, NS_GET_NSTYPE, null);
    } catch (err) {
      // ENOTTY: not a namespace file at all.
      if (err instanceof SysError && err.code === 'ENOTTY') type = -1;
      else throw err;
    }
    if (type !== CLONE.NEWNET) throw new UserError(`--network-namespace-path: ${path} does not refer to a network namespace, refusing`);
    try {
      setns(fd, CLONE.NEWNET);
    } catch (err) {
      throw new UserError(`--network-namespace-path: cannot enter ${path}: ${err instanceof SysError ? err.code : String(err)}`);
    }
  } finally {
    closeSync(fd);
  }
}
