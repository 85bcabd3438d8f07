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
 *                                 place the cgroup, send GO and supervise
 *   net PID CONFIG --             only the network (net-* keys, net.c) for the process PID:
 *                                 prints the host-side ifindices ("1,2" or "-") on fd 3
 * With net-* keys, run makes the network while the child mounts, prepare before it reports
 * (adding the ifindices to its line). */
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
#include <sys/wait.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>
#include <linux/sched.h>
#include <sys/syscall.h>

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

/* clone() the container with FLAGS, started in the cgroup2 directory CGROUP_FD when it is >= 0
 * (clone3's CLONE_INTO_CGROUP: no migration afterwards, see cgroup.c), else where we are. */
static pid_t clone_into(int flags, int cgroup_fd, struct clone_arg *arg)
{
	if (cgroup_fd >= 0) {
		struct clone_args ca = {
			.flags = (unsigned long long)(flags & ~CSIGNAL) | CLONE_INTO_CGROUP,
			/* with CLONE_PARENT the child gets our own exit signal: clone3 wants 0 here */
			.exit_signal = (flags & CLONE_PARENT) ? 0 : (unsigned long long)(flags & CSIGNAL),
			.cgroup = (unsigned long long)cgroup_fd,
		};
		child_cgroup_fd = cgroup_fd;
		pid_t pid = (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
		if (pid == 0)
			child_entry(arg); /* like fork: the child runs on a copy of our stack */
		if (pid > 0 || (errno != ENOSYS && errno != E2BIG && errno != EINVAL && errno != EOPNOTSUPP && errno != EBUSY))
			return pid;
		/* an older kernel, or a cgroup the child cannot start in: the supervisor moves it */
		cgroup_precreate_unused(cgroup_fd);
	}
	size_t stack_size = 256 * 1024;
	char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	return clone(child_entry, stack + stack_size, flags, arg);
}

static pid_t clone_container(const struct config *c, int sock, int parent_end, bool as_sibling)
{
	static struct clone_arg arg;
	arg.c = c;
	arg.sock = sock;
	arg.keep_parent_end = parent_end;
	int flags = CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD;
	if (c->private_network)
		flags |= CLONE_NEWNET;
	if (as_sibling)
		flags |= CLONE_PARENT;
	/* -U: the child's first mount namespace must belong to the host's user namespace, so that the
	 * mounts the builder makes there are locked once the container copies it into one of its own
	 * (see builder_main). A clone with CLONE_NEWUSER|CLONE_NEWNS would give it to the new user
	 * namespace: we unshare it here, as host root, and clone into it without CLONE_NEWNS. */
	int home = -1, home_root = -1, home_cwd = -1;
	if (c->userns) {
		flags |= CLONE_NEWUSER;
		home = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
		home_root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
		home_cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (home < 0 || unshare(CLONE_NEWNS) < 0)
			die("failed to create the container's mount namespace: %s", strerror(errno));
		if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
			die("failed to make / a slave mount: %s", strerror(errno));
	} else {
		flags |= CLONE_NEWNS;
	}
	int cgroup_fd = cgroup_precreate(c);
	pid_t pid = clone_into(flags, cgroup_fd, &arg);
	int err = errno;
	if (pid < 0)
		cgroup_precreate_unused(cgroup_fd);
	if (c->userns) {
		/* back home; setns() resets root and working directory: restore both */
		if (setns(home, CLONE_NEWNS) < 0)
			die("failed to return to our mount namespace: %s", strerror(errno));
		if (home_root >= 0 && (fchdir(home_root) < 0 || chroot(".") < 0))
			warnx_("failed to return to the root directory: %s", strerror(errno));
		if (home_cwd >= 0 && fchdir(home_cwd) < 0)
			warnx_("failed to return to the working directory: %s", strerror(errno));
		close(home);
		if (home_root >= 0)
			close(home_root);
		if (home_cwd >= 0)
			close(home_cwd);
	}
	if (pid < 0)
		die("failed to create the container's namespaces: %s", strerror(err));
	if (c->userns)
		write_id_maps(c, pid);
	return pid;
}

/* -U: fork the builder (child.c) and wait for it; the container waits for GO meanwhile. A
 * failed build has printed its line: the container goes with it. */
static void build_container(const struct config *c, pid_t pid, int chan)
{
	pid_t b = fork();
	if (b < 0) {
		kill(pid, SIGKILL);
		die("fork: %s", strerror(errno));
	}
	if (b == 0)
		builder_main(c, pid, chan);
	int status = 0;
	while (waitpid(b, &status, 0) < 0)
		if (errno != EINTR) {
			kill(pid, SIGKILL);
			die("waitpid: %s", strerror(errno));
		}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		kill(pid, SIGKILL);
		if (child_report_fd < 0)
			waitpid(pid, NULL, 0);
		net_failed();
		_exit(1);
	}
	close(chan);
	close(child_builder_fd);
	child_builder_fd = -1;
}

static int builder_channel(const struct config *c)
{
	if (!c->userns)
		return -1;
	int ch[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ch) < 0)
		die("socketpair: %s", strerror(errno));
	child_builder_fd = ch[1];
	return ch[0];
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
		net_start(&c);
		userns_before_clone(&c);
		int chan = builder_channel(&c);
		pid_t pid = clone_container(&c, sp[1], sp[0], false);
		net_container_started(pid);
		userns_after_clone(&c, pid);
		if (c.userns)
			build_container(&c, pid, chan);
		close(sp[1]);
		supervise(&c, pid, sp[0], -1);
	}
	if (!strcmp(mode, "prepare")) {
		config_parse(&c, argc - 2, argv + 2);
		/* "PID FD" goes to fd 3 (a pipe the launcher reads): our stdio is the container's */
		child_report_fd = 3;
		die_fd = 3; /* the launcher makes a failure its one line */
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
			die("socketpair: %s", strerror(errno));
		/* a bus connection for the scope's Controller=, opened now so its unique name can be
		 * registered; the child holds it (like sp[0]) until the supervisor has taken it */
		char unique[256] = "-";
		if (*c.bus_address && (child_bus_fd = bus_open(c.bus_address, unique, sizeof(unique))) < 0)
			strcpy(unique, "-");
		/* the child keeps sp[0] open (it is a copy of ours) until the supervisor has taken it */
		net_start(&c);
		userns_before_clone(&c);
		int chan = builder_channel(&c);
		pid_t pid = clone_container(&c, sp[1], sp[0], true);
		userns_after_clone(&c, pid);
		if (c.userns)
			build_container(&c, pid, chan);
		if (net_setup(&c, pid) < 0) {
			kill(pid, SIGKILL);
			net_abort(&c);
		}
		const char *cg = cgroup_precreated_path();
		const char *ifs = c.net.ifindices;
		dprintf(3, "%d %d %d %s %s %s\n", (int)pid, sp[0], child_bus_fd, unique, *cg ? cg : "-", *ifs ? ifs : "-");
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
	if (!strcmp(mode, "net") && argc >= 3) {
		pid_t pid = (pid_t)atoi(argv[2]);
		config_parse(&c, argc - 3, argv + 3);
		die_fd = 3;
		net_start(&c);
		if (net_setup(&c, pid) < 0)
			net_abort(&c);
		dprintf(3, "%s\n", *c.net.ifindices ? c.net.ifindices : "-");
		_exit(0);
	}
	if (!strcmp(mode, "idmap-probe") && argc == 3)
		return userns_idmap_probe(argv[2]);
	die("internal: unknown mode '%s'", mode);
}
