/* The supervisor: the container's parent for its whole life, and all that stays on the host
 * per container (a few hundred KiB, no Node). It places the cgroup, releases the child, relays
 * the console pty, passes sd_notify READY=1 on, turns SIGTERM/SIGINT into the kill signal and
 * exits with the payload's status (a reboot of the guest becomes 133, as with nspawn). */
#define _GNU_SOURCE
#include "nsexec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static struct termios saved_termios;
static bool termios_saved;
static char cg_unified[4096], cg_systemd[4096];

static void restore_terminal(void)
{
	if (termios_saved)
		tcsetattr(0, TCSADRAIN, &saved_termios);
	termios_saved = false;
}

static void copy_winsize(int master)
{
	struct winsize ws;
	if (master >= 0 && ioctl(1, TIOCGWINSZ, &ws) == 0)
		ioctl(master, TIOCSWINSZ, &ws);
}

/* sd_notify to our own manager ($NOTIFY_SOCKET), e.g. for a Type=notify unit. */
static void notify_manager(const char *text)
{
	const char *path = getenv("NOTIFY_SOCKET");
	if (!path || !*path)
		return;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(path);
	if (len >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	sendto(s, text, strlen(text), MSG_NOSIGNAL, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	close(s);
}

static void write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd p = { .fd = fd, .events = POLLOUT };
				poll(&p, 1, 100);
				continue;
			}
			return;
		}
		buf += w;
		n -= (size_t)w;
	}
}

/* Will PID take SIG? A PID namespace's init drops signals it neither catches nor blocks
 * (systemd blocks its signals and reads them from a signalfd). */
static bool catches(pid_t pid, int sig)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return true; /* cannot tell: just send it */
	unsigned long long taken = 0;
	bool seen = false;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "SigCgt:", 7) == 0 || strncmp(line, "SigBlk:", 7) == 0) {
			taken |= strtoull(line + 7, NULL, 16);
			seen = true;
		}
	}
	fclose(f);
	return !seen || ((taken >> (sig - 1)) & 1ULL);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Ask PID 1 to stop with the kill signal. Returns true when that has to wait: unlike nspawn, do
 * not lose the signal to a guest init that is still starting (see catches()). */
static bool request_stop(const struct config *c, pid_t leader)
{
	if (c->kill_signal != SIGKILL && !catches(leader, c->kill_signal))
		return true;
	kill(leader, c->kill_signal);
	return false;
}

static void finish(const struct config *c, int status, bool setup_failed, bool killed_by_escape) __attribute__((noreturn));
static void finish(const struct config *c, int status, bool setup_failed, bool killed_by_escape)
{
	restore_terminal();
	cgroup_remove(cg_unified, cg_systemd);
	userns_release(c);
	/* the image's lock files, as systemd's release_lock_file(): the last holder (the one that can
	 * take the lock exclusively) removes the file; a new locker re-checks the inode */
	for (size_t i = 0; i < c->n_lock_files; i++) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		if (fcntl(c->lock_fd[i], F_OFD_SETLK, &fl) == 0)
			unlink(c->lock_path[i]);
		close(c->lock_fd[i]);
	}
	/* a persistent --overlay's work dir: the container is gone, so is its use (nspawn removes it too) */
	for (size_t i = 0; i < c->n_mounts; i++) {
		const struct mount_op *m = &c->mounts[i];
		if (m->kind == MOUNT_OVERLAY && !m->temporary_upper && m->extra && *m->extra && remove_tree(m->extra) < 0 && errno != ENOENT)
			warnx_("cannot remove the overlay work directory %s: %s", m->extra, strerror(errno));
	}
	if (setup_failed) {
		net_failed();
		_exit(1);
	}
	if (killed_by_escape) {
		if (!c->quiet)
			dprintf(2, "\nContainer %s terminated by signal KILL.\n", c->name);
		_exit(1);
	}
	if (WIFEXITED(status)) {
		int code = WEXITSTATUS(status);
		if (!c->quiet) {
			if (code == 0)
				dprintf(2, "Container %s exited successfully.\n", c->name);
			else
				dprintf(2, "Container %s failed with error code %d.\n", c->name, code);
		}
		_exit(code);
	}
	int sig = WTERMSIG(status);
	if (sig == SIGHUP) {
		/* the kernel kills a PID namespace's init with SIGHUP when it calls reboot() */
		if (!c->quiet)
			dprintf(2, "Container %s is being rebooted.\n", c->name);
		_exit(133);
	}
	if (sig == SIGINT) {
		/* ... and with SIGINT on halt/poweroff */
		if (!c->quiet)
			dprintf(2, "Container %s has been shut down.\n", c->name);
		_exit(0);
	}
	if (!c->quiet)
		dprintf(2, "Container %s terminated by signal %s.\n", c->name, signal_name(sig));
	_exit(1);
}

int supervise(struct config *c, pid_t leader, int sock, int bus)
{
	sigset_t mask;
	sigemptyset(&mask);
	int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGWINCH, SIGQUIT };
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&mask, sigs[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		kill(leader, SIGKILL);
		die("signalfd: %s", strerror(errno));
	}

	proxy_setup(c);
	char go = MSG_GO;
	if (send(sock, &go, 1, MSG_NOSIGNAL) != 1) {
		kill(leader, SIGKILL);
		waitpid(leader, NULL, 0);
		die("the container process died before it could start");
	}
	/* run mode: the network now, while the child mounts (it waits for MSG_CGROUP half-way) */
	if (net_setup(c, leader) < 0) {
		kill(leader, SIGKILL);
		waitpid(leader, NULL, 0);
		cgroup_remove(cg_unified, cg_systemd);
		net_abort(c);
	}
	bool systemd_delegated = true;
	if (cgroup_place(c, leader, cg_unified, sizeof(cg_unified), cg_systemd, sizeof(cg_systemd), &systemd_delegated) < 0) {
		int saved = errno;
		kill(leader, SIGKILL);
		waitpid(leader, NULL, 0);
		cgroup_remove(cg_unified, cg_systemd);
		die("failed to set up the container's cgroup: %s", strerror(saved));
	}
	if (bus >= 0 && bus_watch(bus, c->bus_trusted_name, c->bus_trusted_owner, c->n_bus_trusted) < 0) {
		close(bus);
		bus = -1;
	}
	/* if the child already failed, the loop below collects its message and status */
	char placed = systemd_delegated ? MSG_CGROUP : MSG_CGROUP_SYSTEMD_RO;
	(void)send(sock, &placed, 1, MSG_NOSIGNAL);

	int master = -1, slave = -1, notify = -1;
	bool setup_failed = false, ready = false, escaped = false;
	bool stdin_open = c->console == CONSOLE_INTERACTIVE;
	bool output = c->console == CONSOLE_INTERACTIVE || c->console == CONSOLE_READ_ONLY;
	int kill_requests = 0;
	bool stop_pending = false; /* asked to stop before PID 1 could handle the kill signal */
	bool stop_after_ready = false; /* a RequestStop that came before the payload was started */
	int escapes = 0;
	long long first_escape = 0;
	int status = 0;
	bool exited = false;

	while (!exited) {
		struct pollfd p[6 + PROXY_MAX_POLLFDS];
		int n = 0;
		int i_sig = n; p[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		int i_sock = -1, i_master = -1, i_stdin = -1, i_notify = -1, i_bus = -1;
		if (bus >= 0) { i_bus = n; p[n++] = (struct pollfd){ .fd = bus, .events = POLLIN }; }
		if (sock >= 0) { i_sock = n; p[n++] = (struct pollfd){ .fd = sock, .events = POLLIN }; }
		if (master >= 0) { i_master = n; p[n++] = (struct pollfd){ .fd = master, .events = POLLIN }; }
		if (master >= 0 && stdin_open) { i_stdin = n; p[n++] = (struct pollfd){ .fd = 0, .events = POLLIN }; }
		if (notify >= 0) { i_notify = n; p[n++] = (struct pollfd){ .fd = notify, .events = POLLIN }; }
		int i_proxy = n;
		size_t n_proxy = proxy_pollfds(p + n, PROXY_MAX_POLLFDS);
		n += (int)n_proxy;
		if (poll(p, (nfds_t)n, stop_pending ? 20 : -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (stop_pending && catches(leader, c->kill_signal)) {
			stop_pending = false;
			kill(leader, c->kill_signal);
		}
		if (i_sock >= 0 && p[i_sock].revents) {
			char buf[1100];
			int fds[4];
			size_t nf = 0;
			ssize_t r = recv_fds(sock, buf, sizeof(buf) - 1, fds, &nf);
			if (r <= 0) {
				close(sock);
				sock = -1;
			} else if (buf[0] == MSG_READY) {
				size_t k = 0;
				if (c->console != CONSOLE_PIPE && nf >= 3) {
					master = fds[k++];
					slave = fds[k++];
				}
				if (k < nf)
					notify = fds[k++];
				ready = true;
				if (stop_after_ready)
					stop_pending = request_stop(c, leader);
				if (master >= 0) {
					fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
					copy_winsize(master);
				}
				if (c->console == CONSOLE_INTERACTIVE && isatty(0) && tcgetattr(0, &saved_termios) == 0) {
					termios_saved = true;
					struct termios raw = saved_termios;
					cfmakeraw(&raw);
					raw.c_oflag = saved_termios.c_oflag; /* keep output post-processing like nspawn */
					tcsetattr(0, TCSANOW, &raw);
				}
				if (!c->notify_ready) {
					char msg[128];
					snprintf(msg, sizeof(msg), "READY=1\nSTATUS=Container running.\nX_NSPAWN_LEADER_PID=%d", (int)leader);
					notify_manager(msg);
				}
			} else if (buf[0] == MSG_ERROR) {
				buf[r] = '\0';
				dprintf(2, "mctl-nspawn: %s\n", buf + 1);
				setup_failed = true;
			}
		}
		if (i_bus >= 0 && p[i_bus].revents) {
			int r = bus_dispatch(bus);
			if (r < 0) {
				/* the bus went away: systemd forgets a vanished controller and kills by itself */
				close(bus);
				bus = -1;
			} else if (r > 0 && kill_requests++ == 0) {
				/* the scope is being stopped (systemctl stop, machinectl terminate): as nspawn */
				if (!c->quiet)
					dprintf(2, "Container termination requested. Attempting to halt container %s.\n", c->name);
				/* registration precedes the payload: a stop that early is passed on once it runs */
				if (!ready)
					stop_after_ready = true;
				else
					stop_pending = request_stop(c, leader);
			}
		}
		if (n_proxy > 0)
			proxy_dispatch(p + i_proxy, n_proxy);
		if (i_master >= 0 && p[i_master].revents) {
			char buf[4096];
			ssize_t r = read(master, buf, sizeof(buf));
			if (r > 0 && output)
				write_all(1, buf, (size_t)r);
		}
		if (i_stdin >= 0 && p[i_stdin].revents) {
			char buf[1024];
			ssize_t r = read(0, buf, sizeof(buf));
			if (r <= 0) {
				stdin_open = false;
			} else {
				for (ssize_t j = 0; j < r; j++) {
					if (buf[j] != 0x1d) {
						escapes = 0;
						continue;
					}
					long long t = now_ms();
					if (escapes == 0 || t - first_escape > 1000) {
						escapes = 0;
						first_escape = t;
					}
					if (++escapes >= 3) {
						escaped = true;
						kill(leader, SIGKILL);
					}
				}
				if (!escaped)
					write_all(master, buf, (size_t)r);
			}
		}
		if (i_notify >= 0 && p[i_notify].revents) {
			char buf[4096];
			ssize_t r = recv(notify, buf, sizeof(buf) - 1, MSG_DONTWAIT);
			if (r > 0) {
				buf[r] = '\0';
				bool is_ready = strncmp(buf, "READY=1", 7) == 0 || strstr(buf, "\nREADY=1") != NULL;
				if (is_ready && c->notify_ready) {
					char msg[128];
					snprintf(msg, sizeof(msg), "READY=1\nSTATUS=Container running.\nX_NSPAWN_LEADER_PID=%d", (int)leader);
					notify_manager(msg);
				}
			}
		}
		if (p[i_sig].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				switch (si.ssi_signo) {
				case SIGCHLD:
					for (;;) {
						int st;
						pid_t w = waitpid(-1, &st, WNOHANG);
						if (w <= 0)
							break;
						if (w == leader) {
							status = st;
							exited = true;
						}
					}
					break;
				case SIGWINCH:
					copy_winsize(master);
					break;
				case SIGTERM:
				case SIGINT:
				case SIGHUP:
				case SIGQUIT:
					/* first request: ask nicely with the kill signal; a second one: SIGKILL */
					if (!ready || kill_requests++ > 0)
						kill(leader, SIGKILL);
					else {
						if (!c->quiet && c->kill_signal != SIGKILL)
							dprintf(2, "Trying to halt container %s. Send SIGTERM again to trigger immediate termination.\n", c->name);
						stop_pending = request_stop(c, leader);
					}
					break;
				}
			}
		}
	}
	/* what the payload printed last is still in the pty */
	if (master >= 0 && output) {
		char buf[4096];
		ssize_t r;
		while ((r = read(master, buf, sizeof(buf))) > 0)
			write_all(1, buf, (size_t)r);
	}
	if (sock >= 0) {
		/* an error the child sent right before dying */
		char buf[1100];
		int fds[4];
		size_t nf = 0;
		ssize_t r;
		while ((r = recv_fds(sock, buf, sizeof(buf) - 1, fds, &nf)) > 0) {
			for (size_t k = 0; k < nf; k++)
				close(fds[k]);
			if (buf[0] == MSG_ERROR) {
				buf[r] = '\0';
				dprintf(2, "mctl-nspawn: %s\n", buf + 1);
				setup_failed = true;
			}
			fcntl(sock, F_SETFL, O_NONBLOCK);
		}
	}
	(void)slave;
	finish(c, status, setup_failed, escaped);
}
