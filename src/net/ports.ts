// --port=[tcp|udp:]HOST[:CONTAINER] and the nft rules that forward it. Unlike nspawn's, the
// rules also cover connections to the host's loopback (127.0.0.1 and ::1): the output-chain
// DNAT matches every local destination, and loopback-sourced packets leaving towards the
// container are masqueraded (IPv4 additionally needs route_localnet on the host-side link).
// IPv6 ::1 cannot be forwarded by the kernel (see portForwardRules); the host's other IPv6
// addresses can, from the host itself and from elsewhere.
import { UserError } from '../common/errors.js';
import type { MachineRule } from './nft.js';

export interface PortForward {
  protocol: 'tcp' | 'udp';
  hostPort: number;
  containerPort: number;
}

function parsePortNumber(text: string, what: string, spec: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new UserError(`invalid --port '${spec}': bad ${what} port '${text}'`, { hint: 'expected [tcp|udp:]HOST[:CONTAINER] with ports 1-65535' });
  }
  return Number(text);
}

export function parsePortForward(spec: string): PortForward {
  let rest = spec;
  let protocol: PortForward['protocol'] = 'tcp';
  const m = /^(tcp|udp):(.*)$/.exec(spec);
  if (m) {
    protocol = m[1] as PortForward['protocol'];
    rest = m[2] ?? '';
  }
  const parts = rest.split(':');
  if (parts.length > 2 || rest === '') {
    throw new UserError(`invalid --port '${spec}'`, { hint: 'expected [tcp|udp:]HOST[:CONTAINER]' });
  }
  const hostPort = parsePortNumber(parts[0] ?? '', 'host', spec);
  const containerPort = parts[1] === undefined ? hostPort : parsePortNumber(parts[1], 'container', spec);
  return { protocol, hostPort, containerPort };
}

/** Two forwards of the same host port and protocol cannot both be honoured. */
export function assertNoDuplicatePorts(ports: readonly PortForward[]): void {
  const seen = new Set<string>();
  for (const p of ports) {
    const key = `${p.protocol}:${p.hostPort}`;
    if (seen.has(key)) throw new UserError(`--port: host port ${p.protocol}/${p.hostPort} given twice`);
    seen.add(key);
  }
}

export interface PortTargets {
  ipv4: string | null;
  ipv6: string | null;
  /** Host-side link towards the container (ve-NAME or the zone bridge), for the loopback masquerade. */
  hostIf: string;
}

export function portForwardRules(ports: readonly PortForward[], t: PortTargets): MachineRule[] {
  const rules: MachineRule[] = [];
  for (const p of ports) {
    const match = `fib daddr type local ${p.protocol} dport ${p.hostPort}`;
    if (t.ipv4) {
      for (const chain of ['prerouting', 'output'] as const) {
        rules.push({ chain, rule: `meta nfproto ipv4 ${match} dnat ip to ${t.ipv4}:${p.containerPort}` });
      }
    }
    if (t.ipv6) {
      rules.push({ chain: 'prerouting', rule: `meta nfproto ipv6 ${match} dnat ip6 to [${t.ipv6}]:${p.containerPort}` });
      // Not ::1: the reply would be un-NATed to ::1 before routing, and IPv6 routes loopback
      // strictly (only via lo), so it would be dropped and the client would hang. Left alone,
      // ::1 gets an immediate RST and clients of "localhost" fall back to 127.0.0.1 at once.
      rules.push({ chain: 'output', rule: `meta nfproto ipv6 ip6 daddr != ::1 ${match} dnat ip6 to [${t.ipv6}]:${p.containerPort}` });
    }
  }
  if (ports.length > 0) {
    // Loopback clients: the container cannot answer 127.0.0.1/::1, so give them the host-side address.
    if (t.ipv4) rules.push({ chain: 'postrouting', rule: `oifname "${t.hostIf}" ip saddr 127.0.0.0/8 masquerade` });
  }
  return rules;
}
