// `mctl status NAME` shows the machine's unit journal as machinectl does. A real systemd-journald
// runs in a private mount namespace (tmpfs over /run/systemd/journal, /run/log and
// /var/log/journal, so the host's journal is untouched); a process inside the machine's scope
// logs through it, so journald itself stamps _SYSTEMD_UNIT from the scope's cgroup; mctl status
// runs in that namespace and must show those lines. Runs the BUILT bin/mctl and mctl-machined.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { call, connectBus } from '../../src/dbus/bus.js';
import { MCTL, mctl, startService, type Service } from './cli-container.js';

const JOURNALD = ['/lib/systemd/systemd-journald', '/usr/lib/systemd/systemd-journald'].find((p) => existsSync(p));
const NAME = 't-gap-journal';
const UNIT = 'machine-t\\x2dgap\\x2djournal.scope';
const MANAGER = { destination: 'org.freedesktop.machine1', path: '/org/freedesktop/machine1', interface: 'org.freedesktop.machine1.Manager' };

let svc: Service;
let leader: ChildProcess;

before(async () => {
  svc = await startService();
  leader = spawn('sleep', ['1000'], { stdio: 'ignore' });
  const bus = connectBus(svc.bus.env['DBUS_SYSTEM_BUS_ADDRESS']);
  try {
    await call(bus, { ...MANAGER, member: 'CreateMachine', signature: 'sayssusa(sv)', body: [NAME, Buffer.alloc(0), 'mctl-test', 'container', leader.pid, '', []], timeoutMs: 10_000 });
  } finally {
    bus.disconnect();
  }
}, { timeout: 60_000 });

after(async () => {
  if (svc) mctl(svc, ['terminate', NAME]);
  leader?.kill('SIGKILL');
  await svc?.stop();
});

/**
 * In a private mount namespace: start journald, log LINES lines from inside the machine's scope
 * (and one from outside it), then run each mctl command line; their outputs come back split.
 */
function inJournalNamespace(lines: number, commands: string[][]): { outputs: string[]; stderr: string } {
  const q = (a: string): string => `'${a.replace(/'/g, `'\\''`)}'`;
  const runs = commands.map((c) => `echo @@@; ${q(process.execPath)} ${q(MCTL)} ${c.map(q).join(' ')} 2>&1; echo "exit=$?"`).join('\n');
  const script = `
set -e
mkdir -p /run/systemd/journal /run/log
mount -t tmpfs tmpfs /run/systemd/journal
mount -t tmpfs tmpfs /run/log
[ -d /var/log/journal ] && mount -t tmpfs tmpfs /var/log/journal
${q(JOURNALD as string)} >/dev/null 2>&1 & J=$!
trap 'kill $J; wait $J 2>/dev/null || true' EXIT
i=0; while [ ! -S /run/systemd/journal/stdout ]; do i=$((i+1)); [ $i -lt 100 ] || exit 9; sleep 0.05; done
echo 'from the host' | systemd-cat -t t-gap-host
sh -c 'for f in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
  p="$f/machine.slice/${UNIT.replace(/\\/g, '\\\\')}/cgroup.procs"; [ -f "$p" ] && echo $$ > "$p"; done
  # one long-lived writer: journald reads the cgroup of a stream peer when a line arrives, and a
  # writer that has already exited would leave its lines without _SYSTEMD_UNIT
  { n=1; while [ $n -le ${lines} ]; do echo "gap journal line $n"; n=$((n+1)); done; sleep 0.5; } | systemd-cat -t t-gap-guest'
i=0; until journalctl -q --no-pager -u ${q(UNIT)} | grep -q 'gap journal line ${lines}'; do i=$((i+1)); [ $i -lt 100 ] || exit 8; sleep 0.05; done
set +e
${runs}
`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { env: { ...process.env, ...svc.env }, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `namespace script failed (${r.status}): ${r.stderr}`);
  return { outputs: r.stdout.split('@@@\n').slice(1), stderr: r.stderr };
}

test('status shows the last lines of the machine unit journal; -n picks how many, 0 none', { skip: JOURNALD ? false : 'no systemd-journald' }, () => {
  const { outputs } = inJournalNamespace(12, [['status', NAME], ['status', NAME, '-n', '3'], ['status', NAME, '--lines=0'], ['status', NAME, '-o', 'json']]);
  const [dflt, three, none, json] = outputs.map((o) => o.trimEnd());
  // default: the last 10 of 12, after an empty line that ends the status fields
  assert.match(dflt ?? '', /exit=0$/);
  const shown = (text: string): number[] => [...text.matchAll(/t-gap-guest\[\d+\]: gap journal line (\d+)$/gm)].map((m) => Number(m[1]));
  assert.deepEqual(shown(dflt ?? ''), [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  assert.match(dflt ?? '', new RegExp(`Unit: ${UNIT.replace(/\\/g, '\\\\').replace(/\./g, '\\.')}[^]*\\n\\n\\S.*gap journal line 3\\n`));
  assert.doesNotMatch(dflt ?? '', /from the host/); // only the unit's own entries
  assert.deepEqual(shown(three ?? ''), [10, 11, 12]);
  assert.deepEqual(shown(none ?? ''), []);
  assert.match(none ?? '', /Unit: /);
  // JSON stays the documented status object
  assert.equal(JSON.parse((json ?? '').replace(/\nexit=0$/, '')).name, NAME);
});

test('without a journal the status has no excerpt and no complaint; a bad --lines is a usage error', () => {
  // outside the namespace no journald has written anything for this unit
  const r = mctl(svc, ['status', NAME]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.doesNotMatch(r.stdout, /gap journal line/);
  assert.match(r.stdout.trimEnd(), /└─\d+ sleep 1000$/);
  const bad = mctl(svc, ['status', NAME, '-n', 'x']);
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr.trim(), "mctl: invalid --lines 'x' (a number of lines, 0 for none)");
});
