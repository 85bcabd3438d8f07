#!/usr/bin/env python3
# Regenerates seccomp-table.h: systemd-nspawn 252's default seccomp allow-list (the groups and
# single system calls of nspawn-seccomp.c's add_syscall_filters(), each gated by the capability
# nspawn gates it with) and systemd 252's @known set, as system call numbers for x86-64 and
# i386; and every system call name and group, for --system-call-filter. Group contents come from `systemd-analyze syscall-filter` of systemd 252 (Debian
# bookworm), numbers from the kernel's asm/unistd_{64,32}.h. Run on such a host:
#   python3 src/nspawn/native/seccomp-gen.py > src/nspawn/native/seccomp-table.h
import re
import subprocess

CAP = {'SYS_TIME': 25, 'SYS_MODULE': 16, 'SYS_RAWIO': 17, 'IPC_LOCK': 14, 'SYS_PACCT': 20,
       'SYS_PTRACE': 19, 'SYS_BOOT': 22, 'SYSLOG': 34, 'SYS_TTY_CONFIG': 26}
ALLOW = [(None, g) for g in ['@aio', '@basic-io', '@chown', '@default', '@file-system', '@io-event', '@ipc', '@mount',
                              '@network-io', '@process', '@resources', '@setuid', '@signal', '@sync', '@timer']]
ALLOW += [('SYS_TIME', '@clock'), ('SYS_MODULE', '@module'), ('SYS_RAWIO', '@raw-io'), ('IPC_LOCK', '@memlock')]
ALLOW += [(None, s) for s in '''arm_fadvise64_64 brk capget capset copy_file_range fadvise64 fadvise64_64 flock
    get_mempolicy getcpu getpriority getrandom ioctl ioprio_get kcmp madvise mincore mprotect mremap name_to_handle_at
    oldolduname olduname personality readahead readdir remap_file_pages sched_get_priority_max sched_get_priority_min
    sched_getaffinity sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
    sched_yield sendfile sendfile64 setdomainname setfsgid setfsgid32 setfsuid setfsuid32 sethostname setpgid setsid
    splice sysinfo tee umask uname userfaultfd vmsplice'''.split()]
ALLOW += [('SYS_PACCT', 'acct'), ('SYS_PTRACE', 'process_vm_readv'), ('SYS_PTRACE', 'process_vm_writev'),
          ('SYS_PTRACE', 'ptrace'), ('SYS_BOOT', 'reboot'), ('SYSLOG', 'syslog'), ('SYS_TTY_CONFIG', 'vhangup')]
# mctl's one addition: mctl-nspawn's supervisor takes its container over with pidfd_getfd, so
# mctl-nspawn can run inside a container only with it; it needs the same ptrace access to the
# target as ptrace itself, and is gated by the same capability.
ALLOW += [('SYS_PTRACE', 'pidfd_getfd')]


def group(name, seen=None):
    out = subprocess.run(['systemd-analyze', 'syscall-filter', name, '--no-pager'], check=True, capture_output=True, text=True).stdout
    names = []
    for line in out.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        names += group(line) if line.startswith('@') else [line]
    return names


def numbers(header):
    nr = {}
    for m in re.finditer(r'#define __NR_(\w+)\s+(\d+)', open(header).read()):
        nr[m.group(1)] = int(m.group(2))
    return nr


def table(arch, header):
    nr = numbers(header)
    allow = {}
    for cap, item in ALLOW:
        for name in group(item) if item.startswith('@') else [item]:
            if name not in nr:
                continue
            c = 255 if cap is None else CAP[cap]
            # an unconditional entry wins over a capability-gated one
            if c == 255 or nr[name] not in allow:
                allow[nr[name]] = c
    known = sorted({nr[n] for n in group('@known') if n in nr})
    lines = [f'static const struct allowed_syscall allowed_{arch}[] = {{']
    lines += [f'\t{{ {n}, {c} }},' for n, c in sorted(allow.items())]
    lines += ['};', f'static const unsigned short known_{arch}[] = {{']
    for i in range(0, len(known), 16):
        lines.append('\t' + ', '.join(str(k) for k in known[i:i + 16]) + ',')
    lines += ['};', f'#define SOCKET_{arch.upper()} {nr["socket"]}']
    return '\n'.join(lines)


def all_groups():
    out = subprocess.run(['systemd-analyze', 'syscall-filter', '--no-pager'], check=True, capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.startswith('@')]


def names_and_groups(x86_64, i386):
    """--system-call-filter's vocabulary: every system call name with its numbers on both ABIs
    (-1: none there), sorted for bsearch(), and every group of systemd 252, flattened."""
    lines = ['struct syscall_name { const char *name; short x86_64, i386; /* -1: not on that ABI */ };',
             'static const struct syscall_name syscall_names[] = {']
    for name in sorted(set(x86_64) | set(i386)):
        lines.append(f'\t{{ "{name}", {x86_64.get(name, -1)}, {i386.get(name, -1)} }},')
    lines += ['};', 'struct syscall_group { const char *name; const char *members; /* space-separated */ };',
              'static const struct syscall_group syscall_groups[] = {']
    for g in all_groups():
        members = ' '.join(sorted(set(group(g))))
        lines.append(f'\t{{ "{g}", "{members}" }},')
    lines.append('};')
    return '\n'.join(lines)


H64 = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h'
H32 = '/usr/include/x86_64-linux-gnu/asm/unistd_32.h'
print('/* Generated by seccomp-gen.py from systemd 252 (systemd-analyze syscall-filter) and the kernel\'s')
print(' * asm/unistd headers: systemd-nspawn 252\'s default allow-list and @known, and the names and')
print(' * groups --system-call-filter takes. Do not edit. */')
print('struct allowed_syscall { unsigned short nr; unsigned char cap; /* 255: always */ };')
print(table('x86_64', H64))
print(table('i386', H32))
print(names_and_groups(numbers(H64), numbers(H32)))
