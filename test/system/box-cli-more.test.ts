// More of the mctl CLI on a real systemd host (the box), against stock systemd-machined first and
// then against mctl-machined: login on a real terminal, copy-to/copy-from, bind, the image verbs
// on /var/lib/machines, and reboot. Interactive machines are booted by stock systemd-nspawn
// (as in box-cli.test.ts) so only the CLI and the service are under test; reboot under
// container@.service (our launcher) is in box-container-unit.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BoxTerminal, installMctl, parseProps, useBox, useMctlMachined, useSystemdMachined, waitFor, waitSystemRunning, type Box } from '../helpers/box.js';
import { debianTree } from '../helpers/images.js';

const held = useBox({ machines: { debian: debianTree() } }, (box) => installMctl(box));
const ROOT = '/var/lib/machines/debian';
const scopeOf = (name: string): string => `machine-${name.replace(/-/g, '\\x2d')}.scope`;

async function bootNested(box: Box, name: string): Promise<string> {
  await box.runOk(['systemd-run', `--unit=${name}`, '--', 'systemd-nspawn', '--quiet', '--boot', `--machine=${name}`, `--directory=${ROOT}`, '--volatile=overlay']);
  await waitFor(async () => (await box.run(['machinectl', 'show', name])).status === 0, 20_000, `${name} registered`);
  assert.equal(await waitSystemRunning(box, name), 'running');
  return (await box.runOk(['machinectl', 'show', name, '-p', 'Leader', '--value'])).trim();
}

async function stopNested(box: Box, name: string): Promise<void> {
  await box.run(['systemctl', 'stop', `${name}.service`]);
  await box.run(['systemctl', 'reset-failed', `${name}.service`]);
}

for (const service of ['systemd-machined', 'mctl-machined'] as const) {
  const tag = service === 'mctl-machined' ? 'ours' : 'stock';

  test(`[${service}] mctl login, copy-to/copy-from and bind --read-only --mkdir on a running machine`, async () => {
    const { box } = held;
    if (service === 'mctl-machined') await useMctlMachined(box);
    else await useSystemdMachined(box);
    assert.equal(parseProps(await box.runOk(['busctl', 'status', '--no-pager', 'org.freedesktop.machine1'])).Unit, `${service}.service`);
    const name = `t-more-${tag}`;
    const leader = await bootNested(box, name);
    try {
      // login: the container's getty on a real terminal, root/mctl, a shell prompt, ^]^]^] leaves.
      const term = new BoxTerminal(box, `mctl login ${name}`);
      try {
        await term.expect(/login: $/m);
        term.type('root\r');
        await term.expect(/Password: ?/);
        term.type('mctl\r');
        await term.expect(/# $/m);
        term.type('echo logged-in-$((6*7)) $(id -un)\r');
        await term.expect(/logged-in-42 root/);
        term.type('\x1d\x1d\x1d');
        assert.equal(await term.exited, 0, term.output);
      } finally {
        await term.close();
      }

      // copy-to then copy-from: the content makes the round trip unchanged.
      const payload = `t-more ${tag} ${Date.now()}\n`;
      await box.writeFile('/tmp/t-more-src', payload);
      await box.runOk(['mctl', 'copy-to', name, '/tmp/t-more-src', '/root/t-more-in']);
      assert.equal(await box.runOk(['cat', `/proc/${leader}/root/root/t-more-in`]), payload, 'copied into the machine');
      await box.runOk(['rm', '-f', '/tmp/t-more-back']);
      await box.runOk(['mctl', 'copy-from', name, '/root/t-more-in', '/tmp/t-more-back']);
      assert.equal(await box.runOk(['cat', '/tmp/t-more-back']), payload, 'copied back out');

      // bind --read-only --mkdir: a new mount point, the host's content visible, writes refused.
      await box.runOk(['sh', '-ec', 'mkdir -p /tmp/t-more-bind && echo bound > /tmp/t-more-bind/f']);
      await box.runOk(['mctl', 'bind', '--read-only', '--mkdir', name, '/tmp/t-more-bind', '/mnt/t-more/new']);
      const inside = (cmd: string): Promise<{ status: number | null; stdout: string; stderr: string }> =>
        box.run(['nsenter', '-t', leader, '-m', '--', 'sh', '-c', cmd]);
      const read = await inside('cat /mnt/t-more/new/f');
      assert.equal(read.stdout, 'bound\n', read.stderr);
      const write = await inside('touch /mnt/t-more/new/x');
      assert.notEqual(write.status, 0, 'the bind mount is read-only inside');
      assert.match(write.stderr, /Read-only file system/);
    } finally {
      await stopNested(box, name);
      await box.run(['rm', '-rf', '/tmp/t-more-src', '/tmp/t-more-back', '/tmp/t-more-bind']);
    }
  });

  test(`[${service}] image verbs on /var/lib/machines: list-images, clone, rename, read-only, image-status, remove`, async () => {
    const { box } = held;
    const [img, clone, renamed] = [`t-img-${tag}`, `t-img-${tag}-c`, `t-img-${tag}-r`];
    await box.runOk(['sh', '-ec', `mkdir -p /var/lib/machines/${img}/etc && printf 'ID=t-more\\n' > /var/lib/machines/${img}/etc/os-release && echo data > /var/lib/machines/${img}/data`]);
    try {
      const listed = await box.runOk(['mctl', 'list-images']);
      assert.match(listed, /^debian\s+directory\s/m);
      assert.match(listed, new RegExp(`^${img}\\s+directory\\s`, 'm'));

      await box.runOk(['mctl', 'clone', img, clone]);
      assert.equal(await box.runOk(['cat', `/var/lib/machines/${clone}/data`]), 'data\n');
      await box.runOk(['mctl', 'rename', clone, renamed]);
      assert.notEqual((await box.run(['test', '-e', `/var/lib/machines/${clone}`])).status, 0, 'old name gone');
      assert.equal(await box.runOk(['cat', `/var/lib/machines/${renamed}/data`]), 'data\n');

      await box.runOk(['mctl', 'read-only', renamed]);
      assert.equal((await box.runOk(['machinectl', 'show-image', renamed, '-p', 'ReadOnly', '--value'])).trim(), 'yes');
      const status = await box.runOk(['mctl', 'image-status', renamed]);
      assert.match(status, new RegExp(`^${renamed}$`, 'm'));
      assert.match(status, /Type: directory/);
      assert.match(status, new RegExp(`Path: /var/lib/machines/${renamed}`));
      assert.match(status, /RO: read-only/);
      await box.runOk(['mctl', 'read-only', renamed, 'false']);
      assert.equal((await box.runOk(['machinectl', 'show-image', renamed, '-p', 'ReadOnly', '--value'])).trim(), 'no');

      await box.runOk(['mctl', 'remove', renamed]);
      assert.notEqual((await box.run(['test', '-e', `/var/lib/machines/${renamed}`])).status, 0, 'clone removed');
      assert.doesNotMatch(await box.runOk(['mctl', 'list-images']), new RegExp(`^${renamed}\\s`, 'm'));
      assert.equal(await box.runOk(['cat', `/var/lib/machines/${img}/data`]), 'data\n', 'the original is untouched');
    } finally {
      for (const i of [renamed, clone]) await box.run(['sh', '-c', `chattr -i /var/lib/machines/${i} 2>/dev/null; rm -rf /var/lib/machines/${i}`]);
      await box.run(['rm', '-rf', `/var/lib/machines/${img}`]);
    }
  });

  test(`[${service}] mctl reboot: the same launcher boots it again, a new leader registers`, async () => {
    const { box } = held;
    const name = `t-more-rb-${tag}`;
    await bootNested(box, name);
    try {
      const before = parseProps(await box.runOk(['machinectl', 'show', name]));
      const launcher = (await box.runOk(['systemctl', 'show', `${name}.service`, '-p', 'MainPID', '--value'])).trim();
      await box.runOk(['mctl', 'reboot', name]);
      let after: Record<string, string> = {};
      await waitFor(
        async () => {
          const r = await box.run(['machinectl', 'show', name]);
          after = parseProps(r.stdout);
          return r.status === 0 && after.Leader !== before.Leader && after.State === 'running';
        },
        30_000,
        `${name} registered again with a new leader`,
      );
      assert.equal(after.Unit, scopeOf(name));
      assert.equal((await box.runOk(['systemctl', 'show', `${name}.service`, '-p', 'MainPID', '--value'])).trim(), launcher, 'nspawn itself kept running');
      assert.match(await box.runOk(['cat', `/proc/${after.Leader}/cgroup`]), /^0::\/machine\.slice\/machine-/m);
      assert.equal(await waitSystemRunning(box, name), 'running');
      assert.match(await box.runOk(['mctl', 'list', '--no-legend']), new RegExp(`^${name}\\s+container\\s`, 'm'));
    } finally {
      await stopNested(box, name);
    }
  });
}
