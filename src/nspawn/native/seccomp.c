/* The default seccomp filter, equivalent to systemd-nspawn 252's (raw classic BPF, no libseccomp):
 * an allow-list of system call groups, some of them only with the capability nspawn ties them
 * to (@clock with CAP_SYS_TIME, ptrace with CAP_SYS_PTRACE, reboot with CAP_SYS_BOOT, …);
 * every other system call systemd 252 knows (@known) fails with EPERM, one it does not know (a
 * newer kernel's) with ENOSYS, so that libc falls back as it would on an older kernel; and
 * socket(AF_NETLINK, *, NETLINK_AUDIT) fails with EAFNOSUPPORT (audit is not namespaced; that
 * errno tells audit userspace that audit is off). The tables are generated (seccomp-table.h,
 * seccomp-gen.py) for x86-64 and i386; x32 system calls get ENOSYS (as without x32). Other
 * architectures keep a blocklist of the dangerous calls.
 *
 * The program checks the system call number in chunks of 32: one range test per chunk, then a
 * bit test against the chunk's allowed and known masks, so a call costs at most ~15 range tests
 * instead of a walk over 400 comparisons.
 *
 * --suppress-sync adds nspawn's rules in front (as systemd-nspawn 252 answers them, measured):
 * sync and msync succeed without doing anything, and so do fsync, fdatasync, syncfs and
 * sync_file_range on a file descriptor number 0..INT_MAX (others reach the kernel: EBADF);
 * open/openat with O_SYNC or O_DSYNC fail with EINVAL; openat2 (whose flags live in a struct a
 * filter cannot read) with ENOSYS, so libc falls back to openat. */
#include "nsexec.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define RET_ERRNO(e) (SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
#define MAX_PROG 1024

struct prog {
	struct sock_filter f[MAX_PROG];
	size_t n;
	bool overflow;
};

static size_t emit(struct prog *p, struct sock_filter insn)
{
	if (p->n >= MAX_PROG) {
		p->overflow = true;
		return p->n;
	}
	p->f[p->n] = insn;
	return p->n++;
}
#define JUMP(p, code, k, jt, jf) emit((p), (struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))
#define STMT(p, code, k) emit((p), (struct sock_filter)BPF_STMT((code), (k)))
#define LOAD_NR(p) STMT((p), BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))

#if defined(__x86_64__)
#include "seccomp-table.h"

#define CHUNKS 16 /* 512 system call numbers: more than either table has */

/* socket(AF_NETLINK, *, NETLINK_AUDIT) → EAFNOSUPPORT; leaves the system call number in A. */
static void audit_socket_rule(struct prog *p, unsigned socket_nr)
{
	JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, socket_nr, 0, 5);
	STMT(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
	JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 0, 2);
	STMT(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2]));
	JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, NETLINK_AUDIT, 2, 0);
	LOAD_NR(p);
	JUMP(p, BPF_JMP | BPF_JA, 1, 0, 0); /* skip the return below */
	STMT(p, BPF_RET | BPF_K, RET_ERRNO(EAFNOSUPPORT));
}

/* One ABI's system call numbers for --suppress-sync. */
struct sync_calls {
	unsigned no_ops[2]; /* sync msync */
	unsigned fd_no_ops[4]; /* fsync fdatasync syncfs sync_file_range */
	unsigned open, openat, openat2;
};
static const struct sync_calls sync_x86_64 = { { 162, 26 }, { 74, 75, 306, 277 }, 2, 257, 437 };
static const struct sync_calls sync_i386 = { { 36, 144 }, { 118, 148, 344, 314 }, 5, 295, 437 };

/* O_DSYNC (also part of O_SYNC) in flags argument ARG → EINVAL; leaves the number in A. */
static void sync_open_rule(struct prog *p, unsigned nr, unsigned arg)
{
	JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 4);
	STMT(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]) + 8 * arg);
	JUMP(p, BPF_JMP | BPF_JSET | BPF_K, 010000 /* O_DSYNC */, 0, 1);
	STMT(p, BPF_RET | BPF_K, RET_ERRNO(EINVAL));
	LOAD_NR(p);
}

/* --suppress-sync, the number already in A (and left there). */
static void suppress_sync_rules(struct prog *p, const struct sync_calls *s)
{
	for (size_t i = 0; i < N(s->no_ops); i++) {
		JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, s->no_ops[i], 0, 1);
		STMT(p, BPF_RET | BPF_K, RET_ERRNO(0)); /* "succeeds" */
	}
	for (size_t i = 0; i < N(s->fd_no_ops); i++) {
		/* only for a descriptor number 0..INT_MAX (the 64-bit argument), as nspawn */
		JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, s->fd_no_ops[i], 0, 6);
		STMT(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]) + 4);
		JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 3);
		STMT(p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
		JUMP(p, BPF_JMP | BPF_JGE | BPF_K, 0x80000000u, 1, 0);
		STMT(p, BPF_RET | BPF_K, RET_ERRNO(0));
		LOAD_NR(p);
	}
	sync_open_rule(p, s->open, 1);
	sync_open_rule(p, s->openat, 2);
	JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, s->openat2, 0, 1);
	STMT(p, BPF_RET | BPF_K, RET_ERRNO(ENOSYS));
}

static int by_name(const void *key, const void *entry)
{
	return strcmp(key, ((const struct syscall_name *)entry)->name);
}

/* Set NAME's bit in BITS for the ABI (i386 or x86-64); a call that ABI lacks is skipped. */
static void mark_call(uint32_t *bits, const char *name, bool i386)
{
	const struct syscall_name *n = bsearch(name, syscall_names, N(syscall_names), sizeof(syscall_names[0]), by_name);
	int nr = !n ? -1 : i386 ? n->i386 : n->x86_64;
	if (nr >= 0 && nr < CHUNKS * 32)
		bits[nr / 32] |= 1u << (nr % 32);
}

static const struct syscall_group *find_group(const char *name)
{
	for (size_t i = 0; i < N(syscall_groups); i++)
		if (!strcmp(syscall_groups[i].name, name))
			return &syscall_groups[i];
	return NULL;
}

/* --system-call-filter's items (names and @groups) as bits of one ABI. */
static void mark_items(uint32_t *bits, const char *const *items, size_t n, bool i386)
{
	for (size_t i = 0; i < n; i++) {
		const struct syscall_group *g = items[i][0] == '@' ? find_group(items[i]) : NULL;
		if (!g) {
			mark_call(bits, items[i], i386);
			continue;
		}
		for (const char *m = g->members; *m;) {
			size_t len = strcspn(m, " ");
			char name[64];
			snprintf(name, sizeof(name), "%.*s", (int)len, m);
			mark_call(bits, name, i386);
			m += len + (m[len] == ' ');
		}
	}
}

bool seccomp_filter_item_known(const char *item)
{
	if (item[0] == '@')
		return find_group(item) != NULL;
	if (bsearch(item, syscall_names, N(syscall_names), sizeof(syscall_names[0]), by_name))
		return true;
	/* another architecture's call (systemd's @known has them all): nothing to do here */
	const struct syscall_group *known = find_group("@known");
	size_t len = strlen(item);
	for (const char *m = known ? known->members : ""; (m = strstr(m, item)); m += len)
		if ((m == known->members || m[-1] == ' ') && (m[len] == ' ' || m[len] == '\0'))
			return true;
	return false;
}

/* The allow/known classification of one ABI, the number already in A: nspawn's allow-list
 * (capability-gated entries with their capability), plus --system-call-filter's additions, minus
 * its removals (which win). */
static void classify(struct prog *p, const struct allowed_syscall *allowed, size_t n_allowed, const unsigned short *known,
		     size_t n_known, const struct config *c, bool i386)
{
	uint32_t allow[CHUNKS] = { 0 }, knows[CHUNKS] = { 0 }, deny[CHUNKS] = { 0 };
	for (size_t i = 0; i < n_allowed; i++)
		if (allowed[i].cap == 255 || (c->caps_keep >> allowed[i].cap & 1))
			allow[allowed[i].nr / 32] |= 1u << (allowed[i].nr % 32);
	mark_items(allow, c->syscall_allow, c->n_syscall_allow, i386);
	mark_items(deny, c->syscall_deny, c->n_syscall_deny, i386);
	for (unsigned k = 0; k < CHUNKS; k++)
		allow[k] &= ~deny[k];
	for (size_t i = 0; i < n_known; i++)
		knows[known[i] / 32] |= 1u << (known[i] % 32);
	for (unsigned c = 0; c < CHUNKS; c++) {
		/* 14 instructions per chunk; A holds the number whenever a chunk starts */
		JUMP(p, BPF_JMP | BPF_JGE | BPF_K, (c + 1) * 32, 13, 0);
		STMT(p, BPF_ALU | BPF_SUB | BPF_K, c * 32);
		STMT(p, BPF_MISC | BPF_TAX, 0);
		STMT(p, BPF_LD | BPF_IMM, 1);
		STMT(p, BPF_ALU | BPF_LSH | BPF_X, 0);
		STMT(p, BPF_ST, 0);
		STMT(p, BPF_ALU | BPF_AND | BPF_K, allow[c]);
		JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0);
		STMT(p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
		STMT(p, BPF_LD | BPF_MEM, 0);
		STMT(p, BPF_ALU | BPF_AND | BPF_K, knows[c]);
		JUMP(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0);
		STMT(p, BPF_RET | BPF_K, RET_ERRNO(EPERM));
		STMT(p, BPF_RET | BPF_K, RET_ERRNO(ENOSYS));
	}
	STMT(p, BPF_RET | BPF_K, RET_ERRNO(ENOSYS));
}

int seccomp_install_default(const struct config *c)
{
	static struct prog p;
	p.n = 0;
	STMT(&p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	JUMP(&p, BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	/* to the i386 part: an unconditional jump takes a 32-bit offset (conditional ones 8 bits) */
	size_t to_i386 = JUMP(&p, BPF_JMP | BPF_JA, 0, 0, 0); /* k patched */
	LOAD_NR(&p);
	/* x32 shares the arch value and sets bit 30 of the number: answered as by a kernel without
	 * x32 (what nspawn's container sees on such a kernel, which Debian's is) */
	JUMP(&p, BPF_JMP | BPF_JSET | BPF_K, 0x40000000u, 0, 1);
	STMT(&p, BPF_RET | BPF_K, RET_ERRNO(ENOSYS));
	audit_socket_rule(&p, SOCKET_X86_64);
	if (c->suppress_sync)
		suppress_sync_rules(&p, &sync_x86_64);
	classify(&p, allowed_x86_64, N(allowed_x86_64), known_x86_64, N(known_x86_64), c, false);
	p.f[to_i386].k = (uint32_t)(p.n - to_i386 - 1);
	STMT(&p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	JUMP(&p, BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_I386, 1, 0);
	STMT(&p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW); /* no other ABI can run here */
	LOAD_NR(&p);
	audit_socket_rule(&p, SOCKET_I386);
	if (c->suppress_sync)
		suppress_sync_rules(&p, &sync_i386);
	classify(&p, allowed_i386, N(allowed_i386), known_i386, N(known_i386), c, true);
	if (p.overflow)
		return errno = E2BIG, -1;
	struct sock_fprog fprog = { .len = (unsigned short)p.n, .filter = p.f };
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
}

#else
/* Other architectures: EPERM for the calls nspawn's allow-list leaves out and that matter. */
#if defined(__aarch64__)
static const unsigned blocked_native[] = {
	104 /* kexec_load */, 294 /* kexec_file_load */, 105 /* init_module */, 273 /* finit_module */,
	106 /* delete_module */, 224 /* swapon */, 225 /* swapoff */, 265 /* open_by_handle_at */,
	219 /* keyctl */, 217 /* add_key */, 218 /* request_key */, 89 /* acct */, 116 /* syslog */,
	18 /* lookup_dcookie */,
};
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#endif

bool seccomp_filter_item_known(const char *item)
{
	(void)item;
	return false; /* no tables here: the front end refuses --system-call-filter on these architectures */
}

int seccomp_install_default(const struct config *c)
{
	if (c->suppress_sync || c->n_syscall_allow || c->n_syscall_deny)
		return errno = EOPNOTSUPP, -1; /* the front end refuses them on these architectures */
	static struct prog p;
	p.n = 0;
	STMT(&p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	JUMP(&p, BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0);
	STMT(&p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	LOAD_NR(&p);
	for (size_t i = 0; i < N(blocked_native); i++) {
		JUMP(&p, BPF_JMP | BPF_JEQ | BPF_K, blocked_native[i], 0, 1);
		STMT(&p, BPF_RET | BPF_K, RET_ERRNO(EPERM));
	}
	STMT(&p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog fprog = { .len = (unsigned short)p.n, .filter = p.f };
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
}
#endif
