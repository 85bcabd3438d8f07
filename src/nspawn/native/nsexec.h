/* mctl-nsexec: the native half of mctl-nspawn. Shared declarations.
 *
 * Why native: no JavaScript can run in a forked child and unshare(CLONE_NEWUSER) fails in a
 * multithreaded process, so the clone of the container and everything the child does before
 * exec'ing the payload is C. The same binary later becomes the container's small supervisor
 * (no Node process stays alive per container). See docs/nspawn-internals.md. */
#ifndef MCTL_NSEXEC_H
#define MCTL_NSEXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum console_mode { CONSOLE_INTERACTIVE, CONSOLE_READ_ONLY, CONSOLE_PASSIVE, CONSOLE_PIPE };

enum mount_kind { MOUNT_BIND, MOUNT_TMPFS, MOUNT_OVERLAY, MOUNT_INACCESSIBLE };

struct mount_op {
	enum mount_kind kind;
	const char *source;      /* bind: host path; overlay: lowerdir list ("a:b") */
	const char *destination; /* path inside the container */
	const char *options;     /* tmpfs options; overlay: upperdir ("" = none) */
	const char *extra;       /* overlay: workdir */
	bool read_only;
	bool recursive;
	bool temporary_upper; /* overlay: upper + work on a fresh tmpfs that dies with the namespace */
};

struct host_file {
	const char *path; /* relative to /run/host */
	const char *content; /* text, or hex digits when hex */
	unsigned mode;
	unsigned dir_mode;
	bool hex;
};

enum root_layer { ROOT_PLAIN, ROOT_OVERLAY, ROOT_VOLATILE };

#define MAX_ITEMS 256

/* The container's network as src/net planned it (net.c makes it; tokens net-*, see config.c). */
struct net_veth {
	const char *name, *mac;       /* host side */
	const char *peer, *peer_mac;  /* container side, created right in its network namespace */
	const char *master;           /* bridge to join, NULL = none */
	const char *alt_name;         /* the untruncated name, NULL = none */
};
struct net_addr {
	bool container;               /* false: host side (replaces a zone bridge's existing address) */
	const char *ifname, *address;
	int prefix;
};
struct net_plan {
	bool active;
	const char *bridge, *bridge_alt; /* a zone bridge to create unless it exists */
	struct net_veth veths[9];
	size_t n_veths;
	struct net_addr addrs[8];
	size_t n_addrs;
	struct { const char *ifname, *gateway; } routes[4]; /* container side default routes */
	size_t n_routes;
	const char *moves[16];        /* --network-interface */
	size_t n_moves;
	struct { const char *kind, *parent, *name, *mac; } vlans[16]; /* macvlan (mac) / ipvlan */
	size_t n_vlans;
	struct { const char *key, *value; } sysctls[4]; /* under /proc/sys/net, once the links exist */
	size_t n_sysctls;
	const char *nft_script;       /* one libnftables transaction, NULL = none */
	int alloc_lock_fd;            /* src/net's alloc.lock, released once the links exist (-1) */
	int machine_lock_fd;          /* the machine's lock, let go before collecting after a failure (-1) */
	const char *watch_lock;       /* start the watcher: wait for this lock, then run the collector */
	const char *collector[12];    /* the collector's argv */
	size_t n_collector;
	char ifindices[64];           /* filled by net_setup: host-side ifindices, "1,2" */
};

struct config {
	const char *root;
	bool read_only_root;
	enum root_layer root_layer;
	const char *name;
	const char *hostname;
	const char *uuid;
	bool boot;
	bool as_pid2;
	enum console_mode console;
	int kill_signal;
	bool private_network;
	bool userns;
	unsigned long uid_shift, uid_range;
	uint64_t caps_keep;
	uint64_t caps_ambient;
	bool no_new_privs;
	bool seccomp;
	bool suppress_sync;
	const char *syscall_allow[MAX_ITEMS]; /* --system-call-filter: names and @groups added ... */
	size_t n_syscall_allow;
	const char *syscall_deny[MAX_ITEMS];  /* ... and removed (removal wins) */
	size_t n_syscall_deny;
	bool notify_ready;
	bool quiet;
	const char *cgroup; /* "" = create a fresh sub-cgroup of ours */
	uid_t uid;
	gid_t gid;
	gid_t groups[64];
	size_t n_groups;
	const char *chdir;
	const char *env[MAX_ITEMS];
	size_t n_env;
	struct mount_op mounts[MAX_ITEMS];
	size_t n_mounts;
	struct host_file host_files[64];
	size_t n_host_files;
	const char *bus_address; /* prepare: connect here to be the scope's Controller= ("" = no) */
	int bus_fd;              /* supervise: the connection's fd in the container child (-1 = none) */
	const char *bus_trusted_name[4];  /* well-known names whose owner's RequestStop is obeyed ... */
	const char *bus_trusted_owner[4]; /* ... and their owners at registration (followed afterwards) */
	size_t n_bus_trusted;
	int lock_fd[4];          /* supervise: image lock files held for the container's life ... */
	const char *lock_path[4]; /* ... removed at the end when we can take them exclusively */
	size_t n_lock_files;
	struct { int resource; unsigned long long soft, hard; } rlimits[16]; /* ~0ULL = infinity */
	size_t n_rlimits;
	bool has_oom_score_adjust;
	int oom_score_adjust;
	const char *cpu_affinity; /* "0-3,8", NULL = inherit */
	long personality;         /* personality(2) value, -1 = the host's */
	struct { int host_port; const char *address; int container_port; } proxies[16]; /* proxy.c */
	size_t n_proxies;
	struct net_plan net;
	char *const *argv; /* payload argv (NULL-terminated); may be empty */
	size_t argc;
};

/* Messages on the socketpair between supervisor and container child. */
#define MSG_GO 'G'     /* supervisor -> child: maps, cgroups and hooks are done */
#define MSG_CGROUP 'C' /* supervisor -> child: the cgroup is placed (sent while the child mounts) */
#define MSG_CGROUP_SYSTEMD_RO 'c' /* ... and the v1 name=systemd hierarchy is not delegated */
#define MSG_READY 'R'  /* child -> supervisor: setup done, fds attached (pty master, notify socket) */
#define MSG_ERROR 'E'  /* child -> supervisor: one-line error text follows */

/* config.c */
int config_parse(struct config *c, int argc, char **argv);

/* util.c */
extern int die_fd; /* where die() reports: stderr, or the launcher's report pipe in prepare mode */
extern void (*die_cleanup)(void); /* run by die() after its line (once) */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int write_file(const char *path, const char *content);
int mkdir_p(const char *path, mode_t mode);
int send_fds(int sock, char tag, const char *text, const int *fds, size_t n_fds);
ssize_t recv_fds(int sock, char *buf, size_t len, int *fds, size_t *n_fds);
const char *signal_name(int sig);
int remove_tree(const char *path);

/* bus.c: a scope controller's D-Bus connection */
int bus_open(const char *address, char *unique, size_t unique_len);
int bus_watch(int fd, const char *const *names, const char *const *owners, size_t n);
int bus_dispatch(int fd);

/* child.c: runs in the cloned container child; never returns. */
extern int child_report_fd; /* prepare mode: the launcher's report pipe, not the container's business */
extern int child_parent_end; /* the supervisor's socket end, closed by the child after GO */
extern int child_cgroup_fd; /* the container's cgroup2 directory (CLONE_INTO_CGROUP), closed by the child */
extern int child_bus_fd; /* prepare: the controller's bus connection, held until GO */
extern int child_builder_fd; /* -U: where the builder hands over the root, console and notify fds */
void child_main(const struct config *c, int sock) __attribute__((noreturn));
void builder_main(const struct config *c, pid_t pid, int chan) __attribute__((noreturn));

/* cgroup.c */
int cgroup_precreate(const struct config *c); /* the container's cgroup2 dir fd for CLONE_INTO_CGROUP, or -1 */
void cgroup_precreate_unused(int fd);
const char *cgroup_precreated_path(void); /* "" when none */
int cgroup_place(const struct config *c, pid_t pid, char *created_unified, size_t len1, char *created_systemd, size_t len2, bool *systemd_delegated);
void cgroup_remove(const char *unified_path, const char *systemd_path);
int cgroup_mount_inside(const char *root, bool systemd_writable);

/* proxy.c: [::1]:PORT forwards relayed to the container's IPv6 address */
struct pollfd;
void proxy_setup(const struct config *c);
size_t proxy_pollfds(struct pollfd *p, size_t max);
void proxy_dispatch(const struct pollfd *p, size_t n);
#define PROXY_MAX_POLLFDS (16 + 2 * 64)

/* net.c: the container's links, addresses, routes and rules, made by the helper itself */
int net_config_key(struct config *c, int argc, char **argv); /* tokens used, 0 = not a net-* key */
void net_start(struct config *c); /* before the clone: the rules (in a forked worker) and the watcher */
void net_container_started(pid_t pid); /* run mode: the container to kill before collecting after a failure */
int net_setup(struct config *c, pid_t pid); /* links etc.; -1: undone its own part (the caller kills PID) */
void net_abort(struct config *c) __attribute__((noreturn)); /* after a failed net_setup: die (collecting, see net_failed) */
void net_failed(void); /* run mode, any failed start: kill the container, collect its network now */
void net_child_close(const struct config *c); /* in the container child: fds that are not its business */
void net_bring_up_loopback(void); /* in the container child, with a private network */

/* seccomp.c */
int seccomp_install_default(const struct config *c);
bool seccomp_filter_item_known(const char *item); /* a system call name or @group of systemd 252 */

/* userns.c: range picking and the root view (keys userns-pick, userns-root) */
int userns_config_key(struct config *c, int argc, char **argv);
void userns_before_clone(struct config *c);
void userns_after_clone(const struct config *c, pid_t pid);
void userns_adopt(struct config *c, pid_t pid);
void userns_release(const struct config *c);
int userns_idmap_probe(const char *path);

/* supervisor.c */
int supervise(struct config *c, pid_t leader, int sock, int bus) __attribute__((noreturn));

/* stub-init.c */
void stub_init_run(pid_t payload) __attribute__((noreturn));

#endif
