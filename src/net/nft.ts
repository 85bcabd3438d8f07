// nftables, only ever inside mctl's own table (`table inet mctl` by default). We never list,
// flush or edit any other table, so Docker's, firewalld's or the admin's rules are untouched.
// Every rule carries the comment "mctl:NAME" of the machine it belongs to, and is removed
// together with that machine's other rules in one nft transaction (atomic). The commands go to
// libnftables in-process (src/sys/nftables.ts), not to the nft program.
import { nftRunAsync, NftError, NFT_OUTPUT } from '../sys/nftables.js';

export type NatChain = 'prerouting' | 'output' | 'postrouting';

export interface MachineRule {
  chain: NatChain;
  /** The rule body in nft syntax, without "add rule ..." and without a comment. */
  rule: string;
}

const CHAINS: Record<NatChain, string> = {
  // One above the standard nat priorities, like nspawn's io.systemd.nat table.
  prerouting: 'type nat hook prerouting priority -99; policy accept;',
  output: 'type nat hook output priority -99; policy accept;',
  postrouting: 'type nat hook postrouting priority 101; policy accept;',
};

export function machineTag(machine: string): string {
  return `mctl:${machine}`;
}

export function isValidTableName(name: string): boolean {
  return /^[A-Za-z][A-Za-z0-9_-]{0,30}$/.test(name);
}

async function nftScript(script: string): Promise<void> {
  await nftRunAsync(script);
}

function ensureTableScript(table: string): string[] {
  const lines = [`add table inet ${table}`];
  for (const [chain, def] of Object.entries(CHAINS)) lines.push(`add chain inet ${table} ${chain} { ${def} }`);
  return lines;
}

/** The `nft -f` input adding a machine's rules (and the table and chains if needed), or null for none. */
export function machineRulesScript(table: string, machine: string, rules: readonly MachineRule[]): string | null {
  if (rules.length === 0) return null;
  const tag = machineTag(machine);
  const lines = ensureTableScript(table);
  for (const r of rules) lines.push(`add rule inet ${table} ${r.chain} ${r.rule} comment "${tag}"`);
  return lines.join('\n') + '\n';
}

interface NftJsonRule {
  rule?: { family: string; table: string; chain: string; handle: number; comment?: string };
}

interface RuleRef {
  chain: string;
  handle: number;
  comment: string | undefined;
}

/** Rules of our table, with handles; null when the table does not exist. */
export async function listTableRules(table: string): Promise<RuleRef[] | null> {
  let out: string;
  try {
    out = await nftRunAsync(`list table inet ${table}`, NFT_OUTPUT.JSON | NFT_OUTPUT.HANDLE);
  } catch (err) {
    if (err instanceof NftError && /No such file or directory/.test(err.detail)) return null;
    throw err;
  }
  const items = (JSON.parse(out) as { nftables: NftJsonRule[] }).nftables;
  return items.flatMap((i) => (i.rule ? [{ chain: i.rule.chain, handle: i.rule.handle, comment: i.rule.comment }] : []));
}

/**
 * Remove a machine's rules and, when `dropTable` and nothing but its rules is in the table, the
 * whole table, so `nft list ruleset` shows nothing of ours: one listing and one transaction.
 * Returns what was done.
 */
export async function removeMachineRules(table: string, machine: string, dropTable: boolean): Promise<'none' | 'rules' | 'table'> {
  const rules = await listTableRules(table);
  if (!rules) return 'none';
  const tag = machineTag(machine);
  const mine = rules.filter((r) => r.comment === tag);
  if (dropTable && mine.length === rules.length) {
    await nftScript(`delete table inet ${table}\n`);
    return 'table';
  }
  if (mine.length === 0) return 'none';
  await nftScript(mine.map((r) => `delete rule inet ${table} ${r.chain} handle ${r.handle}`).join('\n') + '\n');
  return 'rules';
}
