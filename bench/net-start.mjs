// What networking and user namespaces add to start latency, ours vs systemd-nspawn 252, side by
// side: `/bin/true` on the Debian test tree (read-only) with --network-veth + --port, and with
// -U (picked range, idmapped root), each also as the difference to a plain start of the same
// program. Ours does more here (addresses, default routes, NAT, loopback-capable forwards);
// stock nspawn only creates the link and the DNAT rules. Stock nspawn needs a bus for
// --network-veth, so a private dbus-daemon is started for it. Our collector (which removes the
// rules after each run, in the background once the container is gone) is not timed, and the
// next run waits (untimed) until it has finished: otherwise that Node process would compete
// for the CPU with whatever is timed next, ours or nspawn's.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { compare, timeCommand } from './lib.mjs';
import { OURS, debianTree } from './nspawn-common.mjs';

export default async function run() {
  const tree = debianTree();
  const dir = mkdtempSync('/tmp/mctl-bench-net-');
  const bus = spawnSync('dbus-daemon', ['--session', `--address=unix:path=${dir}/bus`, '--fork', '--print-pid'], { encoding: 'utf8' });
  const busPid = Number(bus.stdout.trim());
  const env = {
    ...process.env,
    DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${dir}/bus`,
    MCTL_NET_TABLE: 'mctlbench',
    MCTL_NET_STATE_DIR: `${dir}/net`,
    MCTL_NET_POOL4: '10.245.0.0/20',
  };
  // A fresh machine name per run: a restart under the same name first waits for the previous
  // run's collector, which is a different measurement (and stock nspawn has no such step).
  let n = 0;
  const fresh = (argv) => argv.map((a) => (a === 'bench-net' || a === 'bench-userns' ? `${a}-${n++}` : a));
  // Until no state of ours is left (the collectors are done), at most 3 s.
  const settle = async () => {
    for (let i = 0; i < 300; i++) {
      let left = [];
      try {
        left = readdirSync(`${dir}/net/machines`).filter((f) => f.endsWith('.json'));
      } catch {
        /* nothing yet */
      }
      if (left.length === 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const timed = async (argv) => {
    const ms = timeCommand(fresh(argv), { env });
    await settle();
    return ms;
  };
  const time = (argv) => () => timed(argv);
  const common = ['-q', '--register=no', '--keep-unit', '--read-only', '--timezone=off', '--resolv-conf=off', '-D', tree];
  const ref = ['systemd-nspawn', ...common];
  const ours = [OURS, '--console=pipe', ...common];
  const veth = ['-M', 'bench-net', '--network-veth', '-p', '18777:80'];
  const userns = ['-M', 'bench-userns', '--private-users=pick', '--private-users-ownership=map'];
  const tru = ['/bin/true'];
  const diff = (a, b) => async () => (await timed(a)) - (await timed(b));
  // Stock nspawn leaves its (empty) io.systemd.nat tables behind; remove them if we caused them.
  const natExisted = spawnSync('nft', ['list', 'table', 'ip', 'io.systemd.nat'], { stdio: 'ignore' }).status === 0;
  try {
    return [
      await compare({ name: 'start --network-veth -p (wall)', ours: time([...ours, ...veth, ...tru]), reference: time([...ref, ...veth, ...tru]), runs: 15 }),
      await compare({ name: 'added by --network-veth -p', ours: diff([...ours, ...veth, ...tru], [...ours, ...tru]), reference: diff([...ref, ...veth, ...tru], [...ref, ...tru]), runs: 15 }),
      await compare({ name: 'start -U map (wall)', ours: time([...ours, ...userns, ...tru]), reference: time([...ref, ...userns, ...tru]), runs: 15 }),
      await compare({ name: 'added by -U map', ours: diff([...ours, ...userns, ...tru], [...ours, ...tru]), reference: diff([...ref, ...userns, ...tru], [...ref, ...tru]), runs: 15 }),
    ];
  } finally {
    if (busPid) process.kill(busPid);
    // Give the last collector a moment, then drop anything of the benchmark's that is left.
    await new Promise((r) => setTimeout(r, 1500));
    spawnSync('nft', ['delete', 'table', 'inet', 'mctlbench'], { stdio: 'ignore' });
    if (!natExisted) for (const f of ['ip', 'ip6']) spawnSync('nft', ['delete', 'table', f, 'io.systemd.nat'], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  }
}
if (import.meta.url === `file://${process.argv[1]}`) await run();
