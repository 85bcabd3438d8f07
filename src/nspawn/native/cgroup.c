/* Cgroups: put the container into a fresh sub-cgroup it may write (unless someone, e.g.
 * machined's scope, already placed it), show it its own subtree through a cgroup namespace,
 * and remove the sub-cgroup when the container is gone.
 *
 * Host layouts: unified (cgroup2 on /sys/fs/cgroup), hybrid (tmpfs on /sys/fs/cgroup with v1
 * controllers, name=systemd and cgroup2 on ./unified) and legacy. Inside the container the same
 * layout is rebuilt as systemd-nspawn 252 does on such a host: controllers read-only, the
 * name=systemd and unified hierarchies writable, the tmpfs read-only. */
#define _GNU_SOURCE
#include "nsexec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#define CGROUP2_MAGIC 0x63677270
#define CGROUP1_MAGIC 0x27e0eb

static bool is_fs(const char *path, long magic)
{
	struct statfs sf;
	return statfs(path, &sf) == 0 && (long)sf.f_type == magic;
}

static const char *unified_mount(void)
{
	if (is_fs("/sys/fs/cgroup", CGROUP2_MAGIC))
		return "/sys/fs/cgroup";
	if (is_fs("/sys/fs/cgroup/unified", CGROUP2_MAGIC))
		return "/sys/fs/cgroup/unified";
	return NULL;
}

/* The path of PID in the hierarchy named KEY ("" for cgroup2, "name=systemd") from /proc/PID/cgroup. */
static int cgroup_of(pid_t pid, const char *key, char *out, size_t len)
{
	char path[64], line[4096];
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/cgroup");
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	int found = -1;
	while (fgets(line, sizeof(line), f)) {
		char *a = strchr(line, ':');
		if (!a)
			continue;
		char *b = strchr(a + 1, ':');
		if (!b)
			continue;
		*b = '\0';
		if (strcmp(a + 1, key) == 0) {
			char *p = b + 1;
			p[strcspn(p, "\n")] = '\0';
			snprintf(out, len, "%s", p);
			found = 0;
			break;
		}
	}
	fclose(f);
	if (found < 0)
		errno = ENOENT;
	return found;
}

/* rmdir a cgroup and everything the container created below it, depth first. */
static int rmdir_tree(const char *path)
{
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_type != DT_DIR || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char sub[4096];
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			rmdir_tree(sub);
		}
		closedir(d);
	}
	return rmdir(path);
}

static void chown_cgroup(const char *dir, uid_t uid)
{
	static const char *const files[] = { "", "/cgroup.procs", "/cgroup.threads", "/cgroup.subtree_control", "/tasks", "/notify_on_release", "/cgroup.clone_children" };
	char p[4096];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", dir, files[i]);
		if (chown(p, uid, uid) < 0 && errno != ENOENT)
			warnx_("failed to chown %s: %s", p, strerror(errno));
	}
}

/* Does a cgroup tree still hold a process? (cgroup.procs of every level; v1 has no cgroup.events) */
static bool tree_populated(const char *path)
{
	char procs[4200];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", path);
	FILE *f = fopen(procs, "re");
	if (f) {
		int ch = fgetc(f);
		fclose(f);
		if (ch != EOF)
			return true;
	}
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool populated = false;
	struct dirent *e;
	while (!populated && (e = readdir(d))) {
		if (e->d_type != DT_DIR || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char sub[4400];
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		populated = tree_populated(sub);
	}
	closedir(d);
	return populated;
}

/* Every live supervisor holds flock(LOCK_EX) on its container's cgroup directory. A supervisor
 * that was SIGKILLed could not remove its cgroup; its lock died with it: remove such unlocked,
 * empty mctl-nspawn-* trees next to ours. */
static void sweep_stale(const char *parent)
{
	DIR *d = opendir(parent);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_type != DT_DIR || strncmp(e->d_name, "mctl-nspawn-", 12) != 0)
			continue;
		char sub[4400];
		snprintf(sub, sizeof(sub), "%s/%s", parent, e->d_name);
		int fd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 && !tree_populated(sub))
			rmdir_tree(sub);
		close(fd);
	}
	closedir(d);
}

/* mkdir + lock; the locked directory's fd (kept open: the lock lives as long as this
 * supervisor), or -1 with errno. A sweeper may take a just-made directory for stale between the
 * two: then it is gone and we make it again. */
static int make_locked(const char *path)
{
	for (int tries = 0; tries < 3; tries++) {
		if (mkdir(path, 0755) < 0)
			return -1;
		int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0 && flock(fd, LOCK_EX) == 0) {
			struct stat st;
			if (stat(path, &st) == 0)
				return fd;
		}
		if (fd >= 0)
			close(fd);
	}
	errno = EBUSY;
	return -1;
}

/* Make MOUNT/BASE/mctl-nspawn-NAME (or ...-NAME-PID when a container of that name runs) for the
 * container; its locked fd, or -1 with errno. */
static int create_in(const char *mount, const char *base, const struct config *c, char *created, size_t len)
{
	const char *sep = strcmp(base, "/") == 0 ? "" : base;
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s%s", mount, sep);
	sweep_stale(parent);
	snprintf(created, len, "%s%s/mctl-nspawn-%s", mount, sep, c->name);
	int fd = make_locked(created);
	if (fd < 0 && errno == EEXIST) {
		/* taken by a running container of the same name (names are unique only when registered) */
		snprintf(created, len, "%s%s/mctl-nspawn-%s-%d", mount, sep, c->name, (int)getpid());
		fd = make_locked(created);
	}
	if (fd < 0) {
		created[0] = '\0';
		return -1;
	}
	if (c->userns)
		chown_cgroup(created, (uid_t)c->uid_shift);
	return fd;
}

/* Create MOUNT/BASE/mctl-nspawn-NAME and move PID there. Returns 0 and fills created, or -1. */
static int place_in(const char *mount, const char *base, const struct config *c, pid_t pid, char *created, size_t len)
{
	if (create_in(mount, base, c, created, len) < 0)
		return -1;
	char procs[4200], num[32];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", created);
	snprintf(num, sizeof(num), "%d", (int)pid);
	if (write_file(procs, num) < 0) {
		int saved = errno;
		rmdir(created);
		created[0] = '\0';
		errno = saved;
		return -1;
	}
	return 0;
}

/* The container's cgroup2 directory when it was made before the clone (cgroup_precreate). */
static char precreated[4096];

int cgroup_precreate(const struct config *c)
{
	precreated[0] = '\0';
	const char *um = unified_mount();
	char ours[4096];
	if (*c->cgroup || !um || cgroup_of(0, "", ours, sizeof(ours)) < 0)
		return -1;
	return create_in(um, ours, c, precreated, sizeof(precreated));
}

const char *cgroup_precreated_path(void)
{
	return precreated;
}

void cgroup_precreate_unused(int fd)
{
	if (fd >= 0)
		close(fd);
	if (precreated[0])
		rmdir(precreated);
	precreated[0] = '\0';
}

/* Is the cgroup2 path REL (from /proc/PID/cgroup) a mctl-nspawn-* directory right below OURS? */
static bool ours_below(const char *ours, const char *rel)
{
	size_t n = strcmp(ours, "/") == 0 ? 0 : strlen(ours);
	return strncmp(rel, ours, n) == 0 && strncmp(rel + n, "/mctl-nspawn-", 13) == 0 && !strchr(rel + n + 1, '/');
}

/* The name=systemd (v1) hierarchy of a hybrid host is only worth a migration when systemd runs
 * in the container as PID 1 and needs its own subtree there: a v1 hierarchy has no
 * CLONE_INTO_CGROUP. A command container keeps our cgroup in it, shown read-only. */
static bool wants_systemd_hierarchy(const struct config *c)
{
	if (c->boot)
		return true;
	if (c->as_pid2 || c->argc == 0)
		return false;
	const char *slash = strrchr(c->argv[0], '/');
	const char *base = slash ? slash + 1 : c->argv[0];
	return !strcmp(base, "systemd") || !strcmp(base, "init");
}

int cgroup_place(const struct config *c, pid_t pid, char *created_unified, size_t len1, char *created_systemd, size_t len2, bool *systemd_delegated)
{
	created_unified[0] = created_systemd[0] = '\0';
	*systemd_delegated = true;
	const char *um = unified_mount();
	char ours[4096], theirs[4096];
	if (*c->cgroup) {
		/* an explicit cgroup path (relative to the hierarchy roots) */
		char procs[4300], num[32];
		snprintf(num, sizeof(num), "%d", (int)pid);
		if (um) {
			snprintf(procs, sizeof(procs), "%s%s/cgroup.procs", um, c->cgroup);
			if (write_file(procs, num) < 0)
				return -1;
		}
		if (is_fs("/sys/fs/cgroup/systemd", CGROUP1_MAGIC)) {
			snprintf(procs, sizeof(procs), "/sys/fs/cgroup/systemd%s/cgroup.procs", c->cgroup);
			if (write_file(procs, num) < 0)
				return -1;
		}
		return 0;
	}
	if (um && cgroup_of(0, "", ours, sizeof(ours)) == 0 && cgroup_of(pid, "", theirs, sizeof(theirs)) == 0) {
		char full[8200];
		snprintf(full, sizeof(full), "%s%s", um, theirs);
		if (precreated[0] && !strcmp(full, precreated)) {
			/* run mode: started there by clone3(CLONE_INTO_CGROUP), and we hold its lock */
			snprintf(created_unified, len1, "%s", precreated);
		} else if (precreated[0]) {
			cgroup_precreate_unused(-1);
		} else if (!strcmp(ours, theirs)) {
			if (place_in(um, ours, c, pid, created_unified, len1) < 0)
				return -1;
		} else if (ours_below(ours, theirs)) {
			/* supervise mode: `prepare` started it there and has exited, taking the lock along */
			int fd = open(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd < 0)
				return -1;
			/* a sweeper of another start may hold it for a moment; never wait forever */
			int tries = 0;
			while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
				if (errno != EWOULDBLOCK || ++tries == 400)
					return -1;
				struct timespec ts = { 0, 5 * 1000 * 1000 };
				nanosleep(&ts, NULL);
			}
			snprintf(created_unified, len1, "%s", full);
		} else {
			/* a manager (machined's scope) moved it: `prepare`'s directory is empty now */
			const char *sep = strcmp(ours, "/") == 0 ? "" : ours;
			char parent[8200];
			snprintf(parent, sizeof(parent), "%s%s", um, sep);
			sweep_stale(parent);
		}
	}
	if (is_fs("/sys/fs/cgroup/systemd", CGROUP1_MAGIC) && cgroup_of(0, "name=systemd", ours, sizeof(ours)) == 0 &&
	    cgroup_of(pid, "name=systemd", theirs, sizeof(theirs)) == 0 && strcmp(ours, theirs) == 0) {
		if (!wants_systemd_hierarchy(c))
			*systemd_delegated = false;
		else if (place_in("/sys/fs/cgroup/systemd", ours, c, pid, created_systemd, len2) < 0)
			return -1;
	}
	return 0;
}

void cgroup_remove(const char *unified_path, const char *systemd_path)
{
	const char *paths[2] = { unified_path, systemd_path };
	for (int i = 0; i < 2; i++) {
		if (!paths[i] || !paths[i][0])
			continue;
		/* the kernel kills the rest of the PID namespace after its init: give it a moment */
		for (int tries = 0; tries < 1000; tries++) {
			if (rmdir_tree(paths[i]) == 0 || errno == ENOENT)
				break;
			if (tries == 999)
				warnx_("failed to remove cgroup %s: %s", paths[i], strerror(errno));
			struct timespec ts = { 0, 5 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
}

int cgroup_mount_inside(const char *root, bool systemd_writable)
{
	char dst[4096];
	snprintf(dst, sizeof(dst), "%s/sys/fs/cgroup", root);
	if (is_fs("/sys/fs/cgroup", CGROUP2_MAGIC))
		return mount("cgroup2", dst, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);

	unsigned long ro = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=4m,nr_inodes=1k") < 0)
		return -1;
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return -1;
	char line[4096];
	int r = 0;
	while (r == 0 && fgets(line, sizeof(line), f)) {
		char *a = strchr(line, ':');
		char *b = a ? strchr(a + 1, ':') : NULL;
		if (!b)
			continue;
		*b = '\0';
		const char *ctrls = a + 1;
		char sub[4200];
		if (*ctrls == '\0') {
			if (!is_fs("/sys/fs/cgroup/unified", CGROUP2_MAGIC))
				continue;
			snprintf(sub, sizeof(sub), "%s/unified", dst);
			if (mkdir(sub, 0755) < 0 || mount("cgroup2", sub, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
				r = -1;
		} else if (!strcmp(ctrls, "name=systemd")) {
			snprintf(sub, sizeof(sub), "%s/systemd", dst);
			if (mkdir(sub, 0755) < 0 || mount("cgroup", sub, "cgroup", systemd_writable ? MS_NOSUID | MS_NODEV | MS_NOEXEC : ro, "none,name=systemd") < 0)
				r = -1;
		} else if (strncmp(ctrls, "name=", 5) != 0) {
			snprintf(sub, sizeof(sub), "%s/%s", dst, ctrls);
			if (mkdir(sub, 0755) < 0 || mount("cgroup", sub, "cgroup", ro, ctrls) < 0) {
				r = -1;
				break;
			}
			if (strchr(ctrls, ',')) {
				/* joined controllers ("cpu,cpuacct"): one link per name, as on the host */
				char names[256];
				snprintf(names, sizeof(names), "%s", ctrls);
				for (char *save = NULL, *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
					char link[4400];
					snprintf(link, sizeof(link), "%s/%s", dst, t);
					if (symlink(ctrls, link) < 0 && errno != EEXIST)
						r = -1;
				}
			}
		}
	}
	fclose(f);
	if (r < 0)
		return -1;
	return mount(NULL, dst, NULL, MS_REMOUNT | ro, "mode=0755,size=4m,nr_inodes=1k");
}
