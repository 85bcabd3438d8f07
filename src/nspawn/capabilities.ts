// Capability names and numbers (linux/capability.h) and systemd-nspawn's default bounding set.
// Pure data + lookups; used by the option layer (--capability/--drop-capability) and the runtime.

export const CAPABILITY_NAMES: readonly string[] = [
  'cap_chown', 'cap_dac_override', 'cap_dac_read_search', 'cap_fowner', 'cap_fsetid', 'cap_kill',
  'cap_setgid', 'cap_setuid', 'cap_setpcap', 'cap_linux_immutable', 'cap_net_bind_service',
  'cap_net_broadcast', 'cap_net_admin', 'cap_net_raw', 'cap_ipc_lock', 'cap_ipc_owner',
  'cap_sys_module', 'cap_sys_rawio', 'cap_sys_chroot', 'cap_sys_ptrace', 'cap_sys_pacct',
  'cap_sys_admin', 'cap_sys_boot', 'cap_sys_nice', 'cap_sys_resource', 'cap_sys_time',
  'cap_sys_tty_config', 'cap_mknod', 'cap_lease', 'cap_audit_write', 'cap_audit_control',
  'cap_setfcap', 'cap_mac_override', 'cap_mac_admin', 'cap_syslog', 'cap_wake_alarm',
  'cap_block_suspend', 'cap_audit_read', 'cap_perfmon', 'cap_bpf', 'cap_checkpoint_restore',
];

/** Highest capability number this table knows (CAP_LAST_CAP of kernel 5.9+). */
export const CAP_LAST = CAPABILITY_NAMES.length - 1;

/** Number of a capability given as "CAP_SYS_ADMIN", "cap_sys_admin" or "sys_admin"; undefined if unknown. */
export function capabilityNumber(name: string): number | undefined {
  let n = name.trim().toLowerCase();
  if (!n.startsWith('cap_')) n = `cap_${n}`;
  const i = CAPABILITY_NAMES.indexOf(n);
  return i < 0 ? undefined : i;
}

export function capabilityName(nr: number): string {
  return (CAPABILITY_NAMES[nr] ?? `cap_${nr}`).toUpperCase();
}

/** systemd-nspawn 252's default bounding set (nspawn.c arg_caps_retain default). */
export const NSPAWN_DEFAULT_CAPABILITIES: readonly number[] = [
  'cap_audit_control', 'cap_audit_write', 'cap_chown', 'cap_dac_override', 'cap_dac_read_search',
  'cap_fowner', 'cap_fsetid', 'cap_ipc_owner', 'cap_kill', 'cap_lease', 'cap_linux_immutable',
  'cap_mknod', 'cap_net_bind_service', 'cap_net_broadcast', 'cap_net_raw', 'cap_setfcap',
  'cap_setgid', 'cap_setpcap', 'cap_setuid', 'cap_sys_admin', 'cap_sys_boot', 'cap_sys_chroot',
  'cap_sys_nice', 'cap_sys_ptrace', 'cap_sys_resource', 'cap_sys_tty_config',
].map((n) => CAPABILITY_NAMES.indexOf(n));

/** nspawn adds CAP_NET_ADMIN when the container has its own network namespace. */
export function defaultBoundingSet(privateNetwork: boolean): number[] {
  const set = [...NSPAWN_DEFAULT_CAPABILITIES];
  if (privateNetwork) set.push(CAPABILITY_NAMES.indexOf('cap_net_admin'));
  return set.sort((a, b) => a - b);
}

/** Bounding set as the 64-bit mask /proc/PID/status prints as CapBnd. */
export function capabilityMask(caps: readonly number[]): bigint {
  let mask = 0n;
  for (const c of caps) mask |= 1n << BigInt(c);
  return mask;
}
