/* Small helpers shared by the helper's parts: messages, files, fd passing. */
#define _GNU_SOURCE /* nftw */
#include "nsexec.h"

#include <errno.h>
#include <ftw.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int die_fd = 2;
void (*die_cleanup)(void);

/* One formatted line on FD, in one write so concurrent writers do not interleave. */
static void say(int fd, const char *fmt, va_list ap)
{
	char buf[1024];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	dprintf(fd, "mctl-nspawn: %s\n", buf);
}

void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	say(die_fd, fmt, ap);
	va_end(ap);
	if (die_cleanup) {
		void (*cleanup)(void) = die_cleanup;
		die_cleanup = NULL;
		cleanup();
	}
	_exit(1);
}

void warnx_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	say(2, fmt, ap);
	va_end(ap);
}

int write_file(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_TRUNC | O_CREAT, 0644);
	if (fd < 0)
		return -1;
	size_t len = strlen(content);
	ssize_t n = write(fd, content, len);
	int saved = errno;
	close(fd);
	if (n != (ssize_t)len) {
		errno = n < 0 ? saved : EIO;
		return -1;
	}
	return 0;
}

int mkdir_p(const char *path, mode_t mode)
{
	char buf[4096];
	if (strlen(path) >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(buf, path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* One SOCK_SEQPACKET message: a tag byte, optional text, optional fds (SCM_RIGHTS). */
int send_fds(int sock, char tag, const char *text, const int *fds, size_t n_fds)
{
	char buf[1024];
	size_t len = 1;
	buf[0] = tag;
	if (text) {
		size_t t = strlen(text);
		if (t > sizeof(buf) - 1)
			t = sizeof(buf) - 1;
		memcpy(buf + 1, text, t);
		len += t;
	}
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	union {
		char raw[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} control;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (n_fds > 0) {
		memset(&control, 0, sizeof(control));
		msg.msg_control = control.raw;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n_fds);
	}
	return sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

ssize_t recv_fds(int sock, char *buf, size_t len, int *fds, size_t *n_fds)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	union {
		char raw[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} control;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.raw, .msg_controllen = sizeof(control.raw) };
	ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	*n_fds = 0;
	if (n < 0)
		return n;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			if (k > 4)
				k = 4;
			memcpy(fds, CMSG_DATA(cm), k * sizeof(int));
			*n_fds = k;
		}
	}
	return n;
}

const char *signal_name(int sig)
{
	static char buf[16];
	switch (sig) {
	case SIGHUP: return "HUP";
	case SIGINT: return "INT";
	case SIGQUIT: return "QUIT";
	case SIGKILL: return "KILL";
	case SIGTERM: return "TERM";
	case SIGSEGV: return "SEGV";
	case SIGABRT: return "ABRT";
	case SIGPIPE: return "PIPE";
	case SIGUSR1: return "USR1";
	case SIGUSR2: return "USR2";
	default:
		if (sig >= SIGRTMIN && sig <= SIGRTMAX) {
			snprintf(buf, sizeof(buf), "RTMIN+%d", sig - SIGRTMIN);
			return buf;
		}
		snprintf(buf, sizeof(buf), "%d", sig);
		return buf;
	}
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* rm -rf PATH without crossing into other file systems or following symlinks. */
int remove_tree(const char *path)
{
	return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}
