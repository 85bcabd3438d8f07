import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCommandLine, splitEscaped, parseBind, parseOverlay, parseTmpfs, cUnescape, parseId128, helpText, OPTIONS, NETWORK_OPTION_NAMES, mentionsNetworkOption } from '../../src/nspawn/options.js';
import { NETWORK_OPTIONS, NETWORK_HELP } from '../../src/nspawn/network.js';
import { UserError } from '../../src/common/errors.js';

const parse = (...argv: string[]) => parseCommandLine(argv);
const fails = (argv: string[], re: RegExp) =>
  assert.throws(() => parseCommandLine(argv), (err: unknown) => err instanceof UserError && re.test(err.message) && !err.message.includes('\n'));

test('long options take =value or the next argument; short options cluster', () => {
  const a = parse('--directory=/srv/a', '-M', 'foo', '-bq', '--uuid', '0123456789abcdef0123456789ABCDEF');
  assert.equal(a.options.directory, '/srv/a');
  assert.equal(a.options.machine, 'foo');
  assert.equal(a.options.startMode, 'boot');
  assert.equal(a.quiet, true);
  assert.equal(a.options.uuid, '0123456789abcdef0123456789abcdef');
  assert.equal(parse('-D/x').options.directory, '/x');
  assert.equal(parse('-xD', '/y').options.directory, '/y');
  assert.equal(parse('-xD', '/y').options.ephemeral, true);
});

test('option parsing stops at -- and at the first non-option', () => {
  const a = parse('-D', '/r', 'ls', '-l', '--bind=/x');
  assert.deepEqual(a.options.parameters, ['ls', '-l', '--bind=/x']);
  assert.equal(a.options.mounts, undefined);
  assert.deepEqual(parse('-D', '/r', '--', '-weird').options.parameters, ['-weird']);
  assert.equal(parse('-D', '/r').options.parameters, undefined);
});

test('--help and --version win immediately, even before bad options', () => {
  assert.equal(parse('--help', '--bogus').action, 'help');
  assert.equal(parse('-h').action, 'help');
  assert.equal(parse('--version').action, 'version');
  const help = helpText(NETWORK_HELP);
  for (const def of [...OPTIONS, ...NETWORK_OPTIONS]) if (def.long.length > 1) assert.ok(help.includes(`--${def.long}`) || ['no-pager', 'private-users-chown'].includes(def.long), `--help lists --${def.long}`);
});

test('the light list of network option names matches network.ts, so they load on demand', () => {
  for (const d of NETWORK_OPTIONS) {
    if (d.long.length > 1) assert.ok(NETWORK_OPTION_NAMES.long.includes(d.long), d.long);
    if (d.short) assert.ok(NETWORK_OPTION_NAMES.short.includes(d.short), d.short);
  }
  assert.ok(mentionsNetworkOption(['-D', '/x', '--network-veth']));
  assert.ok(mentionsNetworkOption(['-bn']));
  assert.ok(mentionsNetworkOption(['--port=80']));
  assert.ok(!mentionsNetworkOption(['-D', '/x', '-b', '--bind=/a', 'ls']));
  assert.throws(() => parseCommandLine(['--network-veth']), /unrecognized option/);
  assert.equal(parseCommandLine(['--network-veth'], NETWORK_OPTIONS).options.network?.veth, true);
});

test('unknown options and missing/extra arguments are one-line errors', () => {
  fails(['--bogus'], /unrecognized option '--bogus'/);
  fails(['-Y'], /invalid option -- 'Y'/);
  fails(['--boot=yes'], /doesn't allow an argument/);
  fails(['-D'], /requires an argument/);
  fails(['--machine'], /requires an argument/);
});

test('value validation names the option', () => {
  fails(['--kill-signal=FOO'], /^--kill-signal: unknown signal 'FOO'$/);
  fails(['-M', 'foo_bar'], /^--machine: invalid machine name 'foo_bar'$/);
  fails(['-M', '.host'], /invalid machine name/);
  fails(['--hostname=a_b'], /^--hostname: invalid hostname/);
  fails(['--uuid=xyz'], /invalid UUID 'xyz'/);
  fails(['--uuid=00000000-0000-0000-0000-000000000000'], /all zeroes/);
  fails(['--volatile=xx'], /^--volatile: unknown mode 'xx'/);
  fails(['--settings=xx'], /^--settings: unknown mode/);
  fails(['--register=maybe'], /^--register: unknown mode/);
  fails(['-E', '1FOO=a'], /^--setenv: invalid environment assignment '1FOO=a'$/);
  fails(['--chdir=rel'], /not an absolute path/);
  fails(['--bind=a'], /^--bind: 'a' is not an absolute path$/);
  fails(['--bind=/a:b'], /not an absolute path/);
  fails(['--bind=/a:/b:foo'], /unknown bind option 'foo'/);
  fails(['--bind=/a::rbind'], /empty destination/);
  fails(['--tmpfs=rel'], /not an absolute path/);
  fails(['--overlay=/a'], /at least two/);
  fails(['--inaccessible=rel'], /not an absolute path/);
  fails(['--capability=CAP_FOO'], /^--capability: unknown capability 'CAP_FOO'$/);
  fails(['--resolv-conf=xx'], /unknown mode 'xx'/);
  fails(['--timezone=xx'], /unknown mode 'xx'/);
  fails(['--link-journal=xx'], /unknown mode 'xx'/);
  fails(['--console=xx'], /unknown console mode 'xx'/);
  fails(['--set-credential=a/b:x'], /invalid credential name 'a\/b'/);
  fails(['--set-credential=a'], /missing ':VALUE'/);
  fails(['--set-credential=a:x', '--set-credential=a:y'], /duplicate credential 'a'/);
  fails(['--slice=foo'], /invalid slice name 'foo'/);
  fails(['--property=foo'], /is not NAME=VALUE/);
  fails(['--notify-ready=maybe'], /not a boolean/);
});

test('nspawn conflict rules', () => {
  fails(['-x', '--template=/t', '-D', '/d'], /--ephemeral and --template= may not be combined/);
  fails(['-b', '-a'], /--boot and --as-pid2 may not be combined/);
  fails(['-a', '-b'], /--boot and --as-pid2 may not be combined/);
  fails(['-x', '--link-journal=host'], /--ephemeral and --link-journal/);
  fails(['--read-only', '--volatile=state'], /--read-only and --volatile/);
  fails(['-D', '/a', '-i', '/b.raw'], /--directory= and --image= may not be combined/);
  assert.equal(parse('--read-only', '--volatile=no').options.volatile, 'no');
});

test('values: signals, capabilities, volatile, register, env, console', () => {
  assert.equal(parse('--kill-signal=SIGRTMIN+3').options.killSignal, 37);
  assert.equal(parse('--kill-signal=TERM').options.killSignal, 15);
  assert.equal(parse('--kill-signal=9').options.killSignal, 9);
  assert.equal(parse('--capability=CAP_NET_ADMIN,sys_time').options.capabilityAdd, (1n << 12n) | (1n << 25n));
  assert.equal(parse('--drop-capability=all').options.capabilityDrop, (1n << 41n) - 1n);
  assert.equal(parse('--volatile').options.volatile, 'yes');
  assert.equal(parse('--volatile=state').options.volatile, 'state');
  assert.equal(parse('--volatile=false').options.volatile, 'no');
  assert.equal(parse('--register=auto').options.register, 'auto');
  assert.equal(parse('--register=0').options.register, 'no');
  assert.equal(parse('--settings=override').settings, 'override');
  assert.equal(parse('--settings=off').settings, 'no');
  assert.equal(parse('-P').options.console, 'pipe');
  assert.equal(parse('-j').options.linkJournal, 'try-guest');
  assert.equal(parse('--no-new-privileges').options.noNewPrivileges, true);
  assert.equal(parse('--no-new-privileges=no').options.noNewPrivileges, false);
  process.env['MCTL_TEST_INHERIT'] = 'v1';
  assert.deepEqual(parse('-E', 'A=1', '-E', 'MCTL_TEST_INHERIT', '-E', 'MCTL_TEST_UNSET_X', '--setenv=B=x=y').options.environment, ['A=1', 'MCTL_TEST_INHERIT=v1', 'B=x=y']);
});

test('bind syntax: escaping, defaults, options, container-relative sources', () => {
  assert.deepEqual(splitEscaped('a\\:b:c', ':'), ['a:b', 'c']);
  assert.deepEqual(splitEscaped('a:b:c:d', ':', 3), ['a', 'b', 'c:d']);
  assert.deepEqual(parseBind('/srv/x', false), { kind: 'bind', source: { path: '/srv/x', inContainer: false }, destination: '/srv/x', readOnly: false, recursive: true, idmap: 'no' });
  assert.deepEqual(parseBind('/a\\:b:/c//d/:norbind', true), { kind: 'bind', source: { path: '/a:b', inContainer: false }, destination: '/c/d', readOnly: true, recursive: false, idmap: 'no' });
  const rel = parseBind('+/var/x:/y', false);
  assert.ok(rel.kind === 'bind' && rel.source?.inContainer && rel.source.path === '/var/x');
  const empty = parseBind(':/scratch', false);
  assert.ok(empty.kind === 'bind' && empty.source === null && empty.destination === '/scratch');
  assert.throws(() => parseBind('/a/../b', false), /'\.\.'/);
});

test('tmpfs and overlay syntax', () => {
  assert.deepEqual(parseTmpfs('/t'), { kind: 'tmpfs', destination: '/t', options: 'mode=0755' });
  assert.deepEqual(parseTmpfs('/t:size=1M,mode=1777'), { kind: 'tmpfs', destination: '/t', options: 'size=1M,mode=1777' });
  assert.deepEqual(parseOverlay('/l:/d', false), { kind: 'overlay', lower: [{ path: '/l', inContainer: false }], upper: null, destination: '/d', readOnly: false });
  const o = parseOverlay('/l1:/l2:/u:/d', false);
  assert.ok(o.kind === 'overlay' && o.lower.length === 2 && o.upper?.path === '/u');
  const t = parseOverlay('/l1:/l2::/d', false);
  assert.ok(t.kind === 'overlay' && t.lower.length === 2 && t.upper === null);
  const ro = parseOverlay('/l1:/l2:/d', true);
  assert.ok(ro.kind === 'overlay' && ro.lower.length === 2 && ro.upper === null && ro.readOnly);
});

test('credentials: C escapes, files, size cap', () => {
  assert.deepEqual(cUnescape('a\\nb\\x41\\101\\\\'), Buffer.from('a\nbAA\\'));
  const c = parse('--set-credential=pw:se:cret\\n').options.credentials!;
  assert.equal(c[0]!.id, 'pw');
  assert.equal(c[0]!.data.toString(), 'se:cret\n');
  fails(['--set-credential=x:\\q'], /invalid escape/);
  const dir = mkdtempSync(join(tmpdir(), 'mctl-nspawn-opt-'));
  try {
    writeFileSync(join(dir, 'key'), Buffer.from([0, 1, 2, 255]));
    const l = parse(`--load-credential=k:${join(dir, 'key')}`).options.credentials!;
    assert.deepEqual(l[0]!.data, Buffer.from([0, 1, 2, 255]));
    fails([`--load-credential=k:${join(dir, 'missing')}`], /cannot read .*missing: ENOENT/);
    writeFileSync(join(dir, 'big'), Buffer.alloc(700 * 1024));
    fails([`--load-credential=a:${join(dir, 'big')}`, `--load-credential=b:${join(dir, 'big')}`], /exceed 1 MiB/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(parseId128('01234567-89ab-cdef-0123-456789abcdef'), '0123456789abcdef0123456789abcdef');
});
