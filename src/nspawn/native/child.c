/* The container child: born in the new namespaces, waits for the supervisor's GO (maps written,
 * hooks done, cgroup placed), builds the container's world under the root, pivots into it and
 * exec's the payload. Every failure is reported to the supervisor as one line (MSG_ERROR). */
#define _GNU_SOURCE
#include "nsexec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

extern char **environ;

int child_parent_end = -1;
int child_report_fd = -1;
int child_cgroup_fd = -1;
int child_bus_fd = -1;
int child_builder_fd = -1;
static int report_sock = -1;
static const char *root;

/* -U: the mounts are made by a builder process that is host root (see builder_main), so files it
 * creates must belong to the container's root: it works with fsuid/fsgid = the shift, which keeps
 * CAP_SYS_ADMIN for mount(2). Overlay mounts and a few fallbacks need the full host credentials. */
static bool builder;
static unsigned long builder_shift;

static void host_creds(bool on)
{
	if (!builder)
		return;
	setfsuid(on ? 0 : (uid_t)builder_shift);
	setfsgid(on ? 0 : (gid_t)builder_shift);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (report_sock < 0 || send_fds(report_sock, MSG_ERROR, buf, NULL, 0) < 0)
		dprintf(builder ? die_fd : 2, "mctl-nspawn: %s\n", buf);
	_exit(1);
}

/* Path inside the (not yet pivoted) root; a few rotating buffers so two can be used at once. */
static const char *in_root(const char *rel)
{
	static char bufs[4][4096];
	static int next;
	char *b = bufs[next++ & 3];
	if ((size_t)snprintf(b, sizeof(bufs[0]), "%s%s", root, rel) >= sizeof(bufs[0]))
		fail("path too long: %s%s", root, rel);
	return b;
}

static void xmount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	if (mount(src, dst, type, flags, data) < 0)
		fail("failed to mount %s on %s: %s", type ? type : (src ? src : "-"), dst, strerror(errno));
}

/* Remount a bind mount keeping the flags the kernel may have locked (nosuid, nodev, noexec). */
static int remount_bind(const char *path, bool read_only)
{
	struct statvfs sv;
	if (statvfs(path, &sv) < 0)
		return -1;
	unsigned long flags = MS_REMOUNT | MS_BIND;
	if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
	if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
	if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
	if (read_only) flags |= MS_RDONLY;
	return mount(NULL, path, NULL, flags, NULL);
}

static void bind_ro(const char *src, const char *dst)
{
	xmount(src, dst, NULL, MS_BIND, NULL);
	if (remount_bind(dst, true) < 0)
		fail("failed to make %s read-only: %s", dst, strerror(errno));
}

static void ensure_dir(const char *path, mode_t mode)
{
	int r = mkdir_p(path, mode);
	if (r < 0 && builder && errno == EACCES) {
		/* a tree still owned by host root (chown ownership shifts it after the build) */
		host_creds(true);
		r = mkdir_p(path, mode);
		host_creds(false);
	}
	if (r < 0)
		fail("failed to create %s: %s", path, strerror(errno));
}

/* Make the mount point for a bind of SRC: a directory or an empty file, like the source. */
static void ensure_mount_point(const char *src, const char *dst)
{
	struct stat st;
	if (stat(src, &st) < 0)
		fail("failed to stat %s: %s", src, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		ensure_dir(dst, 0755);
		return;
	}
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", dst);
	char *slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		*slash = '\0';
		ensure_dir(parent, 0755);
	}
	/* an existing target needs no creating, and a read-only root could not create it anyway */
	if (lstat(dst, &st) == 0)
		return;
	int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0 && builder && errno == EACCES) {
		host_creds(true);
		fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
		host_creds(false);
	}
	if (fd < 0 && errno != EISDIR)
		fail("failed to create %s: %s", dst, strerror(errno));
	if (fd >= 0)
		close(fd);
}

#ifndef SYS_fsopen
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#define FSOPEN_CLOEXEC_ 1
#define FSCONFIG_SET_STRING_ 1
#define FSCONFIG_CMD_CREATE_ 6
#define FSMOUNT_CLOEXEC_ 1
#define MOVE_MOUNT_F_EMPTY_PATH_ 4
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#define OPEN_TREE_CLONE_ 1
#define OPEN_TREE_CLOEXEC_ O_CLOEXEC
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

/* A tmpfs that is mounted nowhere (new mount API): a home for throw-away layers that needs no
 * mount point on the host and vanishes with the mount namespace, even after a SIGKILL. */
static int detached_tmpfs(void)
{
	int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC_);
	if (fs < 0)
		fail("fsopen(tmpfs): %s", strerror(errno));
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING_, "source", "tmpfs", 0) < 0 ||
	    syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING_, "mode", "0755", 0) < 0 ||
	    syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE_, NULL, NULL, 0) < 0)
		fail("failed to create a tmpfs: %s", strerror(errno));
	int m = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC_, 0);
	if (m < 0)
		fail("fsmount(tmpfs): %s", strerror(errno));
	close(fs);
	return m;
}

/* overlayfs of LOWER at DST with upper and work dirs on a fresh detached tmpfs. */
static void mount_temporary_overlay(const char *lower, const char *dst, unsigned long flags)
{
	int t = detached_tmpfs();
	if (mkdirat(t, "upper", 0755) < 0 || mkdirat(t, "work", 0755) < 0)
		fail("failed to prepare an overlay layer: %s", strerror(errno));
	char data[8192];
	if ((size_t)snprintf(data, sizeof(data), "lowerdir=%s,upperdir=/proc/self/fd/%d/upper,workdir=/proc/self/fd/%d/work", lower, t, t) >= sizeof(data))
		fail("overlay options too long for %s", dst);
	host_creds(true);
	xmount("overlay", dst, "overlay", flags, data);
	host_creds(false);
	close(t);
}

/* --ephemeral / --volatile: build the root from c->root inside our own mount namespace. */
static void assemble_root(const struct config *c)
{
	if (c->root_layer == ROOT_OVERLAY) {
		mount_temporary_overlay(root, root, 0);
		return;
	}
	if (c->root_layer != ROOT_VOLATILE)
		return;
	int t = detached_tmpfs();
	if (mkdirat(t, "usr", 0755) < 0)
		fail("failed to prepare the volatile root: %s", strerror(errno));
	/* merged-/usr trees keep /bin, /lib... as links into /usr: carry them over */
	static const char *const links[] = { "bin", "sbin", "lib", "lib64", "lib32", "libx32" };
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		char rel[32], target[4096];
		snprintf(rel, sizeof(rel), "/%s", links[i]);
		ssize_t n = readlink(in_root(rel), target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (symlinkat(target, t, links[i]) < 0)
			fail("failed to create /%s: %s", links[i], strerror(errno));
	}
	/* a detached tree is no mount point for mount(2): clone /usr first (open_tree), put the
	 * tmpfs on the root, then attach the clone below it */
	int usr = (int)syscall(SYS_open_tree, AT_FDCWD, in_root("/usr"), OPEN_TREE_CLONE_ | OPEN_TREE_CLOEXEC_ | AT_RECURSIVE);
	if (usr < 0)
		fail("failed to take /usr of %s: %s", root, strerror(errno));
	if (syscall(SYS_move_mount, t, "", AT_FDCWD, root, MOVE_MOUNT_F_EMPTY_PATH_) < 0)
		fail("failed to mount the volatile root: %s", strerror(errno));
	if (syscall(SYS_move_mount, usr, "", AT_FDCWD, in_root("/usr"), MOVE_MOUNT_F_EMPTY_PATH_) < 0)
		fail("failed to mount /usr on the volatile root: %s", strerror(errno));
	if (remount_bind(in_root("/usr"), true) < 0)
		fail("failed to make /usr read-only: %s", strerror(errno));
	close(usr);
	close(t);
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9') return ch - '0';
	if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
	return -1;
}

static void write_host_file(const struct host_file *f, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		fail("failed to write /run/host/%s: %s", f->path, strerror(errno));
	size_t len = strlen(f->content);
	if (!f->hex) {
		if (write(fd, f->content, len) != (ssize_t)len)
			fail("failed to write /run/host/%s: %s", f->path, strerror(errno));
	} else {
		for (size_t i = 0; i + 1 < len; i += 2) {
			int hi = hexval(f->content[i]), lo = hexval(f->content[i + 1]);
			if (hi < 0 || lo < 0)
				fail("internal: bad hex content for /run/host/%s", f->path);
			unsigned char b = (unsigned char)(hi << 4 | lo);
			if (write(fd, &b, 1) != 1)
				fail("failed to write /run/host/%s: %s", f->path, strerror(errno));
		}
	}
	if (fchmod(fd, f->mode) < 0)
		fail("failed to chmod /run/host/%s: %s", f->path, strerror(errno));
	close(fd);
}

static void setup_run(const struct config *c)
{
	ensure_dir(in_root("/run"), 0755);
	xmount("tmpfs", in_root("/run"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=20%,nr_inodes=800k");
	ensure_dir(in_root("/run/host"), 0755);
	ensure_dir(in_root("/run/host/inaccessible"), 0755);
	int fd = open(in_root("/run/host/inaccessible/reg"), O_WRONLY | O_CREAT | O_CLOEXEC, 0000);
	if (fd < 0)
		fail("failed to create /run/host/inaccessible/reg: %s", strerror(errno));
	close(fd);
	if (mkdir(in_root("/run/host/inaccessible/dir"), 0000) < 0)
		fail("failed to create /run/host/inaccessible/dir: %s", strerror(errno));
	chmod(in_root("/run/host/inaccessible/reg"), 0000);
	chmod(in_root("/run/host/inaccessible/dir"), 0000);

	char buf[128];
	snprintf(buf, sizeof(buf), "%s\n", c->uuid ? c->uuid : "");
	if (write_file(in_root("/run/host/container-uuid"), buf) < 0)
		fail("failed to write /run/host/container-uuid: %s", strerror(errno));
	for (size_t i = 0; i < c->n_host_files; i++) {
		const struct host_file *f = &c->host_files[i];
		char rel[4096];
		snprintf(rel, sizeof(rel), "/run/host/%s", f->path);
		const char *p = in_root(rel);
		char parent[4096];
		snprintf(parent, sizeof(parent), "%s", p);
		char *slash = strrchr(parent, '/');
		if (slash) {
			*slash = '\0';
			if (access(parent, F_OK) < 0) {
				ensure_dir(parent, 0755);
				chmod(parent, f->dir_mode);
			}
		}
		write_host_file(f, p);
	}
	const char *osr = access("/etc/os-release", F_OK) == 0 ? "/etc/os-release" : "/usr/lib/os-release";
	if (access(osr, F_OK) == 0) {
		ensure_mount_point(osr, in_root("/run/host/os-release"));
		bind_ro(osr, in_root("/run/host/os-release"));
	}
}

static void setup_proc(const struct config *c)
{
	ensure_dir(in_root("/proc"), 0555);
	xmount("proc", in_root("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);

	bind_ro(in_root("/proc/sys"), in_root("/proc/sys"));
	if (c->private_network) {
		/* the container's own network stack stays configurable */
		xmount(in_root("/proc/sys/net"), in_root("/proc/sys/net"), NULL, MS_BIND, NULL);
		if (remount_bind(in_root("/proc/sys/net"), false) < 0)
			fail("failed to remount /proc/sys/net: %s", strerror(errno));
	}
	static const char *const masked[] = { "kallsyms", "kcore", "keys", "sysrq-trigger", "timer_list" };
	for (size_t i = 0; i < sizeof(masked) / sizeof(masked[0]); i++) {
		char rel[64];
		snprintf(rel, sizeof(rel), "/proc/%s", masked[i]);
		if (access(in_root(rel), F_OK) == 0)
			bind_ro(in_root("/run/host/inaccessible/reg"), in_root(rel));
	}
	static const char *const ro_dirs[] = { "acpi", "apm", "asound", "bus", "fs", "irq", "scsi" };
	for (size_t i = 0; i < sizeof(ro_dirs) / sizeof(ro_dirs[0]); i++) {
		char rel[64];
		snprintf(rel, sizeof(rel), "/proc/%s", ro_dirs[i]);
		if (access(in_root(rel), F_OK) == 0)
			bind_ro(in_root(rel), in_root(rel));
	}
	/* a fresh boot id, so the guest does not think it shares the host's boot */
	char id[64] = "";
	int fd = open("/proc/sys/kernel/random/uuid", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, id, sizeof(id) - 1);
		id[n > 0 ? n : 0] = '\0';
		close(fd);
	}
	if (id[0] && write_file(in_root("/run/.#mctl-boot-id"), id) == 0) {
		bind_ro(in_root("/run/.#mctl-boot-id"), in_root("/proc/sys/kernel/random/boot_id"));
		unlink(in_root("/run/.#mctl-boot-id"));
	}
	/* /proc/kmsg: a FIFO, as nspawn does, so the guest's journald reads nothing of the host's */
	if (mkfifo(in_root("/run/.#mctl-kmsg"), 0600) == 0) {
		if (mount(in_root("/run/.#mctl-kmsg"), in_root("/proc/kmsg"), NULL, MS_BIND, NULL) < 0 && errno != ENOENT)
			fail("failed to mount /proc/kmsg: %s", strerror(errno));
		unlink(in_root("/run/.#mctl-kmsg"));
	}
}

static void setup_sys(void)
{
	ensure_dir(in_root("/sys"), 0555);
	unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	if (mount("sysfs", in_root("/sys"), "sysfs", flags, NULL) < 0) {
		/* sysfs needs the network namespace's owner: in a user namespace without a private
		 * network, show the host's read-only instead (as nspawn does) */
		if (errno != EPERM)
			fail("failed to mount sysfs on %s: %s", in_root("/sys"), strerror(errno));
		xmount("/sys", in_root("/sys"), NULL, MS_BIND | MS_REC, NULL);
		if (remount_bind(in_root("/sys"), true) < 0)
			fail("failed to make /sys read-only: %s", strerror(errno));
	}
}

/* The cgroup namespace needs the cgroups placed; most of the time they already are (clone3's
 * CLONE_INTO_CGROUP), else the supervisor moves us while we mount (cgroup.c says why that costs). */
static void setup_cgroup(int sock)
{
	char tag = 0;
	if (recv(sock, &tag, 1, 0) != 1 || (tag != MSG_CGROUP && tag != MSG_CGROUP_SYSTEMD_RO))
		_exit(1);
	if (unshare(CLONE_NEWCGROUP) < 0)
		fail("failed to create the cgroup namespace: %s", strerror(errno));
	if (cgroup_mount_inside(root, tag == MSG_CGROUP) < 0)
		fail("failed to mount cgroup file systems: %s", strerror(errno));
}

struct dev_node {
	const char *name;
	unsigned major, minor;
};

static void setup_dev(const struct config *c)
{
	ensure_dir(in_root("/dev"), 0755);
	xmount("tmpfs", in_root("/dev"), "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=0755,size=4m,nr_inodes=64k");
	static const struct dev_node nodes[] = {
		{ "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 },
		{ "urandom", 1, 9 }, { "tty", 5, 0 }, { "net/tun", 10, 200 },
	};
	ensure_dir(in_root("/dev/net"), 0755);
	ensure_dir(in_root("/dev/char"), 0755);
	mode_t old = umask(0);
	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		char rel[64], host[64];
		snprintf(rel, sizeof(rel), "/dev/%s", nodes[i].name);
		snprintf(host, sizeof(host), "/dev/%s", nodes[i].name);
		const char *dst = in_root(rel);
		if (mknod(dst, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) < 0) {
			/* no mknod in a user namespace: bind the host's node */
			if (errno != EPERM || access(host, F_OK) < 0) {
				if (errno == EPERM || errno == ENOENT)
					continue;
				fail("failed to create %s: %s", rel, strerror(errno));
			}
			int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
			if (fd < 0)
				fail("failed to create %s: %s", rel, strerror(errno));
			close(fd);
			xmount(host, dst, NULL, MS_BIND, NULL);
		}
		char link[64], target[64];
		snprintf(link, sizeof(link), "/dev/char/%u:%u", nodes[i].major, nodes[i].minor);
		snprintf(target, sizeof(target), "../%s", nodes[i].name);
		if (symlink(target, in_root(link)) < 0 && errno != EEXIST)
			fail("failed to create %s: %s", link, strerror(errno));
	}
	umask(old);
	static const char *const links[][2] = {
		{ "/dev/fd", "/proc/self/fd" }, { "/dev/stdin", "/proc/self/fd/0" },
		{ "/dev/stdout", "/proc/self/fd/1" }, { "/dev/stderr", "/proc/self/fd/2" },
		{ "/dev/ptmx", "pts/ptmx" },
	};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i][1], in_root(links[i][0])) < 0)
			fail("failed to create %s: %s", links[i][0], strerror(errno));
	ensure_dir(in_root("/dev/shm"), 0755);
	xmount("tmpfs", in_root("/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=1777,size=20%,nr_inodes=400k");
	ensure_dir(in_root("/dev/mqueue"), 0755);
	xmount("mqueue", in_root("/dev/mqueue"), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	ensure_dir(in_root("/dev/pts"), 0755);
	/* tty is gid 5 inside; the builder's options are read in the host's user namespace */
	char pts[96];
	snprintf(pts, sizeof(pts), "newinstance,ptmxmode=0666,mode=620,gid=%lu", (builder ? builder_shift : 0) + 5);
	xmount("devpts", in_root("/dev/pts"), "devpts", MS_NOSUID | MS_NOEXEC, pts);
	(void)c;
}

static void setup_tmp(void)
{
	ensure_dir(in_root("/tmp"), 01777);
	xmount("tmpfs", in_root("/tmp"), "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=1777,size=20%,nr_inodes=400k");
}

/* --read-only on a plain tree: its file system, whose mount points may not be created. */
static bool read_only_tree;
static dev_t read_only_tree_dev;

/* A mount point missing from a --read-only tree would have to be created in it, on the host:
 * refuse, as nspawn does (its root is read-only by then: EROFS). Missing points below our own
 * tmpfs mounts (/run, /tmp, /dev, a --tmpfs) are fine. */
static void refuse_creating_in_read_only_tree(const char *dst, const char *destination)
{
	if (!read_only_tree)
		return;
	char path[4096];
	snprintf(path, sizeof(path), "%s", dst);
	struct stat st;
	if (lstat(path, &st) == 0)
		return; /* nothing to create */
	for (;;) {
		char *slash = strrchr(path, '/');
		if (!slash)
			return;
		*slash = '\0';
		if (lstat(*path ? path : "/", &st) == 0)
			break;
	}
	if (st.st_dev == read_only_tree_dev)
		fail("cannot create the mount point %s in the read-only tree (--read-only): %s", destination, strerror(EROFS));
}

static void apply_mount_ops(const struct config *c)
{
	for (size_t i = 0; i < c->n_mounts; i++) {
		const struct mount_op *m = &c->mounts[i];
		const char *dst = in_root(m->destination);
		refuse_creating_in_read_only_tree(dst, m->destination);
		switch (m->kind) {
		case MOUNT_BIND:
			ensure_mount_point(m->source, dst);
			xmount(m->source, dst, NULL, MS_BIND | (m->recursive ? MS_REC : 0), NULL);
			if (m->read_only && remount_bind(dst, true) < 0)
				fail("failed to make %s read-only: %s", m->destination, strerror(errno));
			break;
		case MOUNT_TMPFS:
			ensure_dir(dst, 0755);
			xmount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, m->options && *m->options ? m->options : "mode=0755");
			break;
		case MOUNT_OVERLAY: {
			if (m->temporary_upper) {
				ensure_dir(dst, 0755);
				mount_temporary_overlay(m->source, dst, 0);
				break;
			}
			char data[8192];
			if (m->options && *m->options)
				snprintf(data, sizeof(data), "lowerdir=%s,upperdir=%s,workdir=%s", m->source, m->options, m->extra);
			else
				snprintf(data, sizeof(data), "lowerdir=%s", m->source);
			ensure_dir(dst, 0755);
			host_creds(true);
			xmount("overlay", dst, "overlay", (m->options && *m->options) ? 0 : MS_RDONLY, data);
			host_creds(false);
			break;
		}
		case MOUNT_INACCESSIBLE: {
			struct stat st;
			if (lstat(dst, &st) < 0)
				fail("failed to stat %s: %s", m->destination, strerror(errno));
			bind_ro(in_root(S_ISDIR(st.st_mode) ? "/run/host/inaccessible/dir" : "/run/host/inaccessible/reg"), dst);
			break;
		}
		}
	}
}

/* A pty from the container's own devpts instance; its peer becomes /dev/console. */
static int setup_console(int *slave_out)
{
	int master = open(in_root("/dev/pts/ptmx"), O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		fail("failed to open a pty: %s", strerror(errno));
	int unlock = 0, n = -1;
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCGPTN, &n) < 0)
		fail("failed to set up the pty: %s", strerror(errno));
	char rel[64];
	snprintf(rel, sizeof(rel), "/dev/pts/%d", n);
	int fd = open(in_root("/dev/console"), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		fail("failed to create /dev/console: %s", strerror(errno));
	close(fd);
	xmount(in_root(rel), in_root("/dev/console"), NULL, MS_BIND, NULL);
	*slave_out = open(in_root(rel), O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*slave_out < 0)
		fail("failed to open %s: %s", rel, strerror(errno));
	return master;
}

/* The sd_notify socket at /run/host/notify; bound via a relative path (sun_path is short). */
static int setup_notify(void)
{
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		fail("failed to create the notify socket: %s", strerror(errno));
	char cwd_saved[8];
	(void)cwd_saved;
	if (chdir(in_root("/run/host")) < 0)
		fail("failed to enter /run/host: %s", strerror(errno));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, "notify");
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		fail("failed to bind /run/host/notify: %s", strerror(errno));
	chmod("notify", 0777);
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	if (chdir("/") < 0)
		fail("chdir: %s", strerror(errno));
	return s;
}

static void pivot_into_root(void)
{
	if (chdir(root) < 0)
		fail("failed to enter %s: %s", root, strerror(errno));
	/* pivot_root(".", "."): the old root ends up on top of the new one and is detached at once */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		fail("pivot_root: %s", strerror(errno));
	if (umount2(".", MNT_DETACH) < 0)
		fail("failed to detach the old root: %s", strerror(errno));
	if (chdir("/") < 0)
		fail("chdir /: %s", strerror(errno));
}

static void drop_capabilities(const struct config *c)
{
	int last = 40;
	char buf[16] = "";
	int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		if (n > 0)
			last = atoi(buf);
		close(fd);
	}
	for (int cap = 0; cap <= last && cap < 64; cap++)
		if (!(c->caps_keep & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			fail("failed to drop capability %d: %s", cap, strerror(errno));
}

static void set_process_caps(uint64_t keep, uint64_t inheritable)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		fail("capget: %s", strerror(errno));
	for (int i = 0; i < 2; i++) {
		uint32_t k = (uint32_t)(keep >> (32 * i));
		uint32_t inh = (uint32_t)(inheritable >> (32 * i));
		d[i].permitted &= k;
		d[i].effective &= k;
		d[i].inheritable = inh & d[i].permitted;
	}
	if (syscall(SYS_capset, &h, d) < 0)
		fail("capset: %s", strerror(errno));
}

/* --ambient-capability: raised once the capability is permitted and inheritable; the payload's
 * exec keeps it (for root too, as nspawn). */
static void raise_ambient(const struct config *c)
{
	for (int cap = 0; cap < 64; cap++)
		if ((c->caps_ambient & (1ULL << cap)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
			fail("failed to raise ambient capability %d: %s", cap, strerror(errno));
}

static void switch_user(const struct config *c)
{
	if (setgroups(c->n_groups, c->groups) < 0)
		fail("setgroups: %s", strerror(errno));
	if (c->gid != 0 && setresgid(c->gid, c->gid, c->gid) < 0)
		fail("failed to change to group %u: %s", (unsigned)c->gid, strerror(errno));
	if (c->uid != 0) {
		if (c->caps_ambient && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
			fail("PR_SET_KEEPCAPS: %s", strerror(errno));
		if (setresuid(c->uid, c->uid, c->uid) < 0)
			fail("failed to change to user %u: %s", (unsigned)c->uid, strerror(errno));
		/* the inheritable set shrinks to the ambient one (none without it), as nspawn leaves it:
		 * otherwise a file's inheritable capabilities would hand the user what root had */
		set_process_caps(c->caps_keep, c->caps_ambient);
	}
	raise_ambient(c);
}

static void exec_payload(const struct config *c)
{
	const char *envp[MAX_ITEMS + 1];
	for (size_t i = 0; i < c->n_env; i++)
		envp[i] = c->env[i];
	envp[c->n_env] = NULL;
	environ = (char **)envp;
	if (c->boot) {
		static const char *const inits[] = { "/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init" };
		char *argv[MAX_ITEMS + 2];
		size_t n = 0;
		argv[n++] = NULL;
		for (size_t i = 0; i < c->argc && n < MAX_ITEMS; i++)
			argv[n++] = c->argv[i];
		argv[n] = NULL;
		for (size_t i = 0; i < 3; i++) {
			argv[0] = (char *)inits[i];
			execve(inits[i], argv, environ);
		}
		fail("failed to find an init in the container's root: tried /usr/lib/systemd/systemd, /lib/systemd/systemd, /sbin/init");
	}
	if (c->argc == 0) {
		/* no command: a login shell, as nspawn does */
		char *bash[] = { "-bash", NULL }, *sh[] = { "-sh", NULL };
		execve("/bin/bash", bash, environ);
		execve("/bin/sh", sh, environ);
		fail("failed to execute a shell: %s", strerror(errno));
	}
	execvp(c->argv[0], c->argv);
	fail("failed to execute %s: %s", c->argv[0], strerror(errno));
}

/* setrlimit, or the nearest the kernel allows (nspawn's setrlimit_closest): a hard limit above
 * what may be set (NOFILE above fs.nr_open, for example) becomes the highest allowed one. */
static int setrlimit_closest(int resource, struct rlimit want)
{
	if (setrlimit(resource, &want) == 0)
		return 0;
	if (errno != EPERM)
		return -1;
	struct rlimit cur;
	if (getrlimit(resource, &cur) < 0)
		return -1;
	struct rlimit closest = { want.rlim_cur < cur.rlim_max ? want.rlim_cur : cur.rlim_max,
				  want.rlim_max < cur.rlim_max ? want.rlim_max : cur.rlim_max };
	return setrlimit(resource, &closest);
}

/* --rlimit (before capabilities are dropped: raising a hard limit needs CAP_SYS_RESOURCE),
 * nspawn's default soft NOFILE of 1024 (select()'s FD_SETSIZE; Node raised ours to the hard
 * limit), --oom-score-adjust (lowering it needs CAP_SYS_RESOURCE too). */
static void apply_resource_limits(const struct config *c)
{
	bool nofile = false;
	for (size_t i = 0; i < c->n_rlimits; i++) {
		struct rlimit rl = { c->rlimits[i].soft == ~0ULL ? RLIM_INFINITY : (rlim_t)c->rlimits[i].soft,
				     c->rlimits[i].hard == ~0ULL ? RLIM_INFINITY : (rlim_t)c->rlimits[i].hard };
		if (setrlimit_closest(c->rlimits[i].resource, rl) < 0)
			fail("failed to set resource limit %d: %s", c->rlimits[i].resource, strerror(errno));
		nofile |= c->rlimits[i].resource == RLIMIT_NOFILE;
	}
	struct rlimit rl;
	if (!nofile && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 1024) {
		rl.rlim_cur = 1024;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (c->has_oom_score_adjust) {
		char v[16];
		snprintf(v, sizeof(v), "%d", c->oom_score_adjust);
		if (write_file("/proc/self/oom_score_adj", v) < 0)
			fail("failed to adjust the OOM score: %s", strerror(errno));
	}
}

/* --cpu-affinity ("0-3,8", checked by the front end) and --personality: inherited by everything
 * PID 1 starts. */
static void apply_cpu_affinity_and_personality(const struct config *c)
{
	if (c->cpu_affinity) {
		enum { MAX_CPUS = 8192 };
		cpu_set_t *set = CPU_ALLOC(MAX_CPUS);
		size_t size = CPU_ALLOC_SIZE(MAX_CPUS);
		if (!set)
			fail("failed to set the CPU affinity: %s", strerror(ENOMEM));
		CPU_ZERO_S(size, set);
		char list[1024], *save = NULL;
		snprintf(list, sizeof(list), "%s", c->cpu_affinity);
		for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
			unsigned long from = 0, to = 0;
			if (sscanf(item, "%lu-%lu", &from, &to) != 2)
				to = from;
			for (unsigned long cpu = from; cpu <= to && cpu < MAX_CPUS; cpu++)
				CPU_SET_S(cpu, size, set);
		}
		if (sched_setaffinity(0, size, set) < 0)
			fail("failed to set the CPU affinity %s: %s", c->cpu_affinity, strerror(errno));
		CPU_FREE(set);
	}
	if (c->personality >= 0 && personality((unsigned long)c->personality) < 0)
		fail("failed to set the personality: %s", strerror(errno));
}

/* Everything under the root that the payload must get as it is: the root layers, /run, /proc
 * (without a user namespace), /sys, /dev, /tmp, cgroups (likewise), the spec's mounts, the console
 * and the notify socket (fds into FDS), /run/host and, with --read-only, the root made read-only. */
static void build_tree(const struct config *c, int sock, int *fds, size_t *n_fds)
{
	struct stat st;
	if (stat(root, &st) < 0 || !S_ISDIR(st.st_mode))
		fail("directory %s does not exist", root);
	read_only_tree = c->read_only_root && c->root_layer == ROOT_PLAIN;
	read_only_tree_dev = st.st_dev;
	assemble_root(c);
	xmount(root, root, NULL, MS_BIND | MS_REC, NULL);

	setup_run(c);
	if (!c->userns)
		setup_proc(c);
	setup_sys();
	setup_dev(c);
	setup_tmp();
	if (!c->userns)
		setup_cgroup(sock);
	apply_mount_ops(c);

	if (c->console != CONSOLE_PIPE) {
		int slave = -1;
		fds[(*n_fds)++] = setup_console(&slave);
		fds[(*n_fds)++] = slave;
	}
	fds[(*n_fds)++] = setup_notify();

	{
		/* recursive: os-release is a bind mount below it */
		xmount(in_root("/run/host"), in_root("/run/host"), NULL, MS_BIND | MS_REC, NULL);
		if (remount_bind(in_root("/run/host"), true) < 0)
			fail("failed to make /run/host read-only: %s", strerror(errno));
	}
	if (c->read_only_root && c->root_layer != ROOT_VOLATILE && remount_bind(root, true) < 0)
		fail("failed to make the root read-only: %s", strerror(errno));
}

static void enter_ns_of(pid_t pid, const char *name, int type)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, type) < 0)
		fail("failed to enter the container's %s namespace: %s", name, strerror(errno));
	close(fd);
}

/* -U, the builder: a fork of the launcher (host root) that makes the mounts in the container's
 * first mount namespace, which the HOST's user namespace owns (the launcher unshared it before
 * the clone, see main.c). The container's root later copies it into a mount namespace of its own
 * user namespace, and the kernel locks every mount of such a copy: read-only stays read-only
 * (MNT_LOCK_READONLY, likewise nosuid/nodev/noexec/atime) and nothing can be unmounted to reveal
 * what is below (MNT_LOCKED). nspawn 252 does the same in its outer child. The root is moved onto
 * "/" (not pivoted: the host's /proc must stay in the namespace, hidden, so that the container may
 * mount procfs), and an O_PATH fd of it goes to the container with the console and notify fds. */
void builder_main(const struct config *c, pid_t pid, int chan)
{
	report_sock = -1; /* failures: one line on stderr, exit 1 */
	root = c->root;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	enter_ns_of(pid, "mnt", CLONE_NEWNS);
	/* the root view and bind sources are clones of host mounts and so peers of theirs when those
	 * are shared: nothing made here may propagate back (and MS_MOVE refuses shared parents) */
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		fail("failed to make / a slave mount: %s", strerror(errno));
	enter_ns_of(pid, "ipc", CLONE_NEWIPC); /* /dev/mqueue of the container's IPC namespace */
	if (c->private_network)
		enter_ns_of(pid, "net", CLONE_NEWNET); /* sysfs of the container's network */
	builder = true;
	builder_shift = c->uid_shift;
	host_creds(false);

	int fds[4];
	size_t n_fds = 0;
	build_tree(c, -1, fds + 1, &n_fds);
	fds[0] = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fds[0] < 0)
		fail("failed to open %s: %s", root, strerror(errno));
	host_creds(true);
	if (mount(root, "/", NULL, MS_MOVE, NULL) < 0)
		fail("failed to move the container's root into place: %s", strerror(errno));
	if (send_fds(chan, MSG_READY, NULL, fds, n_fds + 1) < 0)
		fail("failed to hand over the container's root: %s", strerror(errno));
	_exit(0);
}

/* -U, the container's side: take the builder's fds, copy its mount namespace into one of our
 * user namespace (the locking copy), mount /proc (procfs needs a process of its PID namespace;
 * nspawn's inner child mounts it too) and the cgroups, then chroot into the root. */
static void enter_built_tree(const struct config *c, int sock, int *fds, size_t *n_fds)
{
	int got[4];
	size_t n = 0;
	char tag = 0;
	if (recv_fds(child_builder_fd, &tag, 1, got, &n) != 1 || tag != MSG_READY || n < 2)
		fail("internal: the container's root was not handed over");
	close(child_builder_fd);
	for (size_t i = 1; i < n; i++)
		fds[(*n_fds)++] = got[i];
	if (fchdir(got[0]) < 0)
		fail("failed to enter the container's root: %s", strerror(errno));
	close(got[0]);
	if (unshare(CLONE_NEWNS) < 0)
		fail("failed to create the container's mount namespace: %s", strerror(errno));
	/* until the chroot, absolute paths are the host's (our root is the hidden host root below the
	 * container's) and relative ones the container's */
	root = ".";
	setup_proc(c);
	setup_cgroup(sock);
	if (chroot(".") < 0 || chdir("/") < 0)
		fail("failed to change into the container's root: %s", strerror(errno));
}

void child_main(const struct config *c, int sock)
{
	report_sock = sock;
	root = c->root;
	/* Node ignores SIGPIPE and SIGXFSZ and exec keeps ignored signals: the payload gets defaults */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (child_report_fd >= 0)
		close(child_report_fd);
	net_child_close(c);
	/* the cgroup directory's fd carries its flock: held by the supervisor, not by us */
	if (child_cgroup_fd >= 0)
		close(child_cgroup_fd);

	char tag = 0;
	ssize_t n = recv(sock, &tag, 1, 0);
	if (n != 1 || tag != MSG_GO)
		_exit(1); /* the supervisor went away before releasing us */
	if (child_parent_end >= 0)
		close(child_parent_end);
	if (child_bus_fd >= 0)
		close(child_bus_fd); /* the supervisor has its own copy now */
	/* no host file descriptor beyond stdio may reach the payload (the supervisor's image lock,
	 * whatever the launcher inherited): mark them all close-on-exec */
	if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) < 0)
		fail("close_range: %s", strerror(errno));

	/* with a user namespace our ids are still the host's (unmapped) until we take the mapped root */
	if (c->userns && (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0))
		fail("failed to become root in the user namespace: %s", strerror(errno));
	/* any credential change clears the parent-death signal: arm it again, or a SIGKILLed
	 * supervisor would leave the container running as an orphan */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (c->hostname && *c->hostname && sethostname(c->hostname, strlen(c->hostname)) < 0)
		fail("failed to set the hostname: %s", strerror(errno));
	if (c->private_network)
		net_bring_up_loopback();

	int fds[4];
	size_t n_fds = 0;
	if (!c->userns) {
		if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
			fail("failed to make / a slave mount: %s", strerror(errno));
		build_tree(c, sock, fds, &n_fds);
		pivot_into_root();
	} else {
		enter_built_tree(c, sock, fds, &n_fds);
	}

	if (send_fds(sock, MSG_READY, NULL, fds, n_fds) < 0)
		_exit(1);
	for (size_t i = 0; i < n_fds; i++)
		close(fds[i]);

	if (setsid() < 0)
		fail("setsid: %s", strerror(errno));
	if (c->console != CONSOLE_PIPE) {
		int con = open("/dev/console", O_RDWR);
		if (con < 0)
			fail("failed to open /dev/console: %s", strerror(errno));
		if (ioctl(con, TIOCSCTTY, 0) < 0)
			fail("failed to make /dev/console the controlling terminal: %s", strerror(errno));
		for (int i = 0; i < 3; i++)
			if (dup2(con, i) < 0)
				fail("dup2: %s", strerror(errno));
		if (con > 2)
			close(con);
	}

	apply_resource_limits(c);
	apply_cpu_affinity_and_personality(c);

	if (c->as_pid2) {
		pid_t pid = fork();
		if (pid < 0)
			fail("fork: %s", strerror(errno));
		if (pid > 0) {
			close(sock);
			stub_init_run(pid);
		}
		/* PID 2: its own session so the stub init stays out of its job control */
		setsid();
		if (c->console != CONSOLE_PIPE)
			ioctl(0, TIOCSCTTY, 1);
	}

	const char *dir = c->chdir && *c->chdir ? c->chdir : "/";
	if (chdir(dir) < 0)
		fail("failed to change to directory %s: %s", dir, strerror(errno));

	drop_capabilities(c);
	if (c->seccomp && seccomp_install_default(c) < 0)
		fail("failed to install the seccomp filter: %s", strerror(errno));
	set_process_caps(c->caps_keep, c->caps_keep);
	switch_user(c);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); /* cleared again by a change of user */
	if (c->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	exec_payload(c);
	_exit(1);
}
