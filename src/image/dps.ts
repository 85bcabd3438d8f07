// The Discoverable Partitions Specification (uapi-group.org/specifications/specs/
// discoverable_partitions_specification): which GPT partition is what, and where it is mounted.
import { createRequire } from 'node:module';
import type { Partition, PartitionTable } from './gpt.js';
import { DiskImageError } from './errors.js';

export type Designator = 'root' | 'usr' | 'home' | 'srv' | 'var' | 'tmp' | 'esp' | 'xbootldr';

export type DpsArch = 'x64' | 'arm64';

const ARCH_TYPES: Record<DpsArch, { root: string; usr: string; rootVerity: string; usrVerity: string; rootVeritySig: string; usrVeritySig: string }> = {
  x64: {
    root: '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
    usr: '8484680c-9521-48c6-9c11-b0720656f69e',
    rootVerity: '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5',
    usrVerity: '77ff5f63-e7b6-4633-acf4-1565b864c0e6',
    rootVeritySig: '41092b05-9fc8-4523-994f-2def0408b176',
    usrVeritySig: 'e7bb33fb-06cf-4e81-8273-e543b413e2e2',
  },
  arm64: {
    root: 'b921b045-1df0-41c3-af44-4c6f280d3fae',
    usr: 'b0e01050-ee5f-4390-949a-9101b17104e9',
    rootVerity: 'df3300ce-d69f-4c92-978c-9bfb0f38d820',
    usrVerity: '6e11a4e7-fbca-4ded-b9e9-e1a512bb664e',
    rootVeritySig: '6db69de6-29f4-4758-a7a5-962190f00ce3',
    usrVeritySig: 'c23ce4ff-44bd-4b00-b2d4-b41b3419e02a',
  },
};

/** The image-policy name of a swap or verity partition type (partitions containers never use). */
export function verityOrSwapDesignator(type: string, arch: DpsArch = hostDpsArch()): 'swap' | 'root-verity' | 'root-verity-sig' | 'usr-verity' | 'usr-verity-sig' | undefined {
  const t = ARCH_TYPES[arch];
  switch (type) {
    case DPS_TYPE.swap: return 'swap';
    case t.rootVerity: return 'root-verity';
    case t.rootVeritySig: return 'root-verity-sig';
    case t.usrVerity: return 'usr-verity';
    case t.usrVeritySig: return 'usr-verity-sig';
    default: return undefined;
  }
}

export const DPS_TYPE = {
  home: '933ac7e1-2eb4-4f13-b844-0e14e2aef915',
  srv: '3b8f8425-20e0-4f3b-907f-1a25a76f98e8',
  var: '4d21b016-b534-45c2-a9fb-5c16e091fd2d',
  tmp: '7ec6f557-3bc5-4aca-b293-16ef5df639d1',
  esp: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b',
  xbootldr: 'bc13c2ff-59e6-4262-a352-b275fd6f7172',
  swap: '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f',
  linuxGeneric: '0fc63daf-8483-4772-8e79-3d69d8477de4',
} as const;

/** GPT attribute bits defined by the specification. */
export const GPT_FLAG = {
  GROWFS: 1n << 59n,
  READ_ONLY: 1n << 60n,
  NO_AUTO: 1n << 63n,
} as const;

export function rootTypeFor(arch: DpsArch): string {
  return ARCH_TYPES[arch].root;
}

export function usrTypeFor(arch: DpsArch): string {
  return ARCH_TYPES[arch].usr;
}

export function hostDpsArch(): DpsArch {
  if (process.arch === 'x64' || process.arch === 'arm64') return process.arch;
  throw new DiskImageError(`disk images are not supported on ${process.arch}`);
}

/** Where each designator is mounted relative to the root, in mount order. */
export const MOUNT_POINTS: ReadonlyArray<readonly [Designator, string]> = [
  ['root', '/'],
  ['usr', '/usr'],
  ['home', '/home'],
  ['srv', '/srv'],
  ['var', '/var'],
  ['tmp', '/var/tmp'],
  ['xbootldr', '/boot'],
  ['esp', '/efi'],
];

export interface DiscoveredPartition extends Partition {
  designator: Designator;
  readOnly: boolean;
}

export interface Discovery {
  partitions: Partial<Record<Designator, DiscoveredPartition>>;
  /** Partitions present but deliberately not used, with the reason (for --debug and docs). */
  ignored: Array<{ number: number; reason: string }>;
}

/**
 * The var partition is bound to one installation: its UUID must be
 * HMAC-SHA256(key = machine ID, message = var type UUID), truncated to 128 bits and stamped as
 * a v4 UUID (sd_id128_get_machine_app_specific()).
 */
export function expectedVarUuid(machineId: Buffer): string {
  // sd_id128_t is in string byte order (not the GPT's mixed-endian on-disk form).
  // node:crypto is loaded only here: most images have no var partition, and every start pays for imports.
  const { createHmac } = createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
  const mac = createHmac('sha256', machineId).update(Buffer.from(DPS_TYPE.var.replace(/-/g, ''), 'hex')).digest().subarray(0, 16);
  mac[6] = ((mac[6] as number) & 0x0f) | 0x40;
  mac[8] = ((mac[8] as number) & 0x3f) | 0x80;
  const h = mac.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** strverscmp-like order of partition labels: the newest root/usr version wins. */
export function compareVersions(a: string, b: string): number {
  const re = /(\d+)|(\D+)/g;
  const pa = a.match(re) ?? [];
  const pb = b.match(re) ?? [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d/.test(x);
    const ny = /^\d/.test(y);
    if (nx && ny) {
      const d = BigInt(x) - BigInt(y);
      if (d !== 0n) return d < 0n ? -1 : 1;
    } else if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

export interface DiscoverOptions {
  arch?: DpsArch;
  /**
   * Machine ID the var partition must be bound to; undefined = var cannot be verified yet
   * (the caller re-runs `acceptVar` once it knows the image's machine ID).
   */
  machineId?: Buffer;
}

/**
 * Choose the partitions to mount from a table, as the specification and systemd-dissect do:
 * the architecture's root (newest label version wins), usr, home, srv, var (only with a
 * matching UUID), tmp, ESP and XBOOTLDR; partitions flagged no-auto are skipped. A GPT with
 * no root partition but exactly one generic Linux partition uses that as root; an MBR disk
 * uses its single Linux (0x83) partition.
 */
export function discoverPartitions(table: PartitionTable, options: DiscoverOptions = {}): Discovery {
  const arch = options.arch ?? hostDpsArch();
  const types = ARCH_TYPES[arch];
  const found: Partial<Record<Designator, DiscoveredPartition>> = {};
  const ignored: Discovery['ignored'] = [];
  const put = (d: Designator, p: Partition): void => {
    const current = found[d];
    if (current) {
      // Only root and usr are versioned; for everything else the first one wins.
      if ((d !== 'root' && d !== 'usr') || compareVersions(current.label, p.label) >= 0) {
        ignored.push({ number: p.number, reason: `another ${d} partition (${current.number}) takes precedence` });
        return;
      }
      ignored.push({ number: current.number, reason: `${d} partition ${p.number} has a newer version label` });
    }
    found[d] = { ...p, designator: d, readOnly: (p.flags & GPT_FLAG.READ_ONLY) !== 0n };
  };

  if (table.scheme === 'mbr') {
    const linux = table.partitions.filter((p) => p.type === 'mbr:0x83');
    if (linux.length === 1) put('root', linux[0] as Partition);
    else if (linux.length > 1) {
      // systemd only accepts an MBR disk with exactly one Linux partition (preferring a bootable one).
      const bootable = linux.filter((p) => (p.flags & 0x80n) !== 0n);
      if (bootable.length === 1) put('root', bootable[0] as Partition);
      else throw new DiskImageError(`MBR disk has ${linux.length} Linux partitions: cannot tell which one is the root`);
    }
    return { partitions: found, ignored };
  }

  const generic: Partition[] = [];
  for (const p of table.partitions) {
    const noAuto = (p.flags & GPT_FLAG.NO_AUTO) !== 0n;
    let d: Designator | undefined;
    switch (p.type) {
      case types.root: d = 'root'; break;
      case types.usr: d = 'usr'; break;
      case DPS_TYPE.home: d = 'home'; break;
      case DPS_TYPE.srv: d = 'srv'; break;
      case DPS_TYPE.var: d = 'var'; break;
      case DPS_TYPE.tmp: d = 'tmp'; break;
      case DPS_TYPE.esp: d = 'esp'; break;
      case DPS_TYPE.xbootldr: d = 'xbootldr'; break;
      case DPS_TYPE.linuxGeneric:
        if (!noAuto) generic.push(p);
        continue;
      default:
        ignored.push({ number: p.number, reason: `type ${p.type} is not used by containers` });
        continue;
    }
    // The no-auto bit has no meaning for the ESP (its bit 63 belongs to the firmware).
    if (noAuto && d !== 'esp') {
      ignored.push({ number: p.number, reason: `${d} partition is flagged no-auto` });
      continue;
    }
    if (d === 'var' && options.machineId && p.uuid !== expectedVarUuid(options.machineId)) {
      ignored.push({ number: p.number, reason: 'var partition UUID is not bound to this machine ID' });
      continue;
    }
    put(d, p);
  }
  if (!found.root && !found.usr) {
    if (generic.length === 1) put('root', generic[0] as Partition);
    else if (generic.length > 1) {
      throw new DiskImageError(`GPT has no root partition for ${arch} and ${generic.length} generic Linux partitions: cannot tell which one is the root`);
    }
  }
  return { partitions: found, ignored };
}

/** Keep var only when its UUID is bound to `machineId` (called once the root's machine ID is known). */
export function acceptVar(discovery: Discovery, machineId: Buffer | undefined): void {
  const v = discovery.partitions.var;
  if (!v) return;
  if (machineId && machineId.length === 16 && v.uuid === expectedVarUuid(machineId)) return;
  delete discovery.partitions.var;
  discovery.ignored.push({ number: v.number, reason: 'var partition UUID is not bound to the machine ID' });
}
