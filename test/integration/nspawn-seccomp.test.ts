// The default seccomp filter is systemd-nspawn 252's allow-list: a static probe (compiled here)
// makes raw system calls in a container and reports the errno of each — allowed calls reach the
// kernel, known-but-not-allowed ones get EPERM, ones systemd 252 does not know get ENOSYS, audit
// netlink sockets EAFNOSUPPORT, capability-gated groups follow the bounding set, the i386 ABI
// (int 0x80) is filtered as well. Where stock systemd-nspawn is installed, it runs the same probe
// on the same tree and must give the same answers (two documented differences excepted).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { debianTree } from '../helpers/images.js';

const NSPAWN = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const STOCK = '/usr/bin/systemd-nspawn';

const PROBE_C = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
/* probe NAME NR A0 A1 A2 ... (NR "iN": the i386 ABI through int 0x80); prints "NAME ok|ERRNAME" */
static long i386_call(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return ret;
}
int main(int argc, char **argv)
{
	for (int i = 1; i + 4 < argc; i += 5) {
		long a = strtol(argv[i + 2], NULL, 0), b = strtol(argv[i + 3], NULL, 0), c = strtol(argv[i + 4], NULL, 0);
		int err = 0;
		if (argv[i + 1][0] == 'i') {
			long r = i386_call(strtol(argv[i + 1] + 1, NULL, 0), a, b, c);
			if (r < 0 && r > -4096) err = (int)-r;
		} else if (syscall(strtol(argv[i + 1], NULL, 0), a, b, c, 0, 0) < 0)
			err = errno;
		printf("%s %s\n", argv[i], err ? strerrorname_np(err) : "ok");
	}
	return 0;
}
`;

// name, number (x86-64, or i386 with "i"), three arguments; chosen so that without a filter the
// kernel answers with something other than the filter's errno (EINVAL, EFAULT, ESRCH, ok).
const CALLS: Array<[string, string, string, string, string]> = [
  ['getpid', '39', '0', '0', '0'],
  ['unshare-none', '272', '0', '0', '0'], // @process
  ['keyctl', '250', '0', '0', '0'], // @keyring: excluded
  ['bpf', '321', '-1', '0', '0'], // excluded
  ['perf_event_open', '298', '0', '0', '0'], // @debug: not in the list
  ['settimeofday-null', '164', '0', '0', '0'], // @clock: only with CAP_SYS_TIME
  ['ptrace-bad', '101', '-1', '0', '0'], // only with CAP_SYS_PTRACE (kept by default: ESRCH)
  ['unknown-470', '470', '0', '0', '0'], // beyond systemd 252's @known: ENOSYS
  ['socket-audit', '41', '16', '3', '9'], // AF_NETLINK, SOCK_RAW, NETLINK_AUDIT
  ['socket-route', '41', '16', '3', '0'], // NETLINK_ROUTE is fine
  ['i386-getpid', 'i20', '0', '0', '0'],
  ['i386-keyctl', 'i288', '0', '0', '0'],
  ['i386-unknown', 'i470', '0', '0', '0'],
  ['i386-socket-audit', 'i359', '16', '3', '9'],
  ['pidfd_getfd-bad', '438', '-1', '0', '0'], // mctl's addition (with CAP_SYS_PTRACE): EBADF from the kernel
];

const EXPECTED = [
  'getpid ok', 'unshare-none ok', 'keyctl EPERM', 'bpf EPERM', 'perf_event_open EPERM', 'settimeofday-null EPERM', 'ptrace-bad ESRCH',
  'unknown-470 ENOSYS', 'socket-audit EAFNOSUPPORT', 'socket-route ok', 'i386-getpid ok', 'i386-keyctl EPERM', 'i386-unknown ENOSYS',
  'i386-socket-audit EAFNOSUPPORT', 'pidfd_getfd-bad EBADF',
];

let work = '';
let probe = '';
let tree = '';

before(() => {
  tree = debianTree();
  work = mkdtempSync('/tmp/mctl-nspawn-seccomp-');
  writeFileSync(join(work, 'probe.c'), PROBE_C);
  probe = join(work, 'probe');
  const cc = spawnSync(process.env['CC'] || 'cc', ['-static', '-O1', '-o', probe, join(work, 'probe.c')], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `compiling the probe: ${cc.stderr}`);
});

after(() => rmSync(work, { recursive: true, force: true }));

function runProbe(launcher: string, extra: string[], calls = CALLS): string[] {
  const base = launcher === STOCK ? ['--keep-unit'] : [];
  // bound onto /mnt, which the tree has: a bind onto a new path would create it in the cached tree
  const r = spawnSync(launcher, ['-q', '--register=no', ...base, '--read-only', '--pipe', '-D', tree, `--bind-ro=${work}:/mnt`, ...extra, '/mnt/probe', ...calls.flat()], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n');
}

test("the default filter answers as nspawn 252's allow-list does", () => {
  const host = spawnSync(probe, CALLS.flat(), { encoding: 'utf8' }).stdout.trim().split('\n');
  assert.notDeepEqual(host, EXPECTED, 'without a filter the kernel answers differently (the probe can tell)');
  assert.deepEqual(runProbe(NSPAWN, []), EXPECTED);
  assert.ok(!existsSync(join(tree, 'probe')) && !existsSync(join(tree, 'mnt/probe')), 'the cached tree is not written');
});

test('capability-gated groups follow the bounding set: @clock with CAP_SYS_TIME, ptrace without CAP_SYS_PTRACE', () => {
  const calls = CALLS.filter(([n]) => ['settimeofday-null', 'ptrace-bad', 'pidfd_getfd-bad'].includes(n));
  assert.deepEqual(runProbe(NSPAWN, ['--capability=CAP_SYS_TIME', '--drop-capability=CAP_SYS_PTRACE'], calls), ['settimeofday-null ok', 'ptrace-bad EPERM', 'pidfd_getfd-bad EPERM']);
});

// --suppress-sync: calls whose unfiltered answer differs from the suppressed one (a descriptor
// that is not open, a bad address, a zero-sized openat2: EBADF, ENOMEM, EFAULT, EINVAL), with
// nspawn 252's answers under --suppress-sync=yes.
const SYNC_CALLS: Array<[string, string, string, string, string]> = [
  ['fsync-999', '74', '999', '0', '0'], // no such descriptor: EBADF, unless suppressed
  ['fsync-negative', '74', '-1', '0', '0'], // outside 0..INT_MAX: never suppressed (as nspawn)
  ['fdatasync-999', '75', '999', '0', '0'],
  ['syncfs-999', '306', '999', '0', '0'],
  ['sync_file_range-999', '277', '999', '0', '0'],
  ['msync-bad', '26', '0', '4096', '4'],
  ['open-O_DSYNC', '2', '0', '0x1000', '0'], // a NULL path: EFAULT, unless refused first
  ['open-O_SYNC', '2', '0', '0x101000', '0'],
  ['open-plain', '2', '0', '0', '0'],
  ['openat-O_DSYNC', '257', '-100', '0', '0x1000'],
  ['openat2', '437', '-100', '0', '0'],
  ['i386-fsync-999', 'i118', '999', '0', '0'],
  ['i386-open-O_SYNC', 'i5', '0', '0x101000', '0'],
];
const SYNC_SUPPRESSED = [
  'fsync-999 ok', 'fsync-negative EBADF', 'fdatasync-999 ok', 'syncfs-999 ok', 'sync_file_range-999 ok', 'msync-bad ok', 'open-O_DSYNC EINVAL',
  'open-O_SYNC EINVAL', 'open-plain EFAULT', 'openat-O_DSYNC EINVAL', 'openat2 ENOSYS', 'i386-fsync-999 ok', 'i386-open-O_SYNC EINVAL',
];

test('--suppress-sync: sync calls do nothing and succeed, O_SYNC/O_DSYNC opens EINVAL, openat2 ENOSYS (both ABIs)', () => {
  const plain = runProbe(NSPAWN, [], SYNC_CALLS);
  assert.deepEqual(plain, ['fsync-999 EBADF', 'fsync-negative EBADF', 'fdatasync-999 EBADF', 'syncfs-999 EBADF', 'sync_file_range-999 EBADF', 'msync-bad ENOMEM',
    'open-O_DSYNC EFAULT', 'open-O_SYNC EFAULT', 'open-plain EFAULT', 'openat-O_DSYNC EFAULT', 'openat2 EINVAL', 'i386-fsync-999 EBADF', 'i386-open-O_SYNC EFAULT'],
    'without the option, the kernel answers');
  assert.deepEqual(runProbe(NSPAWN, ['--suppress-sync=yes'], SYNC_CALLS), SYNC_SUPPRESSED);
  assert.deepEqual(runProbe(NSPAWN, ['--suppress-sync=no'], SYNC_CALLS), plain);
  if (existsSync(STOCK)) {
    // nspawn's i386 rules differ (libseccomp): compared on the x86-64 ABI
    const x86_64 = SYNC_CALLS.filter(([n]) => !n.startsWith('i386'));
    assert.deepEqual(runProbe(NSPAWN, ['--suppress-sync=yes'], x86_64), runProbe(STOCK, ['--suppress-sync=yes'], x86_64));
  }
});

test('--system-call-filter adds names and @groups to the allow-list; with ~ it removes them, and removal wins', () => {
  const calls = CALLS.filter(([n]) => ['getpid', 'perf_event_open', 'keyctl', 'i386-keyctl'].includes(n));
  const answers = (opts: string[]) => runProbe(NSPAWN, opts, calls);
  assert.deepEqual(answers([]), ['getpid ok', 'keyctl EPERM', 'perf_event_open EPERM', 'i386-keyctl EPERM']);
  // perf_event_open(NULL): EFAULT from the kernel once allowed; keyctl(0, 0, 0): EINVAL (both ABIs)
  assert.deepEqual(answers(['--system-call-filter=perf_event_open keyctl']), ['getpid ok', 'keyctl EINVAL', 'perf_event_open EFAULT', 'i386-keyctl EINVAL']);
  assert.deepEqual(answers(['--system-call-filter=@debug']), ['getpid ok', 'keyctl EPERM', 'perf_event_open EFAULT', 'i386-keyctl EPERM']);
  assert.deepEqual(answers(['--system-call-filter=~getpid']), ['getpid EPERM', 'keyctl EPERM', 'perf_event_open EPERM', 'i386-keyctl EPERM']);
  assert.deepEqual(answers(['--system-call-filter=keyctl', '--system-call-filter=~keyctl @debug']), ['getpid ok', 'keyctl EPERM', 'perf_event_open EPERM', 'i386-keyctl EPERM']);
  assert.deepEqual(answers(['--system-call-filter=cacheflush']), answers([]), 'another architecture\'s call is accepted and changes nothing');
  if (existsSync(STOCK)) {
    for (const opts of [['--system-call-filter=perf_event_open keyctl'], ['--system-call-filter=@debug'], ['--system-call-filter=~getpid'], ['--system-call-filter=keyctl', '--system-call-filter=~keyctl']]) {
      const x86_64 = calls.filter(([n]) => !n.startsWith('i386'));
      assert.deepEqual(runProbe(NSPAWN, opts, x86_64), runProbe(STOCK, opts, x86_64), opts.join(' '));
    }
  }
  // unknown names (of no architecture) and groups: one line, exit 1 (nspawn ignores them)
  for (const [opt, msg] of [
    ['--system-call-filter=nosuchcall', /^mctl-nspawn: --system-call-filter: unknown system call 'nosuchcall'$/],
    ['--system-call-filter=@nosuchgroup', /^mctl-nspawn: --system-call-filter: unknown system call group '@nosuchgroup'$/],
    ['--system-call-filter=bad/name', /^mctl-nspawn: --system-call-filter: invalid system call or group name 'bad\/name'$/],
  ] as Array<[string, RegExp]>) {
    const r = spawnSync(NSPAWN, ['-q', '--register=no', '--read-only', '--pipe', '-D', tree, opt, '/bin/true'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr.trim(), msg);
  }
});

test('side by side with stock systemd-nspawn 252 on the same tree', { skip: !existsSync(STOCK) && 'systemd-nspawn is not installed' }, () => {
  const stock = runProbe(STOCK, []);
  const ours = runProbe(NSPAWN, []);
  // Documented differences: nspawn's audit rule misses the i386 socket() (libseccomp filters
  // socketcall there), ours covers both ABIs; pidfd_getfd is allowed with CAP_SYS_PTRACE (so
  // mctl-nspawn runs nested). Everything else must be identical.
  const differs = (line: string) => line.startsWith('i386-socket') || line.startsWith('pidfd_getfd');
  assert.deepEqual(ours.filter((l) => !differs(l)), stock.filter((l) => !differs(l)));
  const gated = ['--capability=CAP_SYS_TIME', '--drop-capability=CAP_SYS_PTRACE'];
  assert.deepEqual(runProbe(NSPAWN, gated).filter((l) => !differs(l)), runProbe(STOCK, gated).filter((l) => !differs(l)));
});
