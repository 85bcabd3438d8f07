import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, mkdirSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSettings, mergeSettings, parseSettings, splitWords } from '../../src/nspawn/settings.js';
import { parseCommandLine, addSyscallFilter } from '../../src/nspawn/options.js';
import { UserError } from '../../src/common/errors.js';

let dir: string;
let trustedDir: string;
let poolDir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mctl-nspawn-opt-settings-'));
  trustedDir = join(dir, 'etc');
  poolDir = join(dir, 'pool');
  mkdirSync(trustedDir);
  mkdirSync(join(poolDir, 'box'), { recursive: true });
});
after(() => rmSync(dir, { recursive: true, force: true }));

const FULL = `# a settings file with every section
[Exec]
Boot=yes
Parameters=--log-level=debug "systemd.unit=rescue target"
Environment=A=1 "B=two words"
Environment=C=3
User=nobody
WorkingDirectory=/srv
Capability=CAP_NET_ADMIN CAP_SYS_TIME
DropCapability=CAP_MKNOD
NoNewPrivileges=yes
KillSignal=SIGTERM
MachineID=0123456789abcdef0123456789abcdef
NotifyReady=yes
Hostname=inner
ResolvConf=bind-host
Timezone=copy
LinkJournal=no
PrivateUsers=pick
LimitNOFILE=1024:4096
; a comment

[Files]
ReadOnly=yes
Bind=/srv/data:/data:norbind
BindReadOnly=/etc/hosts
TemporaryFileSystem=/scratch:size=1M
Inaccessible=/secret
Overlay=/l1:/l2:/u:/merged
OverlayReadOnly=/l1:/ro

[Network]
Private=yes
VirtualEthernet=yes
Port=tcp:8080:80 \\
  udp:53
Zone=web
`;

test('every section and key parses into options, network and user-namespace settings', () => {
  const s = parseSettings(FULL, '/x/box.nspawn', true);
  const o = s.options;
  assert.equal(o.startMode, 'boot');
  assert.deepEqual(o.parameters, ['--log-level=debug', 'systemd.unit=rescue target']);
  assert.deepEqual(o.environment, ['A=1', 'B=two words', 'C=3']);
  assert.equal(o.user, 'nobody');
  assert.equal(o.workingDirectory, '/srv');
  assert.equal(o.capabilityAdd, (1n << 12n) | (1n << 25n));
  assert.equal(o.capabilityDrop, 1n << 27n);
  assert.equal(o.noNewPrivileges, true);
  assert.equal(o.killSignal, 15);
  assert.equal(o.uuid, '0123456789abcdef0123456789abcdef');
  assert.equal(o.notifyReady, true);
  assert.equal(o.hostname, 'inner');
  assert.equal(o.resolvConf, 'bind-host');
  assert.equal(o.timezone, 'copy');
  assert.equal(o.linkJournal, 'no');
  assert.equal(o.readOnly, true);
  assert.deepEqual(o.mounts?.map((m) => `${m.kind}:${m.destination}`), ['bind:/data', 'bind:/etc/hosts', 'tmpfs:/scratch', 'inaccessible:/secret', 'overlay:/merged', 'overlay:/ro']);
  assert.deepEqual(s.network, { private: true, virtualEthernet: true, port: ['tcp:8080:80', 'udp:53'], zone: 'web' });
  assert.deepEqual(s.userNamespace, { privateUsers: 'pick' });
  assert.deepEqual(o.rlimits, { NOFILE: { soft: 1024n, hard: 4096n } });
  assert.deepEqual(s.unsupported, []);
  assert.deepEqual(s.warnings, []);
});

test('an untrusted file cannot grant privileges', () => {
  const s = parseSettings(FULL, '/var/lib/machines/box.nspawn', false);
  const o = s.options;
  assert.equal(o.capabilityAdd, undefined);
  assert.equal(o.capabilityDrop, 1n << 27n, 'dropping is harmless and kept');
  assert.equal(o.uuid, undefined);
  assert.equal(o.mounts, undefined);
  assert.equal(o.linkJournal, undefined);
  assert.equal(o.rlimits, undefined, 'Limit*= needs a trusted file');
  assert.deepEqual(s.network, {});
  assert.deepEqual(s.userNamespace, {});
  assert.equal(o.startMode, 'boot', 'harmless keys still apply');
  assert.equal(o.readOnly, true);
  assert.ok(s.warnings.some((w) => /:9: ignoring Capability=, .* is not trusted/.test(w)), s.warnings.join('\n'));
  assert.ok(s.warnings.some((w) => /ignoring Bind=/.test(w)));
});

test('bad files fail with one line naming file:line', () => {
  const bad = (text: string, re: RegExp) =>
    assert.throws(() => parseSettings(text, '/e/m.nspawn', true), (e: unknown) => e instanceof UserError && re.test(e.message) && !e.message.includes('\n'));
  bad('[Exec]\nBoot=maybe\n', /^\/e\/m\.nspawn:2: Boot=: 'maybe' is not a boolean$/);
  bad('[Exec]\n\nKillSignal=SIGFOO', /^\/e\/m\.nspawn:3: KillSignal=: unknown signal 'SIGFOO'$/);
  bad('Boot=yes', /:1: assignment outside of a section/);
  bad('[Exec\n', /:1: invalid section header/);
  bad('[Files]\njunk line\n', /:2: expected KEY=VALUE/);
  bad('[Files]\nBind=relative/path\n', /:2: Bind=: 'relative\/path' is not an absolute path/);
  bad('[Files]\nVolatile=sometimes\n', /:2: Volatile=: unknown mode/);
  bad('[Exec]\nEnvironment=NOEQUALS\n', /invalid environment assignment 'NOEQUALS'/);
  bad('[Exec]\nParameters="open\n', /unbalanced quotes/);
  bad('[Exec]\nBoot=yes\nProcessTwo=yes\n', /:3: ProcessTwo=: Boot= and ProcessTwo=/);
  bad('[Exec]\nMachineID=zz\n', /invalid UUID/);
  bad('[Exec]\nHostname=a_b\n', /invalid hostname/);
});

test('unknown keys and sections warn, like systemd', () => {
  const s = parseSettings('[Exec]\nBot=yes\n[Weird]\nX=1\n', '/e/m.nspawn', true);
  assert.deepEqual(s.warnings, ['/e/m.nspawn:2: unknown key Bot= in [Exec], ignoring', '/e/m.nspawn:3: unknown section [Weird], ignoring']);
});

test('lookup: trusted dirs first, then next to the root, trust from --settings=trusted', () => {
  const root = join(poolDir, 'box');
  writeFileSync(join(poolDir, 'box.nspawn'), '[Exec]\nHostname=beside\n[Files]\nBind=/srv\n');
  let s = loadSettings({ machineName: 'box', rootPath: root, mode: 'yes', trustedDirs: [trustedDir] })!;
  assert.equal(s.path, join(poolDir, 'box.nspawn'));
  assert.equal(s.trusted, false);
  assert.equal(s.options.hostname, 'beside');
  assert.equal(s.options.mounts, undefined);
  s = loadSettings({ machineName: 'box', rootPath: `${root}/`, mode: 'trusted', trustedDirs: [trustedDir] })!;
  assert.equal(s.trusted, true);
  assert.equal(s.options.mounts?.length, 1);
  writeFileSync(join(trustedDir, 'box.nspawn'), '[Exec]\nHostname=etc\n');
  s = loadSettings({ machineName: 'box', rootPath: root, mode: 'yes', trustedDirs: [trustedDir] })!;
  assert.equal(s.path, join(trustedDir, 'box.nspawn'));
  assert.equal(s.trusted, true);
  assert.equal(loadSettings({ machineName: 'box', rootPath: root, mode: 'no', trustedDirs: [trustedDir] }), null);
  assert.equal(loadSettings({ machineName: 'other', rootPath: root, mode: 'yes', trustedDirs: [trustedDir] }), null);
  writeFileSync(join(trustedDir, 'broken.nspawn'), '[Exec]\nBoot=perhaps\n');
  assert.throws(() => loadSettings({ machineName: 'broken', rootPath: root, mode: 'yes', trustedDirs: [trustedDir] }), /broken\.nspawn:2: Boot=/);
  if (process.getuid?.() !== 0) {
    writeFileSync(join(trustedDir, 'unreadable.nspawn'), '');
    chmodSync(join(trustedDir, 'unreadable.nspawn'), 0);
    assert.throws(() => loadSettings({ machineName: 'unreadable', rootPath: root, mode: 'yes', trustedDirs: [trustedDir] }), /cannot read .*EACCES/);
  }
});

test('merge: command line wins with yes/trusted, the file wins with override', () => {
  const file = parseSettings('[Exec]\nHostname=file\nEnvironment=F=1\nCapability=CAP_SYS_TIME\nBoot=yes\n[Files]\nTemporaryFileSystem=/f\n', '/e/m.nspawn', true);
  const cl = parseCommandLine(['--hostname=cmd', '-E', 'C=1', '--drop-capability=CAP_MKNOD', '-D', '/r']).options;
  const yes = mergeSettings(cl, file, 'yes');
  assert.equal(yes.hostname, 'cmd');
  assert.deepEqual(yes.environment, ['C=1']);
  assert.equal(yes.capabilityAdd, undefined, 'capabilities are one group: the command line set it');
  assert.equal(yes.capabilityDrop, 1n << 27n);
  assert.equal(yes.startMode, 'boot', 'not given on the command line: from the file');
  assert.equal(yes.mounts?.[0]?.destination, '/f');
  assert.equal(yes.directory, '/r');
  const ov = mergeSettings(cl, file, 'override');
  assert.equal(ov.hostname, 'file');
  assert.deepEqual(ov.environment, ['F=1']);
  assert.equal(ov.capabilityAdd, 1n << 25n);
  assert.equal(ov.capabilityDrop, undefined);
  assert.deepEqual(mergeSettings(cl, null, 'yes'), cl);
});

test('word splitting follows systemd quoting', () => {
  assert.deepEqual(splitWords(` a "b c" 'd "e"' f\\ g "h\\"i" `), ['a', 'b c', 'd "e"', 'f g', 'h"i']);
});

test('SystemCallFilter= and --system-call-filter: values add up, "~" removes, odd names refused', () => {
  const f = parseSettings('[Exec]\nSystemCallFilter=@debug keyctl\nSystemCallFilter=~getpid\n', '/etc/systemd/nspawn/x.nspawn', true);
  assert.deepEqual(f.options.syscallFilter, { allow: ['@debug', 'keyctl'], deny: ['getpid'] });
  assert.deepEqual(f.unsupported, []);
  assert.equal(parseSettings('[Exec]\nSystemCallFilter=keyctl\n', '/var/lib/machines/x.nspawn', false).options.syscallFilter, undefined, 'not from an untrusted file');
  assert.deepEqual(addSyscallFilter({ allow: ['a'], deny: [] }, '~b c'), { allow: ['a'], deny: ['b', 'c'] });
  assert.throws(() => addSyscallFilter(undefined, 'a;b'), /invalid system call or group name 'a;b'/);
});
