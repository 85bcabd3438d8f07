/* The helper's configuration arrives as argv tokens written by launch.ts (helperArgs()):
 * "KEY VALUE..." groups with a fixed arity per key, then "--" and the payload argv.
 * Arbitrary bytes except NUL survive argv, and there is nothing to escape. */
#include "nsexec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool parse_bool(const char *v) { return strcmp(v, "1") == 0; }

static unsigned long parse_ulong(const char *key, const char *v, int base)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, base);
	if (errno || *v == '\0' || *end != '\0')
		die("internal: bad number for %s: '%s'", key, v);
	return n;
}

int config_parse(struct config *c, int argc, char **argv)
{
	memset(c, 0, sizeof(*c));
	c->console = CONSOLE_PIPE;
	c->kill_signal = 9;
	c->cgroup = "";
	c->chdir = "";
	c->bus_address = "";
	c->bus_fd = -1;
	c->personality = -1;
	c->net.alloc_lock_fd = -1;
	c->net.machine_lock_fd = -1;
	int i = 0;
	while (i < argc) {
		const char *k = argv[i];
		if (strcmp(k, "--") == 0) {
			c->argv = &argv[i + 1];
			c->argc = (size_t)(argc - i - 1);
			return 0;
		}
#define NEED(n) do { if (i + (n) >= argc) die("internal: %s needs %d values", k, (n)); } while (0)
		NEED(1);
		const char *v = argv[i + 1];
		int used = 2;
		if (!strcmp(k, "root")) c->root = v;
		else if (!strcmp(k, "read-only")) c->read_only_root = parse_bool(v);
		else if (!strcmp(k, "root-layer")) {
			if (!strcmp(v, "plain")) c->root_layer = ROOT_PLAIN;
			else if (!strcmp(v, "overlay")) c->root_layer = ROOT_OVERLAY;
			else if (!strcmp(v, "volatile")) c->root_layer = ROOT_VOLATILE;
			else die("internal: bad root layer '%s'", v);
		} else if (!strcmp(k, "name")) c->name = v;
		else if (!strcmp(k, "hostname")) c->hostname = v;
		else if (!strcmp(k, "uuid")) c->uuid = v;
		else if (!strcmp(k, "boot")) c->boot = parse_bool(v);
		else if (!strcmp(k, "as-pid2")) c->as_pid2 = parse_bool(v);
		else if (!strcmp(k, "console")) {
			if (!strcmp(v, "interactive")) c->console = CONSOLE_INTERACTIVE;
			else if (!strcmp(v, "read-only")) c->console = CONSOLE_READ_ONLY;
			else if (!strcmp(v, "passive")) c->console = CONSOLE_PASSIVE;
			else if (!strcmp(v, "pipe")) c->console = CONSOLE_PIPE;
			else die("internal: bad console mode '%s'", v);
		} else if (!strcmp(k, "kill-signal")) c->kill_signal = (int)parse_ulong(k, v, 10);
		else if (!strcmp(k, "private-network")) c->private_network = parse_bool(v);
		else if (!strcmp(k, "userns")) {
			NEED(2);
			c->userns = true;
			c->uid_shift = parse_ulong(k, v, 10);
			c->uid_range = parse_ulong(k, argv[i + 2], 10);
			used = 3;
		} else if (!strcmp(k, "caps")) c->caps_keep = parse_ulong(k, v, 16);
		else if (!strcmp(k, "ambient")) c->caps_ambient = parse_ulong(k, v, 16);
		else if (!strcmp(k, "no-new-privs")) c->no_new_privs = parse_bool(v);
		else if (!strcmp(k, "seccomp")) c->seccomp = parse_bool(v);
		else if (!strcmp(k, "suppress-sync")) c->suppress_sync = parse_bool(v);
		else if (!strcmp(k, "syscall-allow") || !strcmp(k, "syscall-deny")) {
			/* syscall-allow|syscall-deny NAME|@GROUP */
			bool allow = k[8] == 'a';
			/* a name of another architecture is accepted (and does nothing here), as by nspawn;
			 * an unknown group, which nspawn ignores with a warning, is an error */
			if (!seccomp_filter_item_known(v))
				die("--system-call-filter: unknown system call %s'%s'", v[0] == '@' ? "group " : "", v);
			size_t *n = allow ? &c->n_syscall_allow : &c->n_syscall_deny;
			if (*n >= MAX_ITEMS) die("too many --system-call-filter entries");
			(allow ? c->syscall_allow : c->syscall_deny)[(*n)++] = v;
		}
		else if (!strcmp(k, "notify-ready")) c->notify_ready = parse_bool(v);
		else if (!strcmp(k, "quiet")) c->quiet = parse_bool(v);
		else if (!strcmp(k, "cgroup")) c->cgroup = v;
		else if (!strcmp(k, "uid")) c->uid = (uid_t)parse_ulong(k, v, 10);
		else if (!strcmp(k, "gid")) c->gid = (gid_t)parse_ulong(k, v, 10);
		else if (!strcmp(k, "group")) {
			if (c->n_groups >= sizeof(c->groups) / sizeof(c->groups[0])) die("too many supplementary groups");
			c->groups[c->n_groups++] = (gid_t)parse_ulong(k, v, 10);
		} else if (!strcmp(k, "chdir")) c->chdir = v;
		else if (!strcmp(k, "rlimit")) {
			/* rlimit RESOURCE SOFT HARD ("infinity" = RLIM_INFINITY) */
			NEED(3);
			if (c->n_rlimits >= sizeof(c->rlimits) / sizeof(c->rlimits[0])) die("internal: too many rlimits");
			c->rlimits[c->n_rlimits].resource = (int)parse_ulong(k, v, 10);
			c->rlimits[c->n_rlimits].soft = strcmp(argv[i + 2], "infinity") ? strtoull(argv[i + 2], NULL, 10) : ~0ULL;
			c->rlimits[c->n_rlimits].hard = strcmp(argv[i + 3], "infinity") ? strtoull(argv[i + 3], NULL, 10) : ~0ULL;
			c->n_rlimits++;
			used = 4;
		} else if (!strcmp(k, "oom-score-adjust")) {
			c->has_oom_score_adjust = true;
			c->oom_score_adjust = atoi(v);
		} else if (!strcmp(k, "cpu-affinity")) c->cpu_affinity = v;
		else if (!strcmp(k, "personality")) c->personality = (long)parse_ulong(k, v, 10);
		else if (!strcmp(k, "bus")) c->bus_address = v;
		else if (!strcmp(k, "bus-fd")) c->bus_fd = (int)parse_ulong(k, v, 10);
		else if (!strcmp(k, "bus-trust")) {
			/* bus-trust WELL-KNOWN-NAME OWNER */
			NEED(2);
			if (c->n_bus_trusted >= sizeof(c->bus_trusted_name) / sizeof(c->bus_trusted_name[0])) die("internal: too many trusted bus names");
			c->bus_trusted_name[c->n_bus_trusted] = v;
			c->bus_trusted_owner[c->n_bus_trusted++] = argv[i + 2];
			used = 3;
		}
		else if (!strcmp(k, "lock-file")) {
			/* lock-file FD PATH */
			NEED(2);
			if (c->n_lock_files >= sizeof(c->lock_fd) / sizeof(c->lock_fd[0])) die("internal: too many lock files");
			c->lock_fd[c->n_lock_files] = (int)parse_ulong(k, v, 10);
			c->lock_path[c->n_lock_files++] = argv[i + 2];
			used = 3;
		}
		else if (!strcmp(k, "env")) {
			if (c->n_env >= MAX_ITEMS - 1) die("too many environment variables");
			c->env[c->n_env++] = v;
		} else if (!strcmp(k, "bind")) {
			/* bind FLAGS SRC DST; FLAGS is "ro"/"rw" + optional ",norec" */
			NEED(3);
			if (c->n_mounts >= MAX_ITEMS) die("too many mounts");
			struct mount_op *m = &c->mounts[c->n_mounts++];
			m->kind = MOUNT_BIND;
			m->read_only = strncmp(v, "ro", 2) == 0;
			m->recursive = strstr(v, "norec") == NULL;
			m->source = argv[i + 2];
			m->destination = argv[i + 3];
			used = 4;
		} else if (!strcmp(k, "tmpfs")) {
			NEED(2);
			if (c->n_mounts >= MAX_ITEMS) die("too many mounts");
			struct mount_op *m = &c->mounts[c->n_mounts++];
			m->kind = MOUNT_TMPFS;
			m->destination = v;
			m->options = argv[i + 2];
			used = 3;
		} else if (!strcmp(k, "overlay")) {
			/* overlay DST LOWER(a:b) UPPER WORK; UPPER "" = read-only */
			NEED(4);
			if (c->n_mounts >= MAX_ITEMS) die("too many mounts");
			struct mount_op *m = &c->mounts[c->n_mounts++];
			m->kind = MOUNT_OVERLAY;
			m->destination = v;
			m->source = argv[i + 2];
			m->options = argv[i + 3];
			m->extra = argv[i + 4];
			used = 5;
		} else if (!strcmp(k, "overlay-tmp")) {
			/* overlay-tmp DST LOWER(a:b): writable, upper on a throw-away tmpfs */
			NEED(2);
			if (c->n_mounts >= MAX_ITEMS) die("too many mounts");
			struct mount_op *m = &c->mounts[c->n_mounts++];
			m->kind = MOUNT_OVERLAY;
			m->destination = v;
			m->source = argv[i + 2];
			m->temporary_upper = true;
			used = 3;
		} else if (!strcmp(k, "inaccessible")) {
			if (c->n_mounts >= MAX_ITEMS) die("too many mounts");
			struct mount_op *m = &c->mounts[c->n_mounts++];
			m->kind = MOUNT_INACCESSIBLE;
			m->destination = v;
		} else if (!strcmp(k, "host-file")) {
			/* host-file PATH MODE(octal) DIRMODE(octal) t|x CONTENT (x: hex, for binary data) */
			NEED(5);
			if (c->n_host_files >= 64) die("too many /run/host files");
			struct host_file *f = &c->host_files[c->n_host_files++];
			f->path = v;
			f->mode = (unsigned)parse_ulong(k, argv[i + 2], 8);
			f->dir_mode = (unsigned)parse_ulong(k, argv[i + 3], 8);
			f->hex = argv[i + 4][0] == 'x';
			f->content = argv[i + 5];
			used = 6;
		} else if (!strcmp(k, "proxy6")) {
			/* proxy6 HOSTPORT ADDRESS PORT (proxy.c) */
			NEED(3);
			if (c->n_proxies >= sizeof(c->proxies) / sizeof(c->proxies[0])) die("internal: too many forwards");
			c->proxies[c->n_proxies].host_port = (int)parse_ulong(k, v, 10);
			c->proxies[c->n_proxies].address = argv[i + 2];
			c->proxies[c->n_proxies++].container_port = (int)parse_ulong(k, argv[i + 3], 10);
			used = 4;
		} else if (!(used = net_config_key(c, argc - i, argv + i)) && !(used = userns_config_key(c, argc - i, argv + i)))
			die("internal: unknown key '%s'", k);
#undef NEED
		i += used;
	}
	die("internal: missing '--' before the payload");
}
