/* mctl-nsexec MODE ...: the native half of mctl-nspawn (see nsexec.h, docs/nspawn-internals.md).
 *
 *   run CONFIG -- ARGV            clone the container and supervise it (no hooks to run)
 *   prepare CONFIG -- ARGV        clone the container as a sibling (CLONE_PARENT: a child of the
 *                                 Node launcher), write its id maps, print "PID FD BUSFD NAME"
 *                                 and exit; the child waits for GO on its socket end FD (with
 *                                 "bus ADDRESS" it also holds a bus connection BUSFD whose unique
 *                                 name NAME becomes the scope's Controller=; -1 and "-" if none)
 *   supervise PID FD CONFIG -- ARGV   (after the launcher execve()d into us, same PID) take the
 *                                 socket end FD (and "bus-fd BUSFD") out of PID with pidfd_getfd,
 *                                 place the cgroup, send GO and supervise */
#define _GNU_SOURCE
#include "nsexec.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

struct clone_arg {
	const struct config *c;
	int sock;
	int keep_parent_end;
};

static int child_entry(void *p)
{
	struct clone_arg *a = p;
	child_parent_end = a->keep_parent_end;
	child_main(a->c, a->sock);
}

static void write_id_maps(const struct config *c, pid_t pid)
{
	char path[64], map[64];
	snprintf(map, sizeof(map), "0 %lu %lu\n", c->uid_shift, c->uid_range);
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	if (write_file(path, map) < 0)
		die("failed to write the uid map of the container: %s", strerror(errno));
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
	if (write_file(path, map) < 0)
		die("failed to write the gid map of the container: %s", strerror(errno));
}

static pid_t clone_container(const struct config *c, int sock, int parent_end, bool as_sibling)
{
	static struct clone_arg arg;
	arg.c = c;
	arg.sock = sock;
	arg.keep_parent_end = parent_end;
	size_t stack_size = 256 * 1024;
	char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD;
	if (c->private_network)
		flags |= CLONE_NEWNET;
	if (c->userns)
		flags |= CLONE_NEWUSER;
	if (as_sibling)
		flags |= CLONE_PARENT;
	pid_t pid = clone(child_entry, stack + stack_size, flags, &arg);
	if (pid < 0)
		die("failed to create the container's namespaces: %s", strerror(errno));
	if (c->userns)
		write_id_maps(c, pid);
	return pid;
}

static void block_signals(void)
{
	sigset_t s;
	sigemptyset(&s);
	int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGWINCH, SIGQUIT };
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&s, sigs[i]);
	sigprocmask(SIG_BLOCK, &s, NULL);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("internal: mctl-nsexec needs a mode");
	const char *mode = argv[1];
	static struct config c;
	int sp[2];
	if (!strcmp(mode, "run")) {
		config_parse(&c, argc - 2, argv + 2);
		block_signals();
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
			die("socketpair: %s", strerror(errno));
		userns_before_clone(&c);
		pid_t pid = clone_container(&c, sp[1], sp[0], false);
		userns_after_clone(&c, pid);
		close(sp[1]);
		supervise(&c, pid, sp[0], -1);
	}
	if (!strcmp(mode, "prepare")) {
		config_parse(&c, argc - 2, argv + 2);
		/* "PID FD" goes to fd 3 (a pipe the launcher reads): our stdio is the container's */
		child_report_fd = 3;
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
			die("socketpair: %s", strerror(errno));
		/* a bus connection for the scope's Controller=, opened now so its unique name can be
		 * registered; the child holds it (like sp[0]) until the supervisor has taken it */
		char unique[256] = "-";
		if (*c.bus_address && (child_bus_fd = bus_open(c.bus_address, unique, sizeof(unique))) < 0)
			strcpy(unique, "-");
		/* the child keeps sp[0] open (it is a copy of ours) until the supervisor has taken it */
		userns_before_clone(&c);
		pid_t pid = clone_container(&c, sp[1], sp[0], true);
		userns_after_clone(&c, pid);
		dprintf(3, "%d %d %d %s\n", (int)pid, sp[0], child_bus_fd, unique);
		_exit(0);
	}
	if (!strcmp(mode, "supervise") && argc >= 4) {
		pid_t pid = (pid_t)atoi(argv[2]);
		int fd = atoi(argv[3]);
		config_parse(&c, argc - 4, argv + 4);
		userns_adopt(&c, pid);
		block_signals();
		int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (pidfd < 0)
			die("the container process %d is gone: %s", (int)pid, strerror(errno));
		int sock = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
		if (sock < 0)
			die("failed to take over the container's socket: %s", strerror(errno));
		int bus = c.bus_fd >= 0 ? (int)syscall(SYS_pidfd_getfd, pidfd, c.bus_fd, 0) : -1;
		if (c.bus_fd >= 0 && bus < 0)
			warnx_("cannot take over the bus connection (stop requests become plain kills): %s", strerror(errno));
		close(pidfd);
		supervise(&c, pid, sock, bus);
	}
	if (!strcmp(mode, "idmap-probe") && argc == 3)
		return userns_idmap_probe(argv[2]);
	die("internal: unknown mode '%s'", mode);
}
