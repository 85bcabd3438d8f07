// The launcher end to end with networking: mctl-nspawn --network-veth / --network-zone / --port
// on the real Debian tree, a server inside the container (the host's node, bound in read-only),
// an "outside" netns made here, and nothing of ours left after stop, kill -9, or 20 cycles.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { getLink, generateMac, MAC_KEYS, readMachineNetState, collect, netConfig, hostVethName } from '../../src/net/index.js';
import { listTableRules } from '../../src/net/nft.js';
import { debianTree } from '../helpers/images.js';
import { makeNetns, must, run, startServer, query, type Netns } from '../helpers/netns.js';

const nspawn = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const id = randomBytes(2).toString('hex');
const r = parseInt(id.slice(0, 2), 16);
const stateDir = mkdtempSync('/tmp/mctl-net-');
const env = {
  ...process.env,
  MCTL_NET_STATE_DIR: stateDir,
  MCTL_NET_TABLE: `tnl${id}`,
  MCTL_NET_POOL4: `10.248.${r}.0/24`,
  MCTL_NET_POOL6: `fd6d:6374:${(0x5000 + r).toString(16)}::/48`,
};
const cfg = netConfig(env);
const outIf = `tlo${id}`;
const outV4 = `198.19.${r}.`;
const outV6 = `fdfd:${r.toString(16)}::`;
const SERVER = `const net=require('net'),dgram=require('dgram');const [port,tag]=process.argv.slice(1);
net.createServer((s)=>s.end(tag+' '+s.remoteAddress.replace(/^::ffff:/,'')+'\\n')).listen(+port,'::',()=>process.stdout.write('ready\\n'));
const u=dgram.createSocket({type:'udp6'});u.on('message',(m,r)=>u.send(tag+' '+r.address.replace(/^::ffff:/,'')+'\\n',r.port,r.address));u.bind(+port,'::');`;
let outside: Netns;
const procs: ChildProcess[] = [];

before(async () => {
  debianTree();
  outside = await makeNetns();
  must(['ip', 'link', 'add', outIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(outside.pid)]);
  must(['ip', 'addr', 'add', `${outV4}1/24`, 'dev', outIf]);
  must(['ip', 'addr', 'add', `${outV6}1/64`, 'dev', outIf, 'nodad']);
  must(['ip', 'link', 'set', outIf, 'up']);
  must(['nsenter', `--net=${outside.path}`, 'ip', '-b', '-'], `link set lo up\nlink set eth0 up\naddr add ${outV4}2/24 dev eth0\naddr add ${outV6}2/64 dev eth0 nodad\n`);
});

after(async () => {
  for (const p of procs) p.kill('SIGKILL');
  await new Promise((res) => setTimeout(res, 300));
  run(['ip', 'link', 'del', outIf]);
  outside.kill();
  if (existsSync(`${stateDir}/machines`)) for (const f of readdirSync(`${stateDir}/machines`)) if (f.endsWith('.json')) await collect(f.slice(0, -5), cfg).catch(() => undefined);
  run(['nft', 'delete', 'table', 'inet', cfg.table]);
  rmSync(stateDir, { recursive: true, force: true });
});

/** Start a container running the echo server on 8080; resolves once it listens. */
async function startContainer(name: string, netArgs: string[]): Promise<ChildProcess> {
  const args = ['-q', '--register=no', '--read-only', '--console=pipe', '-D', debianTree(), '-M', name, ...netArgs,
    // The host's node, through a bind onto the tree's existing /mnt (the cached tree is shared:
    // a missing bind target would be created in it).
    '--bind-ro=/usr/bin:/mnt', '/mnt/node', '-e', SERVER, '8080', name];
  const p = spawn(nspawn, args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(p);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${name} did not start`)), 20_000);
    p.stdout?.on('data', (b: Buffer) => {
      if (String(b).includes('ready')) {
        clearTimeout(t);
        resolve();
      }
    });
    p.once('exit', (c) => reject(new Error(`${name} exited with ${c}`)));
  });
  return p;
}

/**
 * The container's PID 1 as the host sees it: the child of the launcher (now its supervisor, same
 * PID) that lives in a PID namespace of its own (the watcher is a child too). The state file
 * cannot say: the launcher hands the start over to the helper before the container exists.
 */
function leaderOf(launcher: ChildProcess): number {
  const own = readlinkSync('/proc/self/ns/pid');
  const pid = launcher.pid ?? 0;
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  const leader = children.find((c) => {
    try {
      return readlinkSync(`/proc/${c}/ns/pid`) !== own;
    } catch {
      return false;
    }
  });
  assert.ok(leader, `no container process under ${pid}`);
  return leader;
}

async function leftovers(name: string): Promise<string[]> {
  const found: string[] = [];
  const s = readMachineNetState(name, cfg);
  if (s) found.push('state file');
  if (existsSync(`${stateDir}/machines/${name}.lock`)) found.push('lock file');
  if (await listTableRules(cfg.table)) found.push('nft table');
  const links = must(['ip', '-br', 'link']);
  if (links.includes(`-t-netl-${id}`) || links.includes(`-t-netl-`)) found.push('link');
  return found;
}

async function waitClean(name: string): Promise<string[]> {
  let left: string[] = [];
  for (let i = 0; i < 100; i++) {
    left = await leftovers(name);
    if (left.length === 0) return left;
    await new Promise((res) => setTimeout(res, 100));
  }
  return left;
}

const exited = (p: ChildProcess): Promise<unknown> => (p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((res) => p.once('exit', res)));

test('--network-veth + --port: MACs, NAT to the outside, forwards from another netns, 127.0.0.1 and [::1]; all gone after stop', async () => {
  const name = `t-netl-${id}-a`;
  const hp = 21000 + r * 10;
  const p = await startContainer(name, ['--network-veth', `-p`, `tcp:${hp}:8080`, `--port=udp:${hp}:8080`]);
  const s = readMachineNetState(name, cfg);
  assert.ok(s?.hostIf && s.ipv4 && s.ipv6);
  const leaderPid = leaderOf(p);
  const leader = { pid: leaderPid, path: `/proc/${leaderPid}/ns/net`, proc: p, kill: () => undefined };
  assert.equal((await getLink(s.hostIf))?.address, generateMac(name, MAC_KEYS.host));
  assert.equal((await getLink('host0', { pid: leaderPid }))?.address, generateMac(name, MAC_KEYS.container));
  const srvOut = await startServer(outside, 7001, 'outside');
  procs.push(srvOut);
  assert.equal(query(leader, 'tcp', `${outV4}2`, 7001), `outside ${outV4}1`, 'container reaches the outside via NAT (IPv4)');
  assert.equal(query(leader, 'tcp', `${outV6}2`, 7001), `outside ${outV6}1`, 'container reaches the outside via NAT (IPv6)');
  assert.equal(query(outside, 'tcp', `${outV4}1`, hp), `${name} ${outV4}2`);
  assert.equal(query(outside, 'tcp', `${outV6}1`, hp), `${name} ${outV6}2`);
  assert.equal(query(outside, 'udp', `${outV4}1`, hp), `${name} ${outV4}2`);
  assert.equal(query(null, 'tcp', '127.0.0.1', hp), `${name} ${s.ipv4.gateway}`);
  assert.equal(query(null, 'udp', '127.0.0.1', hp), `${name} ${s.ipv4.gateway}`);
  // ::1 cannot be DNATed: the supervisor relays TCP from [::1]:PORT (it connects from the host side's address)
  assert.equal(query(null, 'tcp', '::1', hp), `${name} ${s.ipv6.gateway}`);
  assert.equal(query(null, 'tcp', '::1', hp), `${name} ${s.ipv6.gateway}`, 'and again: the listener stays');
  assert.equal(query(null, 'tcp', `${outV6}1`, hp), `${name} ${outV6}1`, 'the host reaches the forward on its own IPv6 address');
  p.kill('SIGTERM');
  await exited(p);
  assert.deepEqual(await waitClean(name), []);
});

test('kill -9 of the launcher: the collector (and collect()) remove every trace', async () => {
  const name = `t-netl-${id}-k`;
  const p = await startContainer(name, ['--network-veth', '-p', `${21001 + r * 10}:8080`]);
  assert.ok(readMachineNetState(name, cfg));
  assert.equal(await collect(name, cfg), 'running', 'collect() leaves a live machine alone');
  p.kill('SIGKILL');
  await exited(p);
  assert.deepEqual(await waitClean(name), []);
  assert.equal(await collect(name, cfg), 'absent');
});

test('--network-zone: two containers reach each other; vz- bridge disappears with the last one', async () => {
  const zone = `tlz${id}`;
  const a = await startContainer(`t-netl-${id}-za`, [`--network-zone=${zone}`]);
  const b = await startContainer(`t-netl-${id}-zb`, [`--network-zone=${zone}`]);
  const sa = readMachineNetState(`t-netl-${id}-za`, cfg)!;
  const sb = readMachineNetState(`t-netl-${id}-zb`, cfg)!;
  const nsA = { pid: leaderOf(a), path: `/proc/${leaderOf(a)}/ns/net`, proc: a, kill: () => undefined };
  assert.ok(await getLink(`vz-${zone}`));
  assert.equal(query(nsA, 'tcp', sb.ipv4!.address, 8080), `t-netl-${id}-zb ${sa.ipv4!.address}`);
  assert.equal(query(nsA, 'tcp', sb.ipv6!.address, 8080), `t-netl-${id}-zb ${sa.ipv6!.address}`);
  a.kill('SIGTERM');
  await exited(a);
  await new Promise((res) => setTimeout(res, 1500));
  assert.ok(await getLink(`vz-${zone}`), 'bridge stays with one member left');
  b.kill('SIGTERM');
  await exited(b);
  for (let i = 0; i < 50 && (await getLink(`vz-${zone}`)); i++) await new Promise((res) => setTimeout(res, 100));
  assert.equal(await getLink(`vz-${zone}`), null);
});

test('20 start/stop cycles with veth + port leak nothing', async () => {
  const name = `t-netl-${id}-c`;
  for (let i = 0; i < 20; i++) {
    const res = run(['env', ...Object.entries({ MCTL_NET_STATE_DIR: stateDir, MCTL_NET_TABLE: cfg.table, MCTL_NET_POOL4: env.MCTL_NET_POOL4, MCTL_NET_POOL6: env.MCTL_NET_POOL6 }).map(([k, v]) => `${k}=${v}`),
      nspawn, '-q', '--register=no', '--read-only', '--console=pipe', '-D', debianTree(), '-M', name, '--network-veth', '-p', `${21002 + r * 10}:80`, '/bin/true']);
    assert.equal(res.status, 0, res.stderr);
  }
  assert.deepEqual(await waitClean(name), []);
  assert.equal(await getLink(hostVethName(name, 'veth').name), null);
});

test('bad input: one line on stderr, exit 1, nothing left behind', async () => {
  const name = `t-netl-${id}-bad`;
  const cases: Array<[string[], RegExp]> = [
    [[`--network-bridge=nobr${id}`], /bridge 'nobr.*' does not exist/],
    [[`--network-interface=noif${id}`], /network interface 'noif.*' does not exist/],
    [['--network-veth', '-p', '80:99999'], /invalid --port/],
    [['--network-zone=z', '--network-bridge=br0'], /may not be combined/],
    [['-p', '80'], /--port= needs private networking/],
    [['--private-users=5:0'], /invalid --private-users/],
    [['--network-namespace-path=/etc/hostname'], /--network-namespace-path: \/etc\/hostname does not refer to a network namespace/],
    [[`--network-namespace-path=/run/netns/none${id}`], /--network-namespace-path: cannot open .*ENOENT/],
    [['--network-namespace-path=/proc/self/ns/net', '--network-veth'], /may not be combined/],
    // Fails after the network was reserved (addresses, state, nft rules) but before the container exists.
    [['--network-veth', '-p', `${21009 + r * 10}:80`, `--user=nosuch${id}`], /user 'nosuch.*' does not exist in the container/],
  ];
  for (const [args, msg] of cases) {
    const res = run(['env', `MCTL_NET_STATE_DIR=${stateDir}`, `MCTL_NET_TABLE=${cfg.table}`, nspawn, '-q', '--register=no', '--read-only', '--console=pipe', '-D', debianTree(), '-M', name, ...args, '/bin/true']);
    assert.equal(res.status, 1, `${args.join(' ')}: ${res.stderr}`);
    assert.match(res.stderr, msg);
    assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
    assert.doesNotMatch(res.stderr, /\n\s+at /);
  }
  assert.deepEqual(await waitClean(name), []);
});

test('a failure inside the helper after the container was cloned (its nft rules, its mounts): one line, exit 1, nothing left at exit', async () => {
  const name = `t-netl-${id}-nft`;
  // A chain of ours that someone redefined as a filter chain: the helper's nat chain clashes.
  must(['nft', '-f', '-'], `add table inet ${cfg.table}\nadd chain inet ${cfg.table} postrouting { type filter hook postrouting priority 0; policy accept; }\n`);
  try {
    const res = run(['env', `MCTL_NET_STATE_DIR=${stateDir}`, `MCTL_NET_TABLE=${cfg.table}`, nspawn, '-q', '--register=no', '--read-only', '--console=pipe', '-D', debianTree(), '-M', name,
      '--network-veth', '-p', `${21008 + r * 10}:80`, '/bin/true']);
    assert.equal(res.status, 1, res.stderr);
    assert.match(res.stderr, new RegExp(`^mctl-nspawn: network setup for '${name}' failed: nft: Could not process rule: .* \\(in: add `));
    assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
    // At once, not after some collector: the helper collected before it exited.
    assert.equal(readMachineNetState(name, cfg), null, 'no state');
    assert.equal(existsSync(`${stateDir}/machines/${name}.lock`), false, 'no lock file');
    assert.equal(await getLink(hostVethName(name, 'veth').name), null, 'no veth');
    assert.doesNotMatch(JSON.stringify(await listTableRules(cfg.table)), new RegExp(name), 'no rule of the machine');
  } finally {
    run(['nft', 'delete', 'table', 'inet', cfg.table]);
  }
  assert.deepEqual(await waitClean(name), []);

  // The container's own setup fails once its network exists (a bind whose mount point the
  // read-only tree lacks): the same, the supervisor collects before it exits.
  const res = run(['env', `MCTL_NET_STATE_DIR=${stateDir}`, `MCTL_NET_TABLE=${cfg.table}`, nspawn, '-q', '--register=no', '--read-only', '--console=pipe', '-D', debianTree(), '-M', name,
    '--network-veth', '-p', `${21008 + r * 10}:80`, `--bind-ro=/usr/bin:/mctl-missing-${id}`, '/bin/true']);
  assert.equal(res.status, 1, res.stderr);
  assert.match(res.stderr, /cannot create the mount point .* read-only/);
  assert.equal(readMachineNetState(name, cfg), null, 'no state');
  assert.equal(existsSync(`${stateDir}/machines/${name}.lock`), false, 'no lock file');
  assert.equal(await getLink(hostVethName(name, 'veth').name), null, 'no veth');
  assert.equal(await listTableRules(cfg.table), null, 'no rules, no table');
});

test('--private-network: lo is up inside, as with nspawn', () => {
  const res = run([nspawn, '-q', '--register=no', '--read-only', '--console=pipe', '-D', debianTree(), '-M', `t-netl-${id}-lo`, '--private-network', '/bin/sh', '-c', 'ip -br link; cat /sys/class/net/lo/flags']);
  assert.equal(res.status, 0, res.stderr);
  assert.match(res.stdout, /^lo\s+UNKNOWN/m);
  assert.equal(Number(res.stdout.trim().split('\n').pop()) & 1, 1, 'IFF_UP');
});

test('--network-namespace-path: the container runs in that namespace (also under -U); the host\'s is untouched', async () => {
  const ns = `tnp${id}`;
  // `ip netns add` makes /run/netns a mount point of its own on first use; undo that too.
  const runNetnsWasMount = run(['mountpoint', '-q', '/run/netns']).status === 0;
  const runNetnsExisted = existsSync('/run/netns');
  must(['ip', 'netns', 'add', ns]);
  try {
    must(['ip', '-n', ns, 'link', 'add', `tnpa${id}`, 'type', 'veth', 'peer', 'name', `tnpb${id}`]);
    const inode = must(['stat', '-L', '-c', '%i', `/run/netns/${ns}`]).trim();
    const hostNs = must(['readlink', '/proc/self/ns/net']).trim();
    for (const extra of [[], ['-U'], ['--private-network']]) {
      const res = run([nspawn, '-q', '--register=no', '--read-only', '--console=pipe', '-D', debianTree(), '-M', `t-netl-${id}-ns`, ...extra,
        `--network-namespace-path=/run/netns/${ns}`, '/bin/sh', '-c', 'readlink /proc/self/ns/net; ip -br link | cut -d" " -f1 | cut -d@ -f1']);
      assert.equal(res.status, 0, `${extra.join(' ')}: ${res.stderr}`);
      const [nsLink, ...links] = res.stdout.trim().split('\n');
      assert.equal(nsLink, `net:[${inode}]`, `${extra.join(' ')}: the container is in the given namespace`);
      assert.deepEqual(links.sort(), ['lo', `tnpa${id}`, `tnpb${id}`].sort());
    }
    assert.equal(must(['readlink', '/proc/self/ns/net']).trim(), hostNs);
    assert.doesNotMatch(must(['ip', '-br', 'link']), new RegExp(`tnp[ab]${id}`), 'its links stay in that namespace');
  } finally {
    run(['ip', 'netns', 'del', ns]);
    if (!runNetnsWasMount) run(['umount', '/run/netns']);
    if (!runNetnsExisted) run(['rmdir', '/run/netns']);
  }
});
