/* Private user namespaces, the parts that must run as host root next to the clone: picking the
 * UID range (nspawn's algorithm, systemd.md §3.4) and giving the container its root view.
 *
 * Why here and not in the Node launcher: the range lock is an OFD lock and the NSS check is
 * getpwuid()/getgrgid(), both libc calls Node can only reach through koffi (~10 ms to load);
 * and an idmapped mount needs a user namespace carrying the container's map, which the clone
 * creates anyway. Doing it here costs well under a millisecond and leaves nothing on the host.
 *
 * Root view: the container's root is unprivileged on the host (uid SHIFT) and may not be able to
 * traverse the tree's parents (/var/lib/machines is 0700). So the tree is cloned with
 * open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) (a detached copy, never in the host's mount table),
 * idmapped with the container's own user namespace (map ownership) or left as is (bind), and
 * attached inside the container's mount namespace only: a fresh tmpfs goes on MOUNTPOINT (an
 * empty traversable directory the host keeps, /run/mctl-idmap), the tree on MOUNTPOINT/root,
 * which the child takes as its root, and clones of the bind mount sources on MOUNTPOINT/bind/N.
 * The same order of operations as systemd-nspawn 252 (clone tree, set IDMAP, move into place),
 * which does it in its outer child; we enter the container's mount namespace with setns().
 *
 * Config keys (see config.c): "userns-pick LOCKDIR" (pick the range; implies a user namespace of
 * 65536 ids), "userns-root idmap|bind MOUNTPOINT". */
#define _GNU_SOURCE
#include "nsexec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define UID_RANGE 0x10000UL
#define UID_BASE_MIN 0x00080000UL
#define UID_BASE_MAX 0x6FFF0000UL
#define PICK_TRIES 100

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#define U_OPEN_TREE_CLONE 1
#define U_AT_RECURSIVE 0x8000
#define U_MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#define U_MOUNT_ATTR_IDMAP 0x00100000ULL

struct u_mount_attr {
	uint64_t attr_set;
	uint64_t attr_clr;
	uint64_t propagation;
	uint64_t userns_fd;
};

static struct {
	const char *lock_dir; /* non-NULL: pick the range */
	bool idmap;
	const char *view_at; /* non-NULL: attach the root view here inside the container */
	const char *tree;    /* the tree itself (c->root before it was redirected to view_at) */
	const char *bind_source[MAX_ITEMS]; /* host sources of bind mounts handed over the same way */
	int lock_fd;
} u = { .lock_fd = -1 };

int userns_config_key(struct config *c, int argc, char **argv)
{
	if (!strcmp(argv[0], "userns-pick") && argc >= 2) {
		u.lock_dir = argv[1];
		c->userns = true;
		c->uid_range = UID_RANGE;
		return 2;
	}
	if (!strcmp(argv[0], "userns-root") && argc >= 3) {
		if (strcmp(argv[1], "idmap") && strcmp(argv[1], "bind"))
			die("internal: bad userns-root kind '%s'", argv[1]);
		u.idmap = !strcmp(argv[1], "idmap");
		u.view_at = argv[2];
		return 3;
	}
	return 0;
}

/* SipHash-2-4 (reference algorithm: little-endian words, 64-bit result), for the hashed guess. */
static uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }
static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static uint64_t siphash24(const unsigned char *m, size_t len, const unsigned char key[16])
{
	uint64_t k0 = le64(key), k1 = le64(key + 8);
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
#define SIPROUND do { \
	v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32); \
	v2 += v3; v3 = rotl(v3, 16); v3 ^= v2; \
	v0 += v3; v3 = rotl(v3, 21); v3 ^= v0; \
	v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32); } while (0)
	size_t full = len - len % 8;
	for (size_t off = 0; off < full; off += 8) {
		uint64_t w = le64(m + off);
		v3 ^= w;
		SIPROUND;
		SIPROUND;
		v0 ^= w;
	}
	uint64_t b = (uint64_t)(len & 0xff) << 56;
	for (size_t i = full; i < len; i++)
		b |= (uint64_t)m[i] << (8 * (i - full));
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
#undef SIPROUND
	return v0 ^ v1 ^ v2 ^ v3;
}

static unsigned long fold(uint64_t v)
{
	return (unsigned long)((v % (UID_BASE_MAX - UID_BASE_MIN)) + UID_BASE_MIN) & 0xFFFF0000UL;
}

/* An OFD lock (systemd's make_lock_file() kind, so stock nspawn and we exclude each other) on
 * LOCKDIR/BASE, or -1 when someone holds it. Retries when the holder unlinked the file between
 * our open and our lock (we would have locked an orphan). */
static int lock_range(unsigned long base)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s/%lu", u.lock_dir, base) >= sizeof(path))
		die("UID range lock directory name too long");
	for (;;) {
		int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			die("failed to open %s: %s", path, strerror(errno));
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
			int e = errno;
			close(fd);
			if (e == EAGAIN || e == EACCES)
				return -1;
			die("failed to lock %s: %s", path, strerror(e));
		}
		struct stat a, b;
		if (fstat(fd, &a) == 0 && a.st_nlink > 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			return fd;
		close(fd);
	}
}

/* Asked in a short-lived child: NSS modules (libnss_systemd with libcap and libm here) would
 * otherwise stay mapped in the supervisor for the container's whole life (+1.2 MiB RSS). */
static bool nss_knows(unsigned long base)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
		_exit(getpwuid((uid_t)base) || getpwuid((uid_t)(base + 0xFFFE)) || getgrgid((gid_t)base) || getgrgid((gid_t)(base + 0xFFFE)));
	int status = 0;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid: %s", strerror(errno));
	/* a lookup that crashed counts as taken: never hand out a range we could not check */
	return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

/* nspawn's pick: the tree owner's range first (a chowned tree keeps its range), then
 * siphash24(machine name), then random candidates; each must be in the window, aligned, free
 * (our lock) and unknown to NSS at its first and last id. */
static void pick_range(struct config *c)
{
	static const unsigned char key[16] = { 0xe1, 0x56, 0xe0, 0xf0, 0x4a, 0xf0, 0x41, 0xaf,
					       0x96, 0x41, 0xcf, 0x41, 0x33, 0x94, 0xff, 0x72 };
	if (mkdir_p(u.lock_dir, 0755) < 0)
		die("failed to create %s: %s", u.lock_dir, strerror(errno));
	unsigned long cand = 0;
	bool have = false;
	struct stat st;
	if (stat(c->root, &st) == 0 && (st.st_uid & 0xFFFF0000U) == (st.st_gid & 0xFFFF0000U)) {
		cand = st.st_uid & 0xFFFF0000UL;
		have = true;
	}
	for (int attempt = 0; attempt < PICK_TRIES; attempt++) {
		if (have && cand >= UID_BASE_MIN && cand <= UID_BASE_MAX && cand % UID_RANGE == 0) {
			int fd = lock_range(cand);
			if (fd >= 0) {
				if (!nss_knows(cand)) {
					u.lock_fd = fd;
					c->uid_shift = cand;
					return;
				}
				char path[4096];
				snprintf(path, sizeof(path), "%s/%lu", u.lock_dir, cand);
				unlink(path);
				close(fd);
			}
		}
		have = true;
		if (attempt == 0) {
			const char *name = c->name ? c->name : "";
			cand = fold(siphash24((const unsigned char *)name, strlen(name), key));
		} else {
			uint32_t r = 0;
			if (getrandom(&r, sizeof(r), 0) != sizeof(r))
				die("getrandom: %s", strerror(errno));
			cand = fold(r);
		}
	}
	die("no free UID range for the container after %d attempts (EBUSY)", PICK_TRIES);
}

void userns_before_clone(struct config *c)
{
	if (u.lock_dir)
		pick_range(c);
	if (!u.view_at)
		return;
	/* The child (a copy of us) builds the container from these paths, which the helper fills
	 * in its mount namespace after the clone (userns_after_clone): VIEW/root is the tree, and
	 * VIEW/bind/N the source of bind mount N, so no host path has to be traversable for it. */
	u.tree = c->root;
	if (asprintf((char **)&c->root, "%s/root", u.view_at) < 0)
		die("out of memory");
	for (size_t i = 0; i < c->n_mounts; i++) {
		struct mount_op *m = &c->mounts[i];
		if (m->kind != MOUNT_BIND)
			continue;
		u.bind_source[i] = m->source;
		if (asprintf((char **)&m->source, "%s/bind/%zu", u.view_at, i) < 0)
			die("out of memory");
	}
}

static int open_proc(pid_t pid, const char *what)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* The waiting child must not outlive a failed start (in prepare mode nobody else knows it). */
static void fail_after_clone(pid_t pid, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void fail_after_clone(pid_t pid, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	kill(pid, SIGKILL);
	die("%s", buf);
}

#ifndef SYS_fsopen
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#endif

/* A tmpfs mounted nowhere yet (0755, owned by host root: the container's root may traverse it,
 * not change it), holding the mount points of the root view and of the bind sources. */
static int holder_tmpfs(const struct config *c, const int *binds, pid_t pid)
{
	int fs = (int)syscall(SYS_fsopen, "tmpfs", 1 /* FSOPEN_CLOEXEC */);
	if (fs < 0 || syscall(SYS_fsconfig, fs, 1 /* SET_STRING */, "mode", "0755", 0) < 0 ||
	    syscall(SYS_fsconfig, fs, 6 /* CMD_CREATE */, NULL, NULL, 0) < 0)
		fail_after_clone(pid, "failed to create a tmpfs for the container's root: %s", strerror(errno));
	int t = (int)syscall(SYS_fsmount, fs, 1 /* FSMOUNT_CLOEXEC */, 0x2 | 0x4 | 0x8 /* nosuid nodev noexec */);
	if (t < 0)
		fail_after_clone(pid, "failed to mount a tmpfs for the container's root: %s", strerror(errno));
	close(fs);
	if (mkdirat(t, "root", 0755) < 0 || mkdirat(t, "bind", 0755) < 0)
		fail_after_clone(pid, "failed to prepare the container's root: %s", strerror(errno));
	for (size_t i = 0; i < c->n_mounts; i++) {
		if (binds[i] < 0)
			continue;
		char name[32];
		struct stat st;
		snprintf(name, sizeof(name), "bind/%zu", i);
		if (fstat(binds[i], &st) < 0)
			fail_after_clone(pid, "failed to stat %s: %s", u.bind_source[i], strerror(errno));
		int r = S_ISDIR(st.st_mode) ? mkdirat(t, name, 0755) : openat(t, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (r < 0)
			fail_after_clone(pid, "failed to prepare the mount point for %s: %s", u.bind_source[i], strerror(errno));
		if (!S_ISDIR(st.st_mode))
			close(r);
	}
	return t;
}

void userns_after_clone(const struct config *c, pid_t pid)
{
	if (!u.view_at)
		return;
	/* Detached clones of the tree and the bind sources, taken here where host root reaches
	 * every path; the tree idmapped with the container's own user namespace for map. */
	int tree = (int)syscall(SYS_open_tree, AT_FDCWD, u.tree, U_OPEN_TREE_CLONE | O_CLOEXEC | U_AT_RECURSIVE);
	if (tree < 0)
		fail_after_clone(pid, "failed to clone the tree %s: %s", u.tree, strerror(errno));
	if (u.idmap) {
		int ns = open_proc(pid, "ns/user");
		if (ns < 0)
			fail_after_clone(pid, "failed to open the container's user namespace: %s", strerror(errno));
		struct u_mount_attr attr = { .attr_set = U_MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)ns };
		if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | U_AT_RECURSIVE, &attr, sizeof(attr)) < 0)
			fail_after_clone(pid, "--private-users-ownership=map: idmapped mounts are not supported for %s (%s)", u.tree, strerror(errno));
		close(ns);
	}
	static int binds[MAX_ITEMS];
	for (size_t i = 0; i < c->n_mounts; i++) {
		binds[i] = -1;
		if (!u.bind_source[i])
			continue;
		binds[i] = (int)syscall(SYS_open_tree, AT_FDCWD, u.bind_source[i], U_OPEN_TREE_CLONE | O_CLOEXEC | (c->mounts[i].recursive ? U_AT_RECURSIVE : 0));
		if (binds[i] < 0)
			fail_after_clone(pid, "failed to open the bind mount source %s: %s", u.bind_source[i], strerror(errno));
	}
	int holder = holder_tmpfs(c, binds, pid);

	/* move_mount() only attaches inside the caller's mount namespace: enter the container's for
	 * the moves (we are single-threaded, as setns(CLONE_NEWNS) requires) and come back. setns()
	 * resets root and working directory to the namespace's: both are restored afterwards. */
	int self = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	int rootdir = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	int target = open_proc(pid, "ns/mnt");
	if (self < 0 || target < 0)
		fail_after_clone(pid, "failed to open mount namespaces: %s", strerror(errno));
	if (setns(target, CLONE_NEWNS) < 0)
		fail_after_clone(pid, "failed to enter the container's mount namespace: %s", strerror(errno));
	const char *what = u.view_at;
	int moved = (int)syscall(SYS_move_mount, holder, "", AT_FDCWD, u.view_at, U_MOVE_MOUNT_F_EMPTY_PATH);
	if (moved == 0) {
		what = c->root;
		moved = (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, c->root, U_MOVE_MOUNT_F_EMPTY_PATH);
	}
	for (size_t i = 0; moved == 0 && i < c->n_mounts; i++) {
		if (binds[i] < 0)
			continue;
		what = c->mounts[i].source;
		moved = (int)syscall(SYS_move_mount, binds[i], "", AT_FDCWD, c->mounts[i].source, U_MOVE_MOUNT_F_EMPTY_PATH);
	}
	int err = errno;
	if (setns(self, CLONE_NEWNS) < 0)
		fail_after_clone(pid, "failed to return to our mount namespace: %s", strerror(errno));
	if (rootdir >= 0 && (fchdir(rootdir) < 0 || chroot(".") < 0))
		warnx_("failed to return to the root directory: %s", strerror(errno));
	if (cwd >= 0 && fchdir(cwd) < 0)
		warnx_("failed to return to the working directory: %s", strerror(errno));
	if (moved < 0)
		fail_after_clone(pid, "failed to mount %s inside the container: %s", what, strerror(err));
	close(target);
	close(self);
	if (cwd >= 0)
		close(cwd);
	if (rootdir >= 0)
		close(rootdir);
	for (size_t i = 0; i < c->n_mounts; i++)
		if (binds[i] >= 0)
			close(binds[i]);
	close(holder);
	close(tree);
}

/* supervise mode: the range was picked by the (exited) prepare process; the waiting child still
 * holds the lock through its copy of the fd. Take that fd over, and the shift for the cgroup. */
void userns_adopt(struct config *c, pid_t pid)
{
	if (!u.lock_dir)
		return;
	char buf[128] = "";
	int fd = open_proc(pid, "uid_map");
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	unsigned long inside = 1, shift = 0;
	if (n <= 0 || sscanf(buf, "%lu %lu", &inside, &shift) != 2 || inside != 0)
		die("failed to read the container's uid map");
	c->uid_shift = shift;
	char want[4096], path[64], link[4096];
	snprintf(want, sizeof(want), "%s/%lu", u.lock_dir, shift);
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		die("failed to list the container's descriptors: %s", strerror(errno));
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct dirent *e;
	while (pidfd >= 0 && (e = readdir(d))) {
		char p[320];
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		ssize_t l = readlink(p, link, sizeof(link) - 1);
		if (l <= 0)
			continue;
		link[l] = '\0';
		if (strcmp(link, want))
			continue;
		u.lock_fd = (int)syscall(SYS_pidfd_getfd, pidfd, atoi(e->d_name), 0);
		break;
	}
	closedir(d);
	if (pidfd >= 0)
		close(pidfd);
	if (u.lock_fd < 0)
		die("failed to take over the lock of UID range %lu", shift);
}

/* At the supervisor's end: remove the range's lock file while still holding the lock (as
 * systemd's release_lock_file() does; a new locker re-checks the inode after locking), so the
 * lock directory does not keep one file per range ever used. */
void userns_release(const struct config *c)
{
	if (u.lock_fd < 0 || !u.lock_dir)
		return;
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s/%lu", u.lock_dir, c->uid_shift) < sizeof(path))
		unlink(path);
	close(u.lock_fd);
	u.lock_fd = -1;
}

/* idmap-probe PATH: exit 0 when PATH's file system takes idmapped mounts (for ownership=auto on
 * file systems the launcher does not know). A throw-away user namespace carries the map. */
int userns_idmap_probe(const char *path)
{
	int sp[2];
	if (pipe2(sp, O_CLOEXEC) < 0)
		return 2;
	pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL);
	if (pid < 0)
		return 2;
	if (pid == 0) {
		char ch;
		close(sp[1]);
		(void)!read(sp[0], &ch, 1); /* until the parent is done with our namespace */
		_exit(0);
	}
	close(sp[0]);
	char p[64], map[64];
	snprintf(map, sizeof(map), "0 %lu %lu\n", UID_BASE_MAX, UID_RANGE);
	snprintf(p, sizeof(p), "/proc/%d/uid_map", (int)pid);
	int ok = write_file(p, map) == 0;
	snprintf(p, sizeof(p), "/proc/%d/gid_map", (int)pid);
	ok = ok && write_file(p, map) == 0;
	int ns = ok ? open_proc(pid, "ns/user") : -1;
	int tree = ns >= 0 ? (int)syscall(SYS_open_tree, AT_FDCWD, path, U_OPEN_TREE_CLONE | O_CLOEXEC) : -1;
	struct u_mount_attr attr = { .attr_set = U_MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)ns };
	ok = tree >= 0 && syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof(attr)) == 0;
	close(sp[1]);
	waitpid(pid, NULL, 0);
	return ok ? 0 : 1;
}
