/* The default seccomp filter: a blocklist (raw classic BPF, no libseccomp) of the syscalls
 * systemd-nspawn's default filter does not let a container use, answered with EPERM:
 * kexec, kernel modules, swap, open_by_handle_at (the "shocker" escape), the kernel keyring,
 * port I/O, process accounting, syslog, and obsolete calls. Syscalls from the x32 ABI are
 * refused outright, so the blocklist cannot be bypassed through them. i386 has its own numbers. */
#include "nsexec.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>

#if defined(__x86_64__)
static const unsigned blocked_native[] = {
	246 /* kexec_load */, 320 /* kexec_file_load */, 175 /* init_module */, 313 /* finit_module */,
	176 /* delete_module */, 167 /* swapon */, 168 /* swapoff */, 304 /* open_by_handle_at */,
	250 /* keyctl */, 248 /* add_key */, 249 /* request_key */, 172 /* iopl */, 173 /* ioperm */,
	163 /* acct */, 103 /* syslog */, 212 /* lookup_dcookie */, 134 /* uselib */, 156 /* _sysctl */,
	174 /* create_module */, 177 /* get_kernel_syms */, 178 /* query_module */, 180 /* nfsservctl */,
};
static const unsigned blocked_i386[] = {
	283 /* kexec_load */, 128 /* init_module */, 350 /* finit_module */, 129 /* delete_module */,
	87 /* swapon */, 115 /* swapoff */, 342 /* open_by_handle_at */, 288 /* keyctl */,
	286 /* add_key */, 287 /* request_key */, 110 /* iopl */, 101 /* ioperm */, 51 /* acct */,
	103 /* syslog */, 253 /* lookup_dcookie */, 86 /* uselib */, 149 /* _sysctl */,
};
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define X32_BIT 0x40000000u
#elif defined(__aarch64__)
static const unsigned blocked_native[] = {
	104 /* kexec_load */, 294 /* kexec_file_load */, 105 /* init_module */, 273 /* finit_module */,
	106 /* delete_module */, 224 /* swapon */, 225 /* swapoff */, 265 /* open_by_handle_at */,
	219 /* keyctl */, 217 /* add_key */, 218 /* request_key */, 89 /* acct */, 116 /* syslog */,
	18 /* lookup_dcookie */,
};
static const unsigned blocked_i386[] = { 0 };
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#endif

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define ERRNO_EPERM (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

int seccomp_install_default(void)
{
	struct sock_filter prog[160];
	size_t n = 0;
#define EMIT(code, k, jt, jf) (prog[n++] = (struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))
#define STMT(code, k) (prog[n++] = (struct sock_filter)BPF_STMT((code), (k)))
	STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	/* native arch? go on at the native table; else check i386 */
	size_t i386_len = N(blocked_i386) * 2 + 2;
	(void)i386_len;
#if defined(__x86_64__)
	EMIT(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, 1);
	EMIT(BPF_JMP | BPF_JA, 0, 0, 0); /* patched: jump to native section */
	size_t ja_native = n - 1;
	EMIT(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_I386, 1, 0);
	STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW); /* other ABIs are not executable here anyway */
	STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	for (size_t i = 0; i < N(blocked_i386); i++) {
		EMIT(BPF_JMP | BPF_JEQ | BPF_K, blocked_i386[i], 0, 1);
		STMT(BPF_RET | BPF_K, ERRNO_EPERM);
	}
	STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	prog[ja_native].k = (unsigned)(n - ja_native - 1);
	STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	EMIT(BPF_JMP | BPF_JSET | BPF_K, X32_BIT, 0, 1);
	STMT(BPF_RET | BPF_K, ERRNO_EPERM);
#else
	EMIT(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0);
	STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#endif
	for (size_t i = 0; i < N(blocked_native); i++) {
		EMIT(BPF_JMP | BPF_JEQ | BPF_K, blocked_native[i], 0, 1);
		STMT(BPF_RET | BPF_K, ERRNO_EPERM);
	}
	STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog fprog = { .len = (unsigned short)n, .filter = prog };
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
}
