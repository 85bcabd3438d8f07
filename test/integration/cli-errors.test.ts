// mctl against our machine manager on a private bus, no containers needed: error lines and exit
// codes, option handling, help and completion, the image verbs on small real images, and
// enable/disable without systemd. Runs the BUILT bin/mctl.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startService, makeTinyImage, mctl, root, ptySpawn, MCTL, type Service } from './cli-container.js';

let svc: Service;

before(async () => {
  svc = await startService();
  makeTinyImage(svc.pool, 'tiny');
}, { timeout: 60_000 });
after(async () => {
  await svc?.stop();
});

/** Exactly one line on stderr, no stack trace. */
function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `expected one error line, got: ${JSON.stringify(stderr)}`);
  assert.doesNotMatch(stderr, /\n\s+at /);
  return lines[0] as string;
}

test('no verb means list; an empty list says so, JSON is []', () => {
  const r = mctl(svc, []);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^MACHINE\s+CLASS\s+SERVICE\s+OS\s+VERSION\s+ADDRESSES\nNo machines\.\n$/);
  const j = mctl(svc, ['list', '-o', 'json']);
  assert.deepEqual(JSON.parse(j.stdout), []);
  assert.equal(mctl(svc, ['list', '--no-legend']).stdout, '');
});

test('show without a name prints the manager properties', () => {
  const r = mctl(svc, ['show']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^PoolPath=${svc.pool}$`, 'm'));
  assert.equal(mctl(svc, ['show', '-p', 'PoolPath', '--value']).stdout, `${svc.pool}\n`);
  assert.equal(JSON.parse(mctl(svc, ['show', '-o', 'json']).stdout).PoolPath, svc.pool);
});

test('unknown machines: one line with a hint, exit 1, for every machine verb', () => {
  const cases: string[][] = [
    ['status', 'nope'],
    ['show', 'nope'],
    ['poweroff', 'nope'],
    ['stop', 'nope'],
    ['reboot', 'nope'],
    ['terminate', 'nope'],
    ['kill', 'nope'],
    ['login', 'nope'],
    ['shell', 'nope'],
    ['shell', 'nope', '/bin/true'],
    ['bind', 'nope', '/tmp'],
    ['copy-to', 'nope', '/etc/hostname', '/tmp/x'],
    ['copy-from', 'nope', '/etc/hostname', '/tmp/x'],
  ];
  for (const args of cases) {
    const r = mctl(svc, args);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(oneLine(r.stderr), "mctl: no machine 'nope' (see mctl list)", args.join(' '));
  }
});

test('unknown images: one line with a hint', () => {
  for (const args of [['image-status', 'nope'], ['show-image', 'nope'], ['remove', 'nope'], ['rename', 'nope', 'x'], ['clone', 'nope', 'x'], ['read-only', 'nope'], ['start', 'nope']]) {
    const r = mctl(svc, args);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(oneLine(r.stderr), "mctl: no image 'nope' (see mctl list-images)", args.join(' '));
  }
});

test('bad names are refused before any call', () => {
  for (const args of [['status', 'bad_name'], ['shell', 'root@-x', '/bin/true'], ['clone', 'tiny', 'a..b'], ['start', 'x/y']]) {
    const r = mctl(svc, args);
    assert.equal(r.status, 1, args.join(' '));
    assert.match(oneLine(r.stderr), /^mctl: invalid (machine|image) name '.*' \(use letters, digits/);
  }
});

test('bad usage exits 2 with one line naming the help to read', () => {
  const cases: [string[], RegExp][] = [
    [['list', '--bogus'], /^mctl: Unknown argument: bogus \(see mctl list --help\)$/],
    [['frobnicate'], /^mctl: Unknown argument: frobnicate \(see mctl --help\)$/],
    [['-o', 'yaml', 'list'], /^mctl: Invalid values: .*yaml.* \(see mctl list --help\)$/],
    [['status'], /^mctl: Not enough non-option arguments.* \(see mctl status --help\)$/],
    [['kill', '-s', 'SIGNOPE', 'x'], /^mctl: invalid signal 'SIGNOPE' \(see mctl kill --signal=help\)$/],
    [['kill', '--kill-whom=everyone', 'x'], /^mctl: Invalid values: .*everyone/],
    [['set-limit', 'tiny', 'lots'], /^mctl: invalid size 'lots'/],
    [['read-only', 'tiny', 'maybe'], /^mctl: invalid boolean 'maybe'/],
    [['shell', '-E', 'no equals', 'x', '/bin/true'], /^mctl: invalid environment assignment 'no equals'/],
    [['copy-to', 'x', '/etc/hostname', 'relative/dest'], /must be an absolute path inside the machine/],
  ];
  for (const [args, re] of cases) {
    const r = mctl(svc, args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(oneLine(r.stderr), re);
  }
});

test('no bus, or no manager on it: one line with a hint', () => {
  const r = mctl({ env: { ...svc.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent/bus' } }, ['list']);
  assert.equal(r.status, 1);
  assert.match(oneLine(r.stderr), /^mctl: cannot connect to the system bus: \/nonexistent\/bus does not exist \(is dbus-daemon running\?/);
});

test('--help for every verb, --version, kill --signal=help, completion', () => {
  const verbs = ['list', 'status', 'show', 'start', 'poweroff', 'reboot', 'terminate', 'kill', 'enable', 'disable', 'login', 'shell', 'bind', 'copy-to', 'copy-from', 'list-images', 'image-status', 'show-image', 'clone', 'rename', 'read-only', 'remove', 'set-limit', 'clean'];
  for (const v of verbs) {
    const r = mctl(svc, [v, '--help']);
    assert.equal(r.status, 0, v);
    assert.match(r.stdout, new RegExp(`^mctl ${v}\\b`), v);
    assert.match(r.stdout, /--output/, v);
  }
  assert.match(mctl(svc, ['--version']).stdout, /^\d+\.\d+\.\d+\n$/);
  const sig = mctl(svc, ['kill', '--signal=help', 'x']);
  assert.equal(sig.status, 0);
  assert.match(sig.stdout, /^TERM$/m);
  const comp = mctl(svc, ['completion']);
  assert.equal(comp.status, 0);
  assert.match(comp.stdout, /--get-yargs-completions/);
  const words = mctl(svc, ['--get-yargs-completions', 'mctl', 'st']).stdout.split('\n');
  for (const w of ['start', 'status', 'list-images']) assert.ok(words.includes(w), `completion offers ${w}: ${words.join(',')}`);
});

test('image verbs: list, status, show, clone, rename, read-only, remove, clean', () => {
  const list = mctl(svc, ['list-images']);
  assert.equal(list.status, 0, list.stderr);
  assert.match(list.stdout, /^NAME\s+TYPE\s+RO\s+USAGE\s+CREATED\s+MODIFIED\ntiny\s+directory\s+no\s/);
  assert.match(list.stdout, /\n1 image listed\.\n$/);
  const rows = JSON.parse(mctl(svc, ['list-images', '-o', 'json']).stdout) as { name: string; type: string; ro: boolean; created: number }[];
  assert.deepEqual(rows.map((r) => [r.name, r.type, r.ro]), [['tiny', 'directory', false]]);
  assert.ok(Math.abs((rows[0]?.created ?? 0) / 1000 - Date.now()) < 600_000, 'created is a recent timestamp in µs');

  const st = JSON.parse(mctl(svc, ['image-status', 'tiny', '-o', 'json']).stdout) as Record<string, unknown>;
  assert.equal(st['hostname'], 'tiny-host');
  assert.equal(st['machineId'], '0123456789abcdef0123456789abcdef');
  assert.equal((st['os'] as Record<string, string>)['PRETTY_NAME'], 'Tiny Linux 1');
  const text = mctl(svc, ['image-status', 'tiny']).stdout;
  assert.match(text, /^tiny\n/);
  assert.match(text, /^\s+OS: Tiny Linux 1$/m);
  assert.equal(mctl(svc, ['show-image', 'tiny', '-p', 'Name,Type', '--value']).stdout, 'tiny\ndirectory\n');

  assert.equal(mctl(svc, ['clone', 'tiny', 't-cli-copy']).status, 0);
  assert.ok(existsSync(join(svc.pool, 't-cli-copy/etc/hostname')));
  assert.equal(mctl(svc, ['rename', 't-cli-copy', 't-cli-moved']).status, 0);
  assert.ok(!existsSync(join(svc.pool, 't-cli-copy')) && existsSync(join(svc.pool, 't-cli-moved')));
  assert.equal(mctl(svc, ['read-only', 't-cli-moved']).status, 0);
  assert.equal(mctl(svc, ['show-image', 't-cli-moved', '-p', 'ReadOnly', '--value']).stdout, 'yes\n');
  assert.equal(mctl(svc, ['read-only', 't-cli-moved', 'no']).status, 0);
  assert.equal(mctl(svc, ['show-image', 't-cli-moved', '-p', 'ReadOnly', '--value']).stdout, 'no\n');
  assert.equal(mctl(svc, ['remove', 't-cli-moved']).status, 0);
  assert.ok(!existsSync(join(svc.pool, 't-cli-moved')));

  makeTinyImage(svc.pool, '.t-cli-hidden');
  assert.doesNotMatch(mctl(svc, ['list-images']).stdout, /t-cli-hidden/);
  assert.match(mctl(svc, ['list-images', '--all']).stdout, /\.t-cli-hidden/);
  const clean = mctl(svc, ['clean', '-o', 'json']);
  assert.equal(clean.status, 0, clean.stderr);
  assert.deepEqual((JSON.parse(clean.stdout) as { name: string }[]).map((x) => x.name), ['.t-cli-hidden']);
  assert.ok(!existsSync(join(svc.pool, '.t-cli-hidden')) && existsSync(join(svc.pool, 'tiny')));
});

test('enable/disable without systemd: the symlinks systemctl would make', () => {
  const dir = mkdtempSync('/tmp/mctl-cli-units-');
  try {
    const env = { MCTL_UNIT_DIR: dir };
    const missing = mctl({ env: { ...svc.env, ...env } }, ['enable', 'tiny']);
    if (!existsSync('/etc/systemd/system/container@.service') && !existsSync('/lib/systemd/system/container@.service')) {
      assert.equal(missing.status, 1);
      assert.match(oneLine(missing.stderr), /^mctl: container@\.service is not installed/);
    }
    copyFileSync(join(root, 'units/container@.service'), join(dir, 'container@.service'));
    copyFileSync(join(root, 'units/machines.target'), join(dir, 'machines.target'));
    const en = mctl({ env: { ...svc.env, ...env } }, ['enable', 'tiny']);
    assert.equal(en.status, 0, en.stderr);
    const link = join(dir, 'machines.target.wants/container@tiny.service');
    assert.equal(readlinkSync(link), join(dir, 'container@.service'));
    assert.equal(readlinkSync(join(dir, 'multi-user.target.wants/machines.target')), join(dir, 'machines.target'));
    assert.match(en.stderr, /^Created symlink .*container@tiny\.service → /m);
    const dis = mctl({ env: { ...svc.env, ...env } }, ['disable', 'tiny']);
    assert.equal(dis.status, 0, dis.stderr);
    assert.throws(() => statSync(link));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('colour only on a terminal, and never with NO_COLOR', async () => {
  const { NO_COLOR: _n, SYSTEMD_COLORS: _s, ...rest } = svc.env;
  const env = { ...rest, TERM: 'xterm' };
  const tty = ptySpawn([process.execPath, MCTL, 'list-images'], env);
  assert.equal(await tty.exit, 0);
  assert.match(tty.output(), /\x1b\[4mNAME +TYPE/, 'underlined header');
  assert.match(tty.output(), /\x1b\[1mtiny\x1b\[0m/, 'bold name');
  const plain = ptySpawn([process.execPath, MCTL, 'list-images'], { ...env, NO_COLOR: '1' });
  assert.equal(await plain.exit, 0);
  assert.doesNotMatch(plain.output(), /\x1b\[/);
  assert.doesNotMatch(mctl({ env }, ['list-images']).stdout, /\x1b\[/, 'not on a tty: no colour');
});
