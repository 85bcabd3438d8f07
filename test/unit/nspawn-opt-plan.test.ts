import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, symlinkSync, readlinkSync, readFileSync, existsSync, lstatSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCommandLine } from '../../src/nspawn/options.js';
import { planRoot, prepareDirectory } from '../../src/nspawn/mounts-plan.js';
import { deriveMachineName, ephemeralName, chooseMachineId, readTreeMachineId, randomId128 } from '../../src/nspawn/machine-id.js';
import { setupResolvConf, setupTimezone, setupLinkJournal } from '../../src/nspawn/host-integration.js';
import { credentialHostFiles, credentialEnvironment } from '../../src/nspawn/credentials.js';
import { parseUnitProperty, scopeProperties, transientScopeProperties, registrationPlan, idBytes, type RegistrationRequest } from '../../src/nspawn/register.js';
import { isValidHostname } from '../../src/common/names.js';

let dir: string;
let root: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mctl-nspawn-opt-plan-'));
  root = join(dir, 'my_tree');
  for (const d of ['usr/lib/systemd', 'etc', 'var/log/journal', 'usr/share/zoneinfo/Europe', 'srv/inner']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'usr/lib/systemd/systemd'), '');
  writeFileSync(join(root, 'etc/os-release'), 'ID=test\n');
  writeFileSync(join(root, 'usr/share/zoneinfo/Europe/Berlin'), 'TZif');
  mkdirSync(join(dir, 'host/src'), { recursive: true });
});
after(() => rmSync(dir, { recursive: true, force: true }));

const opts = (...argv: string[]) => parseCommandLine(argv).options;

test('prepareDirectory: nspawn checks, one-line errors', async () => {
  assert.equal((await prepareDirectory(opts('-D', root, '-b'))).root, root);
  await assert.rejects(prepareDirectory(opts('-D', join(dir, 'nope'))), /directory .*nope does not exist/);
  mkdirSync(join(dir, 'empty'), { recursive: true });
  await assert.rejects(prepareDirectory(opts('-D', join(dir, 'empty'))), /does not look like it has an OS tree/);
  mkdirSync(join(dir, 'noinit/usr'), { recursive: true });
  writeFileSync(join(dir, 'noinit/usr/os-release'), '');
  mkdirSync(join(dir, 'noinit/etc'));
  writeFileSync(join(dir, 'noinit/etc/os-release'), 'ID=x\n');
  await assert.rejects(prepareDirectory(opts('-D', join(dir, 'noinit'), '-b')), /has no init/);
  mkdirSync(join(dir, 'noos/usr'), { recursive: true });
  await assert.rejects(prepareDirectory(opts('-D', join(dir, 'noos'), '-b')), /does not look like an OS root directory/);
});

test('--template populates a missing directory, atomically', async () => {
  const target = join(dir, 'from-template');
  const r = await prepareDirectory(opts('-D', target, '--template', root));
  assert.equal(r.createdFromTemplate, true);
  assert.ok(existsSync(join(target, 'usr/lib/systemd/systemd')));
  assert.equal((await prepareDirectory(opts('-D', target, '--template', join(dir, 'missing')))).createdFromTemplate, false, 'existing dir: template ignored');
  await assert.rejects(prepareDirectory(opts('-D', join(dir, 'x2'), '--template', join(dir, 'missing'))), /template .* does not exist/);
  await assert.rejects(prepareDirectory(opts('-D', join(dir, 'no/such/parent/x'), '--template', root)), /does not exist/);
});

test('root layer: ephemeral and volatile are built in the container namespace', () => {
  assert.deepEqual([planRoot(opts('-x'), root).rootLayer, planRoot(opts('-x'), root).treeWritable], ['overlay', false]);
  assert.equal(planRoot(opts('--volatile=overlay'), root).rootLayer, 'overlay');
  assert.equal(planRoot(opts('--volatile'), root).rootLayer, 'volatile');
  const state = planRoot(opts('--volatile=state'), root);
  assert.equal(state.readOnlyRoot, true);
  assert.deepEqual(state.mounts, [{ kind: 'tmpfs', destination: '/var', options: 'mode=0755' }]);
  const ro = planRoot(opts('--read-only'), root);
  assert.deepEqual([ro.rootLayer, ro.readOnlyRoot, ro.treeWritable], ['plain', true, false]);
  assert.equal(planRoot(opts(), root).treeWritable, true);
});

test('custom mounts become spec mount ops in order', () => {
  const src = join(dir, 'host/src');
  const p = planRoot(opts(`--bind=${src}:/mnt/a`, `--bind-ro=+/srv/inner:/b:norbind`, '--tmpfs=/t:size=1M', '--inaccessible=/etc/shadow', '--bind=:/scratch', `--overlay-ro=${src}:+/srv/inner:/o`, `--overlay=${src}::/ot`), root);
  assert.deepEqual(p.mounts, [
    { kind: 'bind', source: src, destination: '/mnt/a', readOnly: false, recursive: true },
    { kind: 'bind', source: join(root, 'srv/inner'), destination: '/b', readOnly: true, recursive: false },
    { kind: 'tmpfs', destination: '/t', options: 'size=1M' },
    { kind: 'inaccessible', destination: '/etc/shadow' },
    { kind: 'tmpfs', destination: '/scratch', options: 'mode=0755' },
    { kind: 'overlay', destination: '/o', lowerDirs: [join(root, 'srv/inner'), src], upperDir: null, workDir: null },
    { kind: 'overlay', destination: '/ot', lowerDirs: [src], upperDir: null, workDir: null, temporaryUpper: true },
  ]);
  assert.throws(() => planRoot(opts(`--bind=${join(dir, 'absent')}:/x`), root), /--bind: .*absent does not exist/);
  // overlayfs needs two lower layers without an upper: one read-only lower is a read-only bind.
  assert.deepEqual(planRoot(opts(`--overlay-ro=${src}:/one`), root).mounts, [{ kind: 'bind', source: src, destination: '/one', readOnly: true, recursive: false }]);
});

test('overlay with an upper gets a reusable work dir next to it, removed by cleanup', () => {
  const upper = join(dir, 'host/upper');
  mkdirSync(upper, { recursive: true });
  const p = planRoot(opts(`--overlay=${join(dir, 'host/src')}:${upper}:/o`), root);
  const op = p.mounts[0]!;
  assert.ok(op.kind === 'overlay' && op.upperDir === upper && op.workDir === join(dir, 'host/.#upper.mctl-overlay-work'));
  assert.ok(existsSync(join(dir, 'host/.#upper.mctl-overlay-work')));
  for (const undo of p.cleanup) undo();
  assert.ok(!existsSync(join(dir, 'host/.#upper.mctl-overlay-work')));
});

test('machine names and ids', () => {
  assert.equal(deriveMachineName(undefined, root), 'my-tree');
  assert.equal(deriveMachineName('given', root), 'given');
  assert.equal(deriveMachineName(undefined, '/var/lib/machines/foo.raw'), 'foo');
  const e = ephemeralName('x'.repeat(64));
  assert.ok(isValidHostname(e) && e.length <= 64 && /-[0-9a-f]{16}$/.test(e), e);
  assert.equal(readTreeMachineId(root), null);
  writeFileSync(join(root, 'etc/machine-id'), 'uninitialized\n');
  assert.equal(readTreeMachineId(root), null);
  writeFileSync(join(root, 'etc/machine-id'), '00000000000000000000000000000000\n');
  assert.equal(readTreeMachineId(root), null);
  writeFileSync(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  assert.equal(chooseMachineId(undefined, root), '0123456789abcdef0123456789abcdef');
  assert.equal(chooseMachineId('f'.repeat(32), root), 'f'.repeat(32));
  rmSync(join(root, 'etc/machine-id'));
  const r = randomId128();
  assert.match(r, /^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$/);
  assert.notEqual(chooseMachineId(undefined, root), chooseMachineId(undefined, root));
});

test('resolv.conf modes', () => {
  const etc = join(dir, 'hostetc');
  mkdirSync(etc, { recursive: true });
  writeFileSync(join(etc, 'resolv.conf'), 'nameserver 192.0.2.1\n');
  const ctx = { root, treeWritable: true, privateNetwork: false, host: { etc, run: join(dir, 'hostrun'), usrLib: join(dir, 'hostusrlib') } };
  assert.deepEqual(setupResolvConf('auto', ctx), []);
  assert.equal(readFileSync(join(root, 'etc/resolv.conf'), 'utf8'), 'nameserver 192.0.2.1\n');
  // copy-host keeps a symlink; replace-host replaces it.
  rmSync(join(root, 'etc/resolv.conf'));
  symlinkSync('../run/systemd/resolve/stub-resolv.conf', join(root, 'etc/resolv.conf'));
  setupResolvConf('copy-host', ctx);
  assert.ok(lstatSync(join(root, 'etc/resolv.conf')).isSymbolicLink());
  setupResolvConf('replace-host', ctx);
  assert.ok(lstatSync(join(root, 'etc/resolv.conf')).isFile());
  setupResolvConf('delete', ctx);
  assert.ok(!existsSync(join(root, 'etc/resolv.conf')));
  assert.deepEqual(setupResolvConf('bind-host', ctx), [{ kind: 'bind', source: join(etc, 'resolv.conf'), destination: '/etc/resolv.conf', readOnly: true, recursive: false }]);
  assert.deepEqual(setupResolvConf('copy-host', { ...ctx, treeWritable: false }).map((m) => m.kind), ['bind'], 'read-only tree: copy falls back to bind');
  assert.deepEqual(setupResolvConf('auto', { ...ctx, privateNetwork: true }), []);
  assert.throws(() => setupResolvConf('copy-static', ctx), /--resolv-conf=copy-static: .* does not exist/);
  assert.ok(!existsSync(join(root, 'etc/resolv.conf')));
});

test('timezone modes', () => {
  const etc = join(dir, 'hostetc-tz');
  mkdirSync(etc, { recursive: true });
  symlinkSync('/usr/share/zoneinfo/Europe/Berlin', join(etc, 'localtime'));
  const ctx = { root, treeWritable: true, privateNetwork: false, host: { etc } };
  // The host link target must exist for copy/bind; point it at our fake zone file instead.
  rmSync(join(etc, 'localtime'));
  mkdirSync(join(dir, 'zi/zoneinfo/Europe'), { recursive: true });
  writeFileSync(join(dir, 'zi/zoneinfo/Europe/Berlin'), 'TZif-host');
  symlinkSync(join(dir, 'zi/zoneinfo/Europe/Berlin'), join(etc, 'localtime'));
  setupTimezone('auto', ctx);
  assert.equal(readlinkSync(join(root, 'etc/localtime')), '../usr/share/zoneinfo/Europe/Berlin');
  setupTimezone('copy', ctx);
  assert.equal(readFileSync(join(root, 'etc/localtime'), 'utf8'), 'TZif-host');
  assert.ok(!lstatSync(join(root, 'etc/localtime')).isSymbolicLink());
  assert.deepEqual(setupTimezone('auto', { ...ctx, treeWritable: false }), [{ kind: 'bind', source: join(etc, 'localtime'), destination: '/etc/localtime', readOnly: true, recursive: false }]);
  setupTimezone('delete', ctx);
  assert.ok(!existsSync(join(root, 'etc/localtime')));
  assert.deepEqual(setupTimezone('off', ctx), []);
});

test('link-journal: the modes of nspawn 252 (host dir bound, guest symlink, auto follows either)', () => {
  const journal = join(dir, 'journal');
  const hostEtc = join(dir, 'hostetc-journal');
  mkdirSync(journal);
  mkdirSync(hostEtc);
  writeFileSync(join(hostEtc, 'machine-id'), 'ffffffffffffffffffffffffffffffff\n');
  const ctx = { root, treeWritable: true, privateNetwork: false, host: { journal, etc: hostEtc } };
  const id = '0123456789abcdef0123456789abcdef';
  const p = join(journal, id);
  const q = join(root, 'var/log/journal', id);
  const bind = [{ kind: 'bind', source: p, destination: `/var/log/journal/${id}`, readOnly: false, recursive: false }];
  assert.deepEqual(setupLinkJournal('auto', id, ctx).mounts, [], 'auto: no host directory, no link');
  assert.deepEqual(setupLinkJournal('no', id, ctx).mounts, []);
  assert.deepEqual(setupLinkJournal('try-host', id, { ...ctx, ephemeral: true }).mounts, [], 'nothing with --ephemeral');
  const host = setupLinkJournal('host', id, ctx);
  assert.deepEqual(host.mounts, bind);
  assert.ok(statSync(p).isDirectory() && statSync(q).isDirectory());
  assert.deepEqual(setupLinkJournal('auto', id, ctx).mounts, bind, 'auto: the host directory exists now');
  host.undo!();
  assert.ok(!existsSync(p), 'a failed start removes the host directory it created');
  const guest = setupLinkJournal('guest', id, ctx);
  assert.deepEqual(guest.mounts, []);
  assert.equal(readlinkSync(p), q, 'guest: the host path is a symlink to the tree');
  assert.deepEqual(setupLinkJournal('auto', id, ctx).mounts, [], 'auto keeps an earlier guest link');
  assert.equal(readlinkSync(p), q);
  assert.deepEqual(setupLinkJournal('host', id, ctx).mounts, bind, 'host replaces the guest link');
  assert.ok(statSync(p).isDirectory() && !lstatSync(p).isSymbolicLink());
  writeFileSync(join(p, 'system.journal'), '');
  assert.throws(() => setupLinkJournal('guest', id, ctx), /--link-journal=guest: cannot remove .*: ENOTEMPTY/);
  assert.deepEqual(setupLinkJournal('try-guest', id, ctx).mounts, [], 'try-guest skips instead');
  // a disk image's root is transient: no guest symlink into it
  const img = '22222222222222222222222222222222';
  assert.throws(() => setupLinkJournal('guest', img, { ...ctx, transientRoot: true }), /disk image's journal cannot be linked/);
  assert.deepEqual(setupLinkJournal('try-guest', img, { ...ctx, transientRoot: true }).mounts, []);
  assert.ok(!lstatSync(journal).isSymbolicLink() && !existsSync(join(journal, img)));
  // the host's own id, and a host without one
  assert.throws(() => setupLinkJournal('host', 'ffffffffffffffffffffffffffffffff', ctx), /host and machine ids are equal/);
  assert.match(setupLinkJournal('auto', 'ffffffffffffffffffffffffffffffff', ctx).warning ?? '', /refusing to link journals/);
  rmSync(join(hostEtc, 'machine-id'));
  assert.throws(() => setupLinkJournal('guest', id, ctx), /--link-journal=guest: the host has no machine ID in .*machine-id/);
  assert.deepEqual(setupLinkJournal('try-host', id, ctx).mounts, []);
  // a read-only tree without the directory: host fails, try-host skips
  writeFileSync(join(hostEtc, 'machine-id'), 'ffffffffffffffffffffffffffffffff\n');
  const other = '11111111111111111111111111111111';
  assert.throws(() => setupLinkJournal('host', other, { ...ctx, treeWritable: false }), /does not exist and the tree is read-only/);
});

test('credentials land in /run/host/credentials with tight modes', () => {
  const files = credentialHostFiles([{ id: 'pw', data: Buffer.from([0, 255]) }]);
  assert.deepEqual(files, [{ path: 'credentials/pw', content: 'AP8=', encoding: 'base64', mode: 0o400, dirMode: 0o500 }]);
  assert.deepEqual(credentialEnvironment([]), {});
  assert.deepEqual(credentialEnvironment([{ id: 'a', data: Buffer.alloc(0) }]), { CREDENTIALS_DIRECTORY: '/run/host/credentials' });
});

const req: RegistrationRequest = {
  machineName: 'box', uuid: '0123456789abcdef0123456789abcdef', leaderPid: 4242, rootDirectory: '/srv/box', netifIndices: [],
  slice: 'custom.slice', killSignal: 37, properties: ['MemoryMax=1G', 'CPUQuota=50%', 'TasksMax=100'], mounts: [{ kind: 'bind', source: '/dev/null', destination: '/dev/x', readOnly: false, recursive: false }],
};

test('registration plan follows nspawn --register x --keep-unit', () => {
  assert.equal(registrationPlan('yes', true), 'register-machine');
  assert.equal(registrationPlan('auto', false), 'create-machine');
  assert.equal(registrationPlan('no', false), 'transient-scope');
  assert.equal(registrationPlan('no', true), 'nothing');
  assert.deepEqual([...idBytes(req.uuid)], [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
});

test('CreateMachine scope properties as nspawn sends them', () => {
  assert.deepEqual(scopeProperties(req), [
    ['Slice', 's', 'custom.slice'],
    ['KillSignal', 'i', 37],
    ['KillMode', 's', 'control-group'],
    ['DevicePolicy', 's', 'closed'],
    ['DeviceAllow', 'a(ss)', [['/dev/net/tun', 'rwm'], ['char-pts', 'rw'], ['/dev/null', 'rw']]],
    ['MemoryMax', 't', 1024n ** 3n],
    ['CPUQuotaPerSecUSec', 't', 500000n],
    ['TasksMax', 't', 100n],
  ]);
  // with the supervisor's bus connection as Controller=: KillMode=mixed, as nspawn
  assert.deepEqual(scopeProperties({ ...req, controller: ':1.42' }).slice(0, 4), [
    ['Slice', 's', 'custom.slice'], ['Controller', 's', ':1.42'], ['KillSignal', 'i', 37], ['KillMode', 's', 'mixed'],
  ]);
  assert.deepEqual(transientScopeProperties({ ...req, controller: ':1.42' }).slice(5, 9), [
    ['Slice', 's', 'custom.slice'], ['Controller', 's', ':1.42'], ['KillSignal', 'i', 37], ['KillMode', 's', 'mixed'],
  ]);
  const t = transientScopeProperties({ ...req, slice: undefined, killSignal: undefined, properties: [], mounts: [] });
  assert.deepEqual(t.slice(0, 6), [
    ['PIDs', 'au', [4242]], ['Description', 's', 'Container box'], ['Delegate', 'b', true],
    ['CollectMode', 's', 'inactive-or-failed'], ['AddRef', 'b', true], ['Slice', 's', 'machine.slice'],
  ]);
});

test('--property values are typed; unknown ones are refused', () => {
  assert.deepEqual(parseUnitProperty('Delegate=yes'), ['Delegate', 'b', true]);
  assert.deepEqual(parseUnitProperty('CPUWeight=200'), ['CPUWeight', 't', 200n]);
  assert.deepEqual(parseUnitProperty('KillSignal=SIGTERM'), ['KillSignal', 'i', 15]);
  assert.deepEqual(parseUnitProperty('DeviceAllow=/dev/fuse rw'), ['DeviceAllow', 'a(ss)', [['/dev/fuse', 'rw']]]);
  assert.deepEqual(parseUnitProperty('MemoryHigh=infinity'), ['MemoryHigh', 't', (1n << 64n) - 1n]);
  assert.deepEqual(parseUnitProperty('TimeoutStopSec=90'), ['TimeoutStopUSec', 't', 90_000_000n]);
  assert.throws(() => parseUnitProperty('Frobnicate=1'), /unknown or unsupported property 'Frobnicate'/);
  assert.throws(() => parseUnitProperty('CPUWeight=0'), /invalid weight/);
  assert.throws(() => parseUnitProperty('MemoryMax=lots'), /invalid size/);
});
