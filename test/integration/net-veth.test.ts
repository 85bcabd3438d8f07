// veth networking against real namespaces: names and MACs, automatic addresses, NAT to an
// "outside" netns made here, port forwards from that netns and from the host's 127.0.0.1 and
// ::1 (IPv4 and IPv6, TCP and UDP), and nothing left behind after teardown or collect().
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { setupMachineNetwork, collect, getLink, listAddrs, generateMac, MAC_KEYS, readMachineNetState, type NetConfig } from '../../src/net/index.js';
import { listTableRules } from '../../src/net/nft.js';
import { makeNetns, must, run, startServer, query, type Netns } from '../helpers/netns.js';

const id = randomBytes(2).toString('hex');
const r = parseInt(id.slice(0, 2), 16);
const stateDir = mkdtempSync('/tmp/mctl-net-');
const cfg: NetConfig = {
  stateDir,
  table: `tnet${id}`,
  pool4: { base: ((10 << 24) | (250 << 16) | (r << 8)) >>> 0, prefix: 24 },
  pool6: { base: (0xfd6d6374n << 96n) | (BigInt(0x7000 + r) << 80n) },
};
const outIf = `tno${id}`;
const outV4 = `198.18.${r}.`;
const outV6 = `fdfe:${r.toString(16)}::`;
const procs: ChildProcess[] = [];
const spaces: Netns[] = [];
let outside: Netns;

before(async () => {
  outside = await makeNetns();
  spaces.push(outside);
  must(['ip', 'link', 'add', outIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(outside.pid)]);
  must(['ip', 'addr', 'add', `${outV4}1/24`, 'dev', outIf]);
  must(['ip', 'addr', 'add', `${outV6}1/64`, 'dev', outIf, 'nodad']);
  must(['ip', 'link', 'set', outIf, 'up']);
  must(['nsenter', `--net=${outside.path}`, 'ip', '-b', '-'], `link set lo up\nlink set eth0 up\naddr add ${outV4}2/24 dev eth0\naddr add ${outV6}2/64 dev eth0 nodad\n`);
  // Deliberately no route back to the container pool: replies only arrive if we masquerade.
});

after(async () => {
  for (const p of procs) p.kill('SIGKILL');
  run(['ip', 'link', 'del', outIf]);
  for (const s of spaces) s.kill();
  for (const m of ['m1', 'm2', 'm3', 'm4', 'm5']) await collect(`t-net-${id}-${m}`, cfg).catch(() => undefined);
  run(['nft', 'delete', 'table', 'inet', cfg.table]);
  run(['nft', 'delete', 'table', 'ip', `tfor${id}`]);
  rmSync(stateDir, { recursive: true, force: true });
});

function request(machine: string, pid: number, ports: string[] = []) {
  return {
    machine,
    leaderPid: pid,
    veth: true,
    vethExtra: [],
    bridge: null,
    zone: null,
    interfaces: [],
    macvlan: [],
    ipvlan: [],
    ports: ports.map((p) => {
      const [proto, h, c] = p.split(':');
      return { protocol: proto as 'tcp' | 'udp', hostPort: Number(h), containerPort: Number(c) };
    }),
    auto: true,
  };
}

test('veth: names, MACs, addresses, NAT to the outside, port forwards from everywhere, clean teardown', async () => {
  const name = `t-net-${id}-m1`;
  // Someone else's table (think Docker's): must come out of all this byte for byte unchanged.
  const foreign = `tfor${id}`;
  must(['nft', '-f', '-'], `add table ip ${foreign}\nadd chain ip ${foreign} fw { type filter hook forward priority 0; policy accept; }\nadd rule ip ${foreign} fw counter comment "not mctl's"\n`);
  const foreignBefore = must(['nft', 'list', 'table', 'ip', foreign]).replace(/packets \d+ bytes \d+/g, '');
  const ct = await makeNetns();
  spaces.push(ct);
  const hp = 20000 + r * 10;
  const t0 = performance.now();
  const net = await setupMachineNetwork(request(name, ct.pid, [`tcp:${hp}:8080`, `udp:${hp}:8080`]), cfg);
  const setupMs = performance.now() - t0;
  try {
    const hostIf = `ve-${name}`.length > 15 ? net.state.hostIf! : `ve-${name}`;
    assert.equal(hostIf.length, 15);
    const link = await getLink(hostIf);
    assert.ok(link, 'host side exists');
    assert.equal(link.address, generateMac(name, MAC_KEYS.host));
    assert.ok(link.altnames?.includes(`ve-${name}`), 'full name kept as altname');
    const inside = await getLink('host0', { pid: ct.pid });
    assert.equal(inside?.address, generateMac(name, MAC_KEYS.container));
    const addrs = (await listAddrs({ pid: ct.pid })).find((a) => a.ifname === 'host0')?.addr_info.map((a) => a.local) ?? [];
    assert.ok(addrs.includes(net.state.ipv4!.address) && addrs.includes(net.state.ipv6!.address), addrs.join(','));

    // Container -> host gateway and -> outside (masqueraded to the host's outside address).
    const srvOut = await startServer(outside, 7000, 'outside');
    procs.push(srvOut);
    assert.equal(query(ct, 'tcp', `${outV4}2`, 7000), `outside ${outV4}1`);
    assert.equal(query(ct, 'tcp', `${outV6}2`, 7000), `outside ${outV6}1`);

    const srv = await startServer(ct, 8080, 'ct');
    procs.push(srv);
    // From another netns, through the host's addresses.
    assert.equal(query(outside, 'tcp', `${outV4}1`, hp), `ct ${outV4}2`);
    assert.equal(query(outside, 'tcp', `${outV6}1`, hp), `ct ${outV6}2`);
    assert.equal(query(outside, 'udp', `${outV4}1`, hp), `ct ${outV4}2`);
    // From the host's loopback: stock nspawn fails exactly here.
    assert.equal(query(null, 'tcp', '127.0.0.1', hp), `ct ${net.state.ipv4!.gateway}`);
    // ::1 cannot be DNATed (IPv6 routes loopback replies only via lo): it must fail at once so
    // "localhost" clients fall back to 127.0.0.1; the host's own IPv6 addresses do forward.
    assert.equal(query(null, 'tcp', '::1', hp), 'ERR ECONNREFUSED');
    assert.equal(query(null, 'tcp', `${outV6}1`, hp), `ct ${outV6}1`);
    const viaCurl = must(['curl', '-sS', '--max-time', '3', '-w', ' %{time_total}', `telnet://localhost:${hp}`]);
    assert.match(viaCurl, /^ct 127\.0\.0\.1|^ct /);
    assert.equal(query(null, 'udp', '127.0.0.1', hp), `ct ${net.state.ipv4!.gateway}`);
    assert.match(query(null, 'tcp', 'localhost', hp), /^ct /);
    assert.ok(setupMs < 1000, `setup took ${setupMs.toFixed(1)} ms`);
  } finally {
    await net.teardown();
  }
  assert.equal(await getLink(net.state.hostIf!), null, 'host veth removed');
  assert.equal(await listTableRules(cfg.table), null, 'our table is gone');
  assert.equal(readMachineNetState(name, cfg), null, 'state removed');
  assert.doesNotMatch(must(['ip', '-br', 'addr']), new RegExp(net.state.ipv4!.gateway.replace(/\./g, '\\.')));
  assert.equal(must(['nft', 'list', 'table', 'ip', foreign]).replace(/packets \d+ bytes \d+/g, ''), foreignBefore, 'foreign table untouched');
  must(['nft', 'delete', 'table', 'ip', foreign]);
});

test('a killed launcher leaves state that collect() removes; a running one is left alone', async () => {
  const name = `t-net-${id}-m2`;
  const ct = await makeNetns();
  spaces.push(ct);
  const hp = 20001 + r * 10;
  // The "launcher" is a child process holding the machine lock; SIGKILL it like a crash.
  const script = `
    const { setupMachineNetwork } = await import(${JSON.stringify(new URL('../../src/net/index.ts', import.meta.url).href)});
    const cfg = JSON.parse(process.argv[1], (k, v) => (k === 'base' && typeof v === 'string' ? BigInt(v) : v));
    const req = JSON.parse(process.argv[2]);
    await setupMachineNetwork(req, cfg);
    process.stdout.write('up\\n');
    setInterval(() => {}, 1000);`;
  const cfgJson = JSON.stringify(cfg, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
  const { spawn } = await import('node:child_process');
  const launcher = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, cfgJson, JSON.stringify(request(name, ct.pid, [`tcp:${hp}:8080`]))], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  procs.push(launcher);
  await new Promise<void>((resolve, reject) => {
    launcher.stdout?.once('data', () => resolve());
    launcher.once('exit', (c) => reject(new Error(`launcher exited ${c}`)));
  });
  assert.equal(await collect(name, cfg), 'running');
  const rules = (await listTableRules(cfg.table)) ?? [];
  assert.ok(rules.some((x) => x.comment === `mctl:${name}`));
  launcher.kill('SIGKILL');
  await new Promise((res) => launcher.once('exit', res));
  ct.kill(); // the container dies with its launcher
  await new Promise((res) => setTimeout(res, 100));
  assert.equal(await collect(name, cfg), 'collected');
  assert.equal(await listTableRules(cfg.table), null);
  assert.equal(readMachineNetState(name, cfg), null);
  assert.equal(await collect(name, cfg), 'absent');
});

test('netlink failures: one clear line naming the step, nothing of ours left, nobody else\'s link touched', async () => {
  // The host-side name is taken by someone else's link: refused before anything is made (a
  // collector must never delete a link of that name on our behalf) and, should the name be
  // taken between that check and the helper's request, EEXIST there, with nothing undone of theirs.
  const name = `t-net-${id}-m3`;
  const ct = await makeNetns();
  spaces.push(ct);
  const taken = `ve-${name}`.length > 15 ? null : `ve-${name}`;
  assert.equal(taken, null, 'the machine name is long enough to be shortened');
  const { hostVethName } = await import('../../src/net/index.js');
  const hostIf = hostVethName(name, 'veth').name;
  must(['ip', 'link', 'add', hostIf, 'type', 'bridge']);
  try {
    await assert.rejects(setupMachineNetwork(request(name, ct.pid, [`tcp:${20002 + r * 10}:80`]), cfg), (err: Error) => {
      assert.equal(err.message, `network setup for '${name}' failed: network interface '${hostIf}' already exists`);
      return true;
    });
    const { applyLinkPlan } = await import('../../src/net/links.js');
    const plan = { main: { name: hostIf, mac: '02:00:00:00:00:01', peer: 'host0', peerMac: '02:00:00:00:00:02' }, extras: [], createBridge: null, bridge: null, gateway: null, container: null, interfaces: [], macvlan: [], ipvlan: [], sysctls: [], nft: null, watcher: null };
    await assert.rejects(applyLinkPlan(name, ct.pid, plan), (err: Error) => {
      assert.match(err.message, new RegExp(`^network setup for '${name}' failed: create veth\\(${hostIf}\\): EEXIST`));
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
    assert.ok(await getLink(hostIf), 'the bridge that had the name is still there');
    assert.equal(readMachineNetState(name, cfg), null, 'no state');
    assert.equal(await listTableRules(cfg.table), null, 'no rules, no table');
    assert.equal(must(['nsenter', `--net=${ct.path}`, 'ip', '-br', 'link']).trim().split('\n').length, 1, 'nothing but lo inside');
  } finally {
    run(['ip', 'link', 'del', hostIf]);
  }

  // The container's process is gone before its link could be made: ESRCH, and again nothing left.
  const gone = `t-net-${id}-m4`;
  const dead = await makeNetns();
  dead.kill();
  await new Promise((res) => dead.proc.once('exit', res));
  await assert.rejects(setupMachineNetwork(request(gone, dead.pid, [`tcp:${20003 + r * 10}:80`]), cfg), /^UserError: network setup for .* failed: create veth\(.*\): ESRCH|network setup for .* failed: create veth\(.*\): ESRCH/);
  assert.equal(await getLink(hostVethName(gone, 'veth').name), null);
  assert.equal(readMachineNetState(gone, cfg), null);
  assert.equal(await listTableRules(cfg.table), null);
});

test('an nft failure (libnftables in-process) is one line, and the links made meanwhile are removed', async () => {
  // A chain of ours that someone redefined as a filter chain: our nat chain definition clashes.
  must(['nft', '-f', '-'], `add table inet ${cfg.table}\nadd chain inet ${cfg.table} postrouting { type filter hook postrouting priority 0; policy accept; }\n`);
  const name = `t-net-${id}-m5`;
  const ct = await makeNetns();
  spaces.push(ct);
  try {
    await assert.rejects(setupMachineNetwork(request(name, ct.pid), cfg), (err: Error) => {
      assert.match(err.message, new RegExp(`^network setup for '${name}' failed: nft: Could not process rule: .* \\(in: add `));
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
    const { hostVethName } = await import('../../src/net/index.js');
    assert.equal(await getLink(hostVethName(name, 'veth').name), null, 'the veth made alongside is gone');
    assert.equal(readMachineNetState(name, cfg), null, 'no state');
    assert.equal(must(['nsenter', `--net=${ct.path}`, 'ip', '-br', 'link']).trim().split('\n').length, 1, 'nothing but lo inside');
  } finally {
    run(['nft', 'delete', 'table', 'inet', cfg.table]);
  }
});
