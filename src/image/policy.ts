// Image dissection policies (systemd.image-policy(7)): which partitions of a disk image may be
// used, must exist or must be absent, with which protection and file system. A policy is
// "DESIGNATOR=FLAG+FLAG:…", an empty designator ("=FLAGS") setting the default for partitions
// not listed (without one: "ignore"), or one of "*" (everything open), "-" (ignore everything)
// and "~" (everything absent).
//
// mctl has neither dm-verity nor LUKS (the development VM's kernel has no device-mapper), so
// every partition it can use is "unprotected": a policy that allows a partition only with
// verity, a signature or encryption refuses it with a line saying so. Swap and verity
// partitions are never used by containers; a policy can still demand they be absent.
import { DiskImageError } from './errors.js';
import { GPT_FLAG, verityOrSwapDesignator, type DpsArch } from './dps.js';
import type { DissectedImage, FsType } from './dissect.js';

export const POLICY_DESIGNATORS = [
  'root', 'usr', 'home', 'srv', 'esp', 'xbootldr', 'swap',
  'root-verity', 'root-verity-sig', 'usr-verity', 'usr-verity-sig', 'tmp', 'var',
] as const;
export type PolicyDesignator = (typeof POLICY_DESIGNATORS)[number];

const USE_FLAGS = ['unprotected', 'verity', 'signed', 'encrypted', 'unused', 'absent'] as const;
type UseFlag = (typeof USE_FLAGS)[number];
const FS_FLAGS = ['btrfs', 'erofs', 'ext4', 'f2fs', 'squashfs', 'vfat', 'xfs'] as const;

export interface PartitionPolicy {
  use: ReadonlySet<UseFlag>;
  /** read-only-on / read-only-off: the GPT read-only flag must be set / clear. */
  readOnly?: boolean;
  /** growfs-on / growfs-off: the GPT growfs flag must be set / clear. */
  growfs?: boolean;
  /** File systems allowed (none listed: any). */
  fstypes?: ReadonlySet<string>;
}

export interface ImagePolicy {
  text: string;
  partitions: ReadonlyMap<PolicyDesignator, PartitionPolicy>;
  defaultPolicy: PartitionPolicy;
}

const OPEN: ReadonlySet<UseFlag> = new Set(USE_FLAGS);
const IGNORE: ReadonlySet<UseFlag> = new Set<UseFlag>(['unused', 'absent']);

function invalid(text: string, why: string): DiskImageError {
  return new DiskImageError(`invalid image policy '${text}': ${why}`);
}

function parseFlags(text: string, designator: string, flags: string): PartitionPolicy {
  const use = new Set<UseFlag>();
  const fstypes = new Set<string>();
  const policy: { readOnly?: boolean; growfs?: boolean } = {};
  const seen = new Set<string>();
  for (const flag of flags.split('+').map((f) => f.trim())) {
    if (seen.has(flag)) throw invalid(text, `flag '${flag}' given twice for ${designator || 'the default'}`);
    seen.add(flag);
    if ((USE_FLAGS as readonly string[]).includes(flag)) use.add(flag as UseFlag);
    else if (flag === 'open') for (const f of OPEN) use.add(f);
    else if (flag === 'ignore') for (const f of IGNORE) use.add(f);
    else if ((FS_FLAGS as readonly string[]).includes(flag)) fstypes.add(flag);
    else if (flag === 'read-only-on' || flag === 'read-only-off') {
      if (policy.readOnly !== undefined) throw invalid(text, `read-only-on and read-only-off together for ${designator || 'the default'}`);
      policy.readOnly = flag === 'read-only-on';
    } else if (flag === 'growfs-on' || flag === 'growfs-off') {
      if (policy.growfs !== undefined) throw invalid(text, `growfs-on and growfs-off together for ${designator || 'the default'}`);
      policy.growfs = flag === 'growfs-on';
    } else throw invalid(text, `unknown flag '${flag}'${flag === '' ? ` for ${designator || 'the default'}` : ''}`);
  }
  // systemd reads an empty flag list as "no use flag given"; mctl asks for one to be explicit.
  if (use.size === 0) throw invalid(text, `no use flag (unprotected, verity, signed, encrypted, unused, absent, open, ignore) for ${designator || 'the default'}`);
  return { use, ...policy, ...(fstypes.size > 0 ? { fstypes } : {}) };
}

/** Parse a policy string; one-line DiskImageError for anything malformed. */
export function parseImagePolicy(text: string): ImagePolicy {
  // An empty policy is "-", as in systemd.
  const special: Record<string, ReadonlySet<UseFlag>> = { '': IGNORE, '*': OPEN, '-': IGNORE, '~': new Set<UseFlag>(['absent']) };
  const whole = special[text.trim()];
  if (whole) return { text, partitions: new Map(), defaultPolicy: { use: whole } };
  const partitions = new Map<PolicyDesignator, PartitionPolicy>();
  let defaultPolicy: PartitionPolicy | undefined;
  for (const rule of text.split(':')) {
    const eq = rule.indexOf('=');
    if (eq < 0) throw invalid(text, `rule '${rule}' has no '='`);
    const name = rule.slice(0, eq).trim();
    const flags = parseFlags(text, name, rule.slice(eq + 1).trim());
    if (name === '') {
      if (defaultPolicy) throw invalid(text, 'the default (=FLAGS) is given twice');
      defaultPolicy = flags;
      continue;
    }
    if (!(POLICY_DESIGNATORS as readonly string[]).includes(name)) throw invalid(text, `unknown partition '${name}' (known: ${POLICY_DESIGNATORS.join(', ')})`);
    if (partitions.has(name as PolicyDesignator)) throw invalid(text, `partition '${name}' is given twice`);
    partitions.set(name as PolicyDesignator, flags);
  }
  return { text, partitions, defaultPolicy: defaultPolicy ?? { use: IGNORE } };
}

export function policyFor(policy: ImagePolicy, d: PolicyDesignator): PartitionPolicy {
  return policy.partitions.get(d) ?? policy.defaultPolicy;
}

function wanted(p: PartitionPolicy): string {
  return [...p.use].filter((f) => f !== 'unused' && f !== 'absent').join('+') || 'unused or absent';
}

/**
 * Check a dissected image against a policy. Returns the image with the partitions the policy
 * marks unused left out; throws a one-line DiskImageError when the image does not comply.
 */
export function applyImagePolicy(image: DissectedImage, policy: ImagePolicy, arch?: DpsArch): DissectedImage {
  const where = `${image.path}: image policy '${policy.text}'`;
  const kept: DissectedImage['partitions'] = [];
  const present = new Set<PolicyDesignator>();
  for (const p of image.partitions) {
    const d = p.designator as PolicyDesignator;
    present.add(d);
    const rule = policyFor(policy, d);
    const which = p.number === 0 ? 'file system' : `${d} partition ${p.number}`;
    if (!rule.use.has('unprotected')) {
      if (rule.use.has('unused')) continue;
      const needs = wanted(rule);
      throw new DiskImageError(
        rule.use.has('absent') && needs === 'unused or absent'
          ? `${where} says the ${d} partition must be absent, and the image has one (${which})`
          : `${where} allows the ${d} partition only as ${needs}; ${which} is unprotected (mctl has no dm-verity or LUKS)`,
      );
    }
    if (rule.fstypes && !rule.fstypes.has(p.fstype as FsType)) {
      throw new DiskImageError(`${where} allows ${[...rule.fstypes].join(', ')} for the ${d} partition; ${which} is ${p.fstype}`);
    }
    const gptFlags = image.layout === 'gpt' ? image.table?.partitions.find((t) => t.number === p.number)?.flags : undefined;
    if (gptFlags !== undefined) {
      if (rule.readOnly !== undefined && ((gptFlags & GPT_FLAG.READ_ONLY) !== 0n) !== rule.readOnly) {
        throw new DiskImageError(`${where} needs the read-only flag ${rule.readOnly ? 'set' : 'clear'} on ${which}`);
      }
      if (rule.growfs !== undefined && ((gptFlags & GPT_FLAG.GROWFS) !== 0n) !== rule.growfs) {
        throw new DiskImageError(`${where} needs the growfs flag ${rule.growfs ? 'set' : 'clear'} on ${which}`);
      }
    }
    kept.push(p);
  }
  // Partitions containers never use (swap, verity): only "must be absent" can be violated.
  for (const t of image.layout === 'gpt' ? (image.table?.partitions ?? []) : []) {
    const d = verityOrSwapDesignator(t.type, arch);
    if (!d) continue;
    present.add(d);
    const rule = policyFor(policy, d);
    if (!rule.use.has('unused') && !rule.use.has('unprotected')) {
      throw new DiskImageError(`${where} does not allow the ${d} partition ${t.number} (mctl never uses ${d} partitions)`);
    }
  }
  for (const d of POLICY_DESIGNATORS) {
    if (present.has(d)) continue;
    const rule = policyFor(policy, d);
    if (!rule.use.has('absent')) throw new DiskImageError(`${where} requires a ${d} partition (as ${wanted(rule)}); the image has none`);
  }
  if (!kept.some((p) => p.designator === 'root' || (image.usrOnly && p.designator === 'usr'))) {
    throw new DiskImageError(`${where} leaves no root (or /usr) partition to boot from`);
  }
  return { ...image, partitions: kept };
}
