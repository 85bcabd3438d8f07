// Networking on a real systemd host (the box): `mctl start NAME` runs container@.service, whose
// ExecStart has `-U --network-veth`; a trusted /etc/systemd/nspawn/NAME.nspawn adds
// `Port=tcp:8080:80`. The container boots, GetMachineAddresses and `mctl status` show the address
// mctl gave it, a socket-activated service inside answers on the box's 127.0.0.1:8080, and after
// `mctl poweroff` no link, nft table or state file of the machine is left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { installMctl, parseProps, useBox, waitFor, type Box } from '../helpers/box.js';
import { debianTree } from '../helpers/images.js';

const NAME = 't-bnet-1';
const UNIT = `container@${NAME}.service`;
const SETTINGS = `/etc/systemd/nspawn/${NAME}.nspawn`;
const ROOT = `/var/lib/machines/${NAME}`;
const TOKEN = `t-bnet-${randomBytes(6).toString('hex')}`;
// A real copy, not an overlay: -U maps the tree through an idmapped mount, which overlayfs refuses.
const held = useBox({ machines: { [NAME]: { tree: debianTree(), copy: true } } }, (box) => installMctl(box, { machined: true }));

/** The container's own listener: a socket unit on port 80 answering with a token from its tree. */
async function installEchoService(box: Box): Promise<void> {
  await box.writeFile(`${ROOT}/etc/t-bnet-token`, `${TOKEN}\n`);
  await box.writeFile(`${ROOT}/etc/systemd/system/t-bnet-echo.socket`, '[Socket]\nListenStream=80\nAccept=yes\n\n[Install]\nWantedBy=sockets.target\n');
  await box.writeFile(`${ROOT}/etc/systemd/system/t-bnet-echo@.service`, '[Service]\nExecStart=/bin/cat /etc/t-bnet-token\nStandardInput=socket\nStandardOutput=socket\n');
  await box.runOk(['mkdir', '-p', `${ROOT}/etc/systemd/system/sockets.target.wants`]);
  await box.runOk(['ln', '-sf', '../t-bnet-echo.socket', `${ROOT}/etc/systemd/system/sockets.target.wants/t-bnet-echo.socket`]);
}

/** One TCP exchange from the box itself, through bash's /dev/tcp. */
async function fetchFromBox(box: Box, host: string, port: number): Promise<string> {
  const r = await box.run(['timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${host}/${port} && cat <&3`], { timeoutMs: 5000 });
  return r.status === 0 ? r.stdout.trim() : `exit ${r.status}: ${r.stderr.trim()}`;
}

test('container@.service (-U --network-veth) with Port=tcp:8080:80: an address, a working forward on 127.0.0.1, nothing left after poweroff', async () => {
  const { box } = held;
  const execStart = await box.runOk(['systemctl', 'show', UNIT, '-p', 'ExecStart', '--value']);
  assert.match(execStart, / --network-veth /, 'the shipped unit asks for a veth');
  assert.match(execStart, / -U /, 'the shipped unit asks for a private user namespace');
  await box.writeFile(SETTINGS, '[Network]\nVirtualEthernet=yes\nPort=tcp:8080:80\n');
  await installEchoService(box);
  try {
    const start = await box.run(['mctl', 'start', NAME], { timeoutMs: 60_000 });
    const unitLog = async (): Promise<string> => (await box.run(['journalctl', '-u', UNIT, '--no-pager', '-o', 'cat'])).stdout;
    assert.equal(start.status, 0, `mctl start failed: ${start.stderr}\n--- ${UNIT} ---\n${await unitLog()}`);

    await waitFor(async () => (await box.run(['machinectl', 'show', NAME])).status === 0, 20_000, `${NAME} registered`);
    const leader = parseProps(await box.runOk(['machinectl', 'show', NAME, '-p', 'Leader'])).Leader;
    const [, outside] = (await box.runOk(['cat', `/proc/${leader}/uid_map`])).trim().split(/\s+/).map(Number);
    assert.ok(outside! >= 0x80000, `-U: a private UID range (got ${outside})`);

    const state = JSON.parse(await box.runOk(['cat', `/run/mctl/net/machines/${NAME}.json`])) as { hostIf: string; ipv4: { address: string } };
    const ipv4 = state.ipv4.address;
    await waitFor(async () => (await box.run(['busctl', 'call', 'org.freedesktop.machine1', '/org/freedesktop/machine1', 'org.freedesktop.machine1.Manager', 'GetMachineAddresses', 's', NAME])).stdout.includes(`4 ${ipv4.split('.').join(' ')}`), 20_000, `GetMachineAddresses to report ${ipv4}`);
    const status = await box.runOk(['mctl', 'status', NAME]);
    assert.match(status, /Address: /, 'mctl status has an Address field');
    assert.ok(status.split(/\s+/).includes(ipv4), `mctl status shows ${ipv4}:\n${status}`);

    // The container's socket unit comes up during its boot: poll until the forward answers.
    let reply = '';
    await waitFor(async () => (reply = await fetchFromBox(box, '127.0.0.1', 8080)) === TOKEN, 30_000, `127.0.0.1:8080 to answer (last: ${reply})`).catch((err: Error) => {
      throw new Error(`${err.message}; last reply: ${reply}`);
    });
    assert.equal(await fetchFromBox(box, ipv4, 80), TOKEN, 'the container answers on its own address too');

    await box.runOk(['mctl', 'poweroff', NAME]);
    await waitFor(async () => (await box.run(['systemctl', 'is-active', UNIT])).stdout.trim() === 'inactive', 30_000, `${UNIT} inactive after poweroff`);
    await waitFor(async () => (await box.run(['test', '-e', `/run/mctl/net/machines/${NAME}.json`])).status !== 0, 10_000, 'the network state to go');
    assert.doesNotMatch(await box.runOk(['ip', '-o', 'link', 'show']), new RegExp(state.hostIf), `${state.hostIf} removed`);
    const table = await box.run(['nft', 'list', 'table', 'inet', 'mctl']);
    assert.notEqual(table.status, 0, `nft table inet mctl removed with the last machine: ${table.stdout}`);
    assert.deepEqual((await box.runOk(['ls', '/run/mctl/net/machines'])).split('\n').filter((f) => f.startsWith(NAME)), []);
    assert.notEqual((await box.run(['timeout', '3', 'bash', '-c', 'exec 3<>/dev/tcp/127.0.0.1/8080'])).status, 0, 'nothing answers on 8080 any more');
  } finally {
    await box.run(['systemctl', 'stop', UNIT]);
    await box.run(['systemctl', 'reset-failed', UNIT]);
    await box.run(['rm', '-f', SETTINGS]);
  }
});
