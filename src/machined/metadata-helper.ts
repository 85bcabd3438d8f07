// Reads the identity files (hostname, machine-id, machine-info, os-release) of a raw or block
// image in a short-lived process of its own. Mounting one takes the image staging lock with a
// blocking wait, attaches loop devices and may run losetup: none of that may happen on
// mctl-machined's event loop, where one stuck holder of the lock would freeze every D-Bus call.
// Prints {"ok": metadata} or {"error": {kind, message}} as one JSON line on stdout.
import { ImageError, imageMetadata } from '../image/index.js';

async function main(): Promise<number> {
  const [name] = process.argv.slice(2);
  try {
    const m = await imageMetadata(name ?? '');
    process.stdout.write(`${JSON.stringify({ ok: { ...m, machineId: m.machineId.toString('hex') } })}\n`);
    return 0;
  } catch (err) {
    const kind = err instanceof ImageError ? err.kind : null;
    process.stdout.write(`${JSON.stringify({ error: { kind, message: (err as Error).message } })}\n`);
    return 1;
  }
}

process.exitCode = await main();
