// org.freedesktop.machine1.Image objects and the Manager's image methods (systemd's
// image-dbus.c), on top of the image store (src/image). Image objects are not kept: every
// call looks the image up by name, so images added or removed behind our back just work.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { busLabelUnescape } from '../dbus/escape.js';
import {
  cleanPool,
  cloneImage,
  findImage,
  ImageError,
  imageMetadata,
  listImages,
  markImageReadOnly,
  poolPath,
  removeImage,
  renameImage,
  setImageLimit,
  setPoolLimit,
  type ImageErrorKind,
  type ImageInfo,
  type ImageMetadata,
} from '../image/index.js';
import { BusError, ERR, errnoError } from './errors.js';
import type { CallContext, HandlerResult, InterfaceImpl } from './bus-objects.js';
import { IMAGE_INTERFACE } from './interfaces.js';
import { IMAGE_PATH_PREFIX, imagePath } from './machine.js';
import { toBigInt } from './machine-dbus.js';

const UINT64_MAX = 0xffffffffffffffffn;

function size(v: number | null): bigint {
  return v === null || v < 0 ? UINT64_MAX : BigInt(Math.trunc(v));
}

/** The store's typed errors become systemd's D-Bus errors. */
export function imageBusError(err: unknown): unknown {
  if (!(err instanceof ImageError)) return err;
  switch (err.kind) {
    case 'no-such-image':
      return new BusError(ERR.NoSuchImage, err.message);
    case 'exists':
      return errnoError('EEXIST', err.message);
    case 'busy':
      return errnoError('EBUSY', err.message);
    case 'read-only':
      return errnoError('EROFS', err.message);
    case 'not-supported':
      return new BusError(ERR.NotSupported, err.message);
    case 'invalid':
      return new BusError(ERR.InvalidArgs, err.message);
  }
  return err;
}

async function mapped<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw imageBusError(err);
  }
}

export function requireImage(name: string): ImageInfo {
  let image: ImageInfo | undefined;
  try {
    image = findImage(name);
  } catch (err) {
    throw imageBusError(err);
  }
  if (!image) throw new BusError(ERR.NoSuchImage, `No image '${name}' known`);
  return image;
}

/** Resolve an image object path (…/image/ESCAPED) to the image, or undefined. */
export function imageFromPath(path: string): ImageInfo | undefined {
  if (!path.startsWith(IMAGE_PATH_PREFIX)) return undefined;
  const label = path.slice(IMAGE_PATH_PREFIX.length);
  if (!label || label.includes('/')) return undefined;
  try {
    return findImage(busLabelUnescape(label));
  } catch {
    return undefined;
  }
}

export function imageChildren(): string[] {
  try {
    return listImages().map((i) => imagePath(i.name).slice(IMAGE_PATH_PREFIX.length));
  } catch {
    return [];
  }
}

const METADATA_HELPER = fileURLToPath(new URL('./metadata-helper.js', import.meta.url));
const METADATA_TIMEOUT_MS = 60_000;

/**
 * An image's identity files. Directory trees are read in place (plain file reads); raw and block
 * images must be mounted, which blocks (staging lock, loop devices, losetup), so that happens in
 * a child process (metadata-helper.ts) while the event loop keeps serving.
 */
async function metadataOf(name: string): Promise<ImageMetadata> {
  const image = requireImage(name);
  if (image.type === 'directory' || image.type === 'subvolume') return imageMetadata(name);
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, [METADATA_HELPER, name], { stdio: ['ignore', 'pipe', 'ignore'] });
    let text = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), METADATA_TIMEOUT_MS);
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.on('error', (e) => reject(new BusError(ERR.Failed, `cannot read image '${name}': ${e.message}`)));
    child.on('close', (_code, signal) => {
      clearTimeout(timer);
      if (signal) reject(new BusError(ERR.Failed, `reading image '${name}' did not finish within ${METADATA_TIMEOUT_MS / 1000} s`));
      else resolve(text);
    });
  });
  let reply: { ok?: Omit<ImageMetadata, 'machineId'> & { machineId: string }; error?: { kind: ImageErrorKind | null; message: string } };
  try {
    reply = JSON.parse(out) as typeof reply;
  } catch {
    throw new BusError(ERR.Failed, `cannot read image '${name}'`);
  }
  if (reply.ok) return { ...reply.ok, machineId: Buffer.from(reply.ok.machineId, 'hex') };
  const e = reply.error;
  throw e?.kind ? new ImageError(e.kind, e.message) : new BusError(ERR.Failed, e?.message ?? `cannot read image '${name}'`);
}

/** Image operations by name, shared by Image.X and Manager.XImage(name, …). */
export const imageOperations = {
  list(): unknown[] {
    const rows = listImages().map((i) => [i.name, i.type, i.readOnly, BigInt(i.crtime), BigInt(i.mtime), size(i.usage), imagePath(i.name)]);
    return [rows];
  },
  get(name: string): unknown[] {
    return [imagePath(requireImage(name).name)];
  },
  remove: (name: string): Promise<unknown[]> => mapped(async () => (await removeImage(name), [])),
  rename: (name: string, newName: string): Promise<unknown[]> => mapped(async () => (await renameImage(name, newName), [])),
  clone: (name: string, newName: string, readOnly: boolean): Promise<unknown[]> => mapped(async () => (await cloneImage(name, newName, { readOnly }), [])),
  markReadOnly: (name: string, readOnly: boolean): Promise<unknown[]> => mapped(async () => (await markImageReadOnly(name, readOnly), [])),
  setLimit: (name: string, limit: bigint): Promise<unknown[]> => mapped(async () => (await setImageLimit(name, limit), [])),
  setPoolLimit: (limit: bigint): Promise<unknown[]> => mapped(async () => (await setPoolLimit(limit), [])),
  async cleanPool(mode: string): Promise<unknown[]> {
    if (mode !== 'all' && mode !== 'hidden') throw new BusError(ERR.InvalidArgs, `Unknown mode '${mode}'.`);
    const removed = await mapped(() => cleanPool(mode));
    // Work entries of interrupted transfers (".#mctl-PID-…"): never images, so the store skips
    // them; a transfer still running keeps its name reservation and is left alone. Loaded on
    // first use: the import part is large and CleanPool is rare.
    const { cleanStaleTransfers } = await import('../import/index.js');
    const transfers = await cleanStaleTransfers(poolPath());
    return [[...removed.map((r) => [r.name, size(r.usage)]), ...transfers.map((name) => [name, UINT64_MAX])]];
  },
  hostname: (name: string): Promise<unknown[]> => mapped(async () => [(await metadataOf(name)).hostname]),
  machineId: (name: string): Promise<unknown[]> => mapped(async () => [(await metadataOf(name)).machineId]),
  machineInfo: (name: string): Promise<unknown[]> => mapped(async () => [(await metadataOf(name)).machineInfo]),
  osRelease: (name: string): Promise<unknown[]> => mapped(async () => [(await metadataOf(name)).osRelease]),
};

export const managerPoolProperties = {
  PoolPath: (): string => poolPath(),
  // Like systemd without a btrfs quota on the pool: unknown.
  PoolUsage: (): bigint => UINT64_MAX,
  PoolLimit: (): bigint => UINT64_MAX,
};

export function imageInterface(guard: (name: string, call: CallContext) => Promise<void>): InterfaceImpl<ImageInfo> {
  const wrap =
    <A extends unknown[]>(name: string, fn: (img: ImageInfo, ...args: A) => Promise<HandlerResult | unknown[]> | unknown[]) =>
    async (img: ImageInfo, args: unknown[], call: CallContext): Promise<HandlerResult | unknown[]> => {
      await guard(name, call);
      return fn(img, ...(args as A));
    };
  return {
    spec: IMAGE_INTERFACE,
    methods: {
      Remove: wrap('Remove', (i) => imageOperations.remove(i.name)),
      Rename: wrap('Rename', (i, n: string) => imageOperations.rename(i.name, n)),
      Clone: wrap('Clone', (i, n: string, ro: boolean) => imageOperations.clone(i.name, n, ro)),
      MarkReadOnly: wrap('MarkReadOnly', (i, ro: boolean) => imageOperations.markReadOnly(i.name, ro)),
      SetLimit: wrap('SetLimit', (i, l: unknown) => imageOperations.setLimit(i.name, toBigInt(l))),
      GetHostname: wrap('GetHostname', (i) => imageOperations.hostname(i.name)),
      GetMachineID: wrap('GetMachineID', (i) => imageOperations.machineId(i.name)),
      GetMachineInfo: wrap('GetMachineInfo', (i) => imageOperations.machineInfo(i.name)),
      GetOSRelease: wrap('GetOSRelease', (i) => imageOperations.osRelease(i.name)),
    },
    properties: {
      Name: (i) => i.name,
      Path: (i) => i.path,
      Type: (i) => i.type,
      ReadOnly: (i) => i.readOnly,
      CreationTimestamp: (i) => BigInt(i.crtime),
      ModificationTimestamp: (i) => BigInt(i.mtime),
      Usage: (i) => size(i.usage),
      Limit: (i) => size(i.limit),
      UsageExclusive: (i) => size(i.usageExclusive),
      LimitExclusive: (i) => size(i.limitExclusive),
    },
  };
}
