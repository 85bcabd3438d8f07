// Pure logic of the runtime: helper argument encoding, PID 1's environment, user lookup in the
// container's own passwd/group, UUID form, capability sets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { helperArgs } from '../../src/nspawn/launch.js';
import { containerEnvironment, formatUuid, resolveUser, ROOT_USER } from '../../src/nspawn/payload-env.js';
import { capabilityMask, capabilityNumber, defaultBoundingSet, capabilityName } from '../../src/nspawn/capabilities.js';
import type { ContainerSpec } from '../../src/nspawn/spec.js';
import { UserError } from '../../src/common/errors.js';

function spec(overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    root: '/srv/t',
    readOnlyRoot: false,
    machineName: 'box',
    hostname: 'box.example',
    uuid: '0123456789ABCDEF0123456789abcdef',
    payload: { kind: 'command', argv: ['/bin/echo', 'a b', ''], asPid2: false, user: null, chdir: null, env: { FOO: 'bar', PATH: '/x' } },
    console: 'pipe',
    killSignal: 9,
    namespaces: { privateNetwork: false, userNamespace: null },
    mounts: [],
    capabilities: { bounding: [0, 1, 21], ambient: [] },
    noNewPrivileges: true,
    seccomp: true,
    hostFiles: [],
    notifyReady: false,
    cgroup: null,
    containerManager: 'mctl',
    quiet: false,
    ...overrides,
  };
}

/** The value(s) following every occurrence of KEY in the helper arguments. */
function values(args: string[], key: string, arity = 1): string[][] {
  const end = args.indexOf('--');
  const out: string[][] = [];
  for (let i = 0; i < end; i++) if (args[i] === key) out.push(args.slice(i + 1, i + 1 + arity));
  return out;
}

test('nspawn\'s default bounding set is CapBnd fdecafff (+ CAP_NET_ADMIN with a private network)', () => {
  assert.equal(capabilityMask(defaultBoundingSet(false)).toString(16), 'fdecafff');
  assert.equal(capabilityMask(defaultBoundingSet(true)).toString(16), 'fdecbfff');
  assert.equal(capabilityNumber('CAP_SYS_ADMIN'), 21);
  assert.equal(capabilityNumber('net_admin'), 12);
  assert.equal(capabilityNumber('cap_nonsense'), undefined);
  assert.equal(capabilityName(22), 'CAP_SYS_BOOT');
});

test('helper arguments carry the spec; payload argv follows "--" verbatim', () => {
  const args = helperArgs(spec(), ROOT_USER, ['A=1']);
  assert.deepEqual(args.slice(args.indexOf('--') + 1), ['/bin/echo', 'a b', '']);
  assert.deepEqual(values(args, 'root'), [['/srv/t']]);
  assert.deepEqual(values(args, 'uuid'), [['01234567-89ab-cdef-0123-456789abcdef']]);
  assert.deepEqual(values(args, 'caps'), [['200003']]);
  assert.deepEqual(values(args, 'no-new-privs'), [['1']]);
  assert.deepEqual(values(args, 'env'), [['A=1']]);
  assert.deepEqual(values(args, 'userns', 2), []);
  assert.deepEqual(values(args, 'host-file', 5), [['container-manager', '644', '755', 't', 'mctl\n']]);
});

test('helper arguments: user namespace, mounts in order, host files (binary as hex)', () => {
  const args = helperArgs(
    spec({
      namespaces: { privateNetwork: true, userNamespace: { uidShift: 524288, uidRange: 65536 } },
      mounts: [
        { kind: 'bind', source: '/a', destination: '/b', readOnly: true, recursive: false },
        { kind: 'tmpfs', destination: '/t', options: 'mode=0700' },
        { kind: 'overlay', destination: '/o', lowerDirs: ['/l1', '/l2'], upperDir: '/u', workDir: '/w' },
        { kind: 'overlay', destination: '/e', lowerDirs: ['/l'], upperDir: null, workDir: null, temporaryUpper: true },
        { kind: 'inaccessible', destination: '/secret' },
      ],
      hostFiles: [{ path: 'credentials/key', content: Buffer.from([0, 1, 255]).toString('base64'), mode: 0o400, encoding: 'base64', dirMode: 0o500 }],
    }),
    ROOT_USER,
    [],
  );
  assert.deepEqual(values(args, 'userns', 2), [['524288', '65536']]);
  assert.deepEqual(values(args, 'private-network'), [['1']]);
  const end = args.indexOf('--');
  const kinds = args.slice(0, end).filter((a) => ['bind', 'tmpfs', 'overlay', 'overlay-tmp', 'inaccessible'].includes(a));
  assert.deepEqual(kinds, ['bind', 'tmpfs', 'overlay', 'overlay-tmp', 'inaccessible']);
  assert.deepEqual(values(args, 'bind', 3), [['ro,norec', '/a', '/b']]);
  assert.deepEqual(values(args, 'overlay', 4), [['/o', '/l1:/l2', '/u', '/w']]);
  assert.deepEqual(values(args, 'overlay-tmp', 2), [['/e', '/l']]);
  assert.deepEqual(values(args, 'host-file', 5)[1], ['credentials/key', '400', '500', 'x', '0001ff']);
});

test('host files may not leave /run/host', () => {
  assert.throws(() => helperArgs(spec({ hostFiles: [{ path: '../etc/passwd', content: 'x', mode: 0o644 }] }), ROOT_USER, []), UserError);
  assert.throws(() => helperArgs(spec({ hostFiles: [{ path: '/abs', content: 'x', mode: 0o644 }] }), ROOT_USER, []), UserError);
});

test('PID 1 environment: nspawn defaults, then --setenv wins', () => {
  const env = containerEnvironment(spec(), ROOT_USER, 'xterm');
  assert.ok(env.includes('container=mctl'));
  assert.ok(env.includes('container_uuid=01234567-89ab-cdef-0123-456789abcdef'));
  assert.ok(env.includes('HOME=/root'));
  assert.ok(env.includes('NOTIFY_SOCKET=/run/host/notify'));
  assert.ok(env.includes('FOO=bar'));
  assert.ok(env.includes('PATH=/x'));
  assert.equal(env.filter((e) => e.startsWith('PATH=')).length, 1);
  const tty = containerEnvironment(spec({ console: 'interactive' }), ROOT_USER, undefined);
  assert.ok(tty.includes('TERM=vt220'));
});

const passwd = 'root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/zsh\nbad line\n';
const group = 'root:x:0:\nalice:x:1000:\naudio:x:29:alice,bob\nvideo:x:44:bob\n';

test('users come from the container\'s passwd and group files', () => {
  assert.deepEqual(resolveUser('alice', passwd, group), { uid: 1000, gid: 1000, groups: [29], name: 'alice', home: '/home/alice', shell: '/bin/zsh' });
  assert.equal(resolveUser('1000', passwd, group).name, 'alice');
  assert.equal(resolveUser(null, passwd, group).uid, 0);
  assert.deepEqual(resolveUser('4242', null, null), { uid: 4242, gid: 4242, groups: [], name: '4242', home: '/', shell: '/bin/sh' });
  assert.throws(() => resolveUser('mallory', passwd, group), /user 'mallory' does not exist in the container/);
});

test('UUIDs are printed in the 8-4-4-4-12 form; anything else is refused', () => {
  assert.equal(formatUuid('0123456789abcdef0123456789abcdef'), '01234567-89ab-cdef-0123-456789abcdef');
  assert.equal(formatUuid('01234567-89ab-cdef-0123-456789abcdef'), '01234567-89ab-cdef-0123-456789abcdef');
  assert.throws(() => formatUuid('xyz'), UserError);
});
