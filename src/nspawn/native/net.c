/* The container's network, made by the helper itself (the plan comes from src/net as net-*
 * tokens): the zone bridge, veths whose container side is created right inside the container's
 * network namespace (no move between namespaces: that costs an RCU grace period, ~10 ms),
 * moved, macvlan and ipvlan links, addresses and default routes on both sides, and mctl's
 * nftables rules through libnftables, which a forked worker runs while the container is made.
 * Doing this here instead of in the Node launcher keeps the start path free of koffi (~10 ms
 * to load) and overlaps it with the container's own mounts (docs/nspawn-internals.md).
 * A failure undoes the links made here and names the step in one line, in the words of
 * src/sys/netlink.ts: "create veth(ve-x): EEXIST (File exists)" (net_abort). */
#define _GNU_SOURCE
#include "nsexec.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- config tokens ---- */

static void need(const char *k, int argc, int n)
{
	if (argc < n + 1)
		die("internal: %s needs %d values", k, n);
}

#define ROOM(arr, n) do { if ((n) >= sizeof(arr) / sizeof((arr)[0])) die("internal: too many %s", k); } while (0)

static const char *opt(const char *v) { return strcmp(v, "-") ? v : NULL; }

int net_config_key(struct config *c, int argc, char **argv)
{
	struct net_plan *n = &c->net;
	const char *k = argv[0];
	if (strncmp(k, "net-", 4) != 0)
		return 0;
	n->active = true;
	if (!strcmp(k, "net-bridge")) {
		/* net-bridge NAME ALTNAME|- */
		need(k, argc, 2);
		n->bridge = argv[1];
		n->bridge_alt = opt(argv[2]);
		return 3;
	}
	if (!strcmp(k, "net-veth")) {
		/* net-veth NAME MAC PEER PEERMAC MASTER|- ALTNAME|- */
		need(k, argc, 6);
		ROOM(n->veths, n->n_veths);
		n->veths[n->n_veths++] = (struct net_veth){ argv[1], argv[2], argv[3], argv[4], opt(argv[5]), opt(argv[6]) };
		return 7;
	}
	if (!strcmp(k, "net-addr")) {
		/* net-addr host|container IFNAME ADDRESS PREFIX */
		need(k, argc, 4);
		ROOM(n->addrs, n->n_addrs);
		n->addrs[n->n_addrs++] = (struct net_addr){ !strcmp(argv[1], "container"), argv[2], argv[3], atoi(argv[4]) };
		return 5;
	}
	if (!strcmp(k, "net-route")) {
		/* net-route IFNAME GATEWAY (a default route inside the container) */
		need(k, argc, 2);
		ROOM(n->routes, n->n_routes);
		n->routes[n->n_routes].ifname = argv[1];
		n->routes[n->n_routes++].gateway = argv[2];
		return 3;
	}
	if (!strcmp(k, "net-move")) {
		need(k, argc, 1);
		ROOM(n->moves, n->n_moves);
		n->moves[n->n_moves++] = argv[1];
		return 2;
	}
	if (!strcmp(k, "net-macvlan") || !strcmp(k, "net-ipvlan")) {
		/* net-macvlan PARENT NAME MAC, net-ipvlan PARENT NAME */
		bool mac = k[4] == 'm';
		need(k, argc, mac ? 3 : 2);
		ROOM(n->vlans, n->n_vlans);
		n->vlans[n->n_vlans].kind = mac ? "macvlan" : "ipvlan";
		n->vlans[n->n_vlans].parent = argv[1];
		n->vlans[n->n_vlans].name = argv[2];
		n->vlans[n->n_vlans++].mac = mac ? argv[3] : NULL;
		return mac ? 4 : 3;
	}
	if (!strcmp(k, "net-sysctl")) {
		need(k, argc, 2);
		ROOM(n->sysctls, n->n_sysctls);
		n->sysctls[n->n_sysctls].key = argv[1];
		n->sysctls[n->n_sysctls++].value = argv[2];
		return 3;
	}
	if (!strcmp(k, "net-nft")) {
		need(k, argc, 1);
		n->nft_script = argv[1];
		return 2;
	}
	if (!strcmp(k, "net-alloc-lock") || !strcmp(k, "net-machine-lock")) {
		need(k, argc, 1);
		*(k[4] == 'a' ? &n->alloc_lock_fd : &n->machine_lock_fd) = atoi(argv[1]);
		return 2;
	}
	if (!strcmp(k, "net-watch")) {
		need(k, argc, 1);
		n->watch_lock = argv[1];
		return 2;
	}
	if (!strcmp(k, "net-collector")) {
		need(k, argc, 1);
		ROOM(n->collector, n->n_collector + 1);
		n->collector[n->n_collector++] = argv[1];
		return 2;
	}
	die("internal: unknown key '%s'", k);
}

/* ---- rtnetlink ---- */

struct nlreq {
	struct nlmsghdr h;
	char data[1024];
};

static char error_text[512];   /* the failed step, for die() */
static char kernel_says[256];  /* the kernel's extended ack message, if any */

/* Record the failed step for net_abort(); returns -ERR. */
static int fail_step(const char *what, const char *object, int err)
{
	const char *name = strerrorname_np(err);
	snprintf(error_text, sizeof(error_text), "%s(%s): %s (%s)", what, object, name ? name : "?", *kernel_says ? kernel_says : strerror(err));
	kernel_says[0] = '\0';
	return -err;
}

static void nl_begin(struct nlreq *r, int type, int flags, const void *head, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->h.nlmsg_len = NLMSG_LENGTH(len);
	r->h.nlmsg_type = (unsigned short)type;
	r->h.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
	memcpy(NLMSG_DATA(&r->h), head, len);
}

static struct rtattr *nl_attr(struct nlreq *r, int type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));
	if (NLMSG_ALIGN(r->h.nlmsg_len) + RTA_SPACE(len) > sizeof(*r))
		die("internal: netlink request too long");
	a->rta_type = (unsigned short)type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
	return a;
}

static void nl_str(struct nlreq *r, int type, const char *s) { nl_attr(r, type, s, strlen(s) + 1); }
static void nl_u32(struct nlreq *r, int type, uint32_t v) { nl_attr(r, type, &v, sizeof(v)); }
static struct rtattr *nl_nest(struct nlreq *r, int type) { return nl_attr(r, type, NULL, 0); }
static void nl_end(struct nlreq *r, struct rtattr *a) { a->rta_len = (unsigned short)((char *)r + r->h.nlmsg_len - (char *)a); }

static void nl_mac(struct nlreq *r, int type, const char *text)
{
	unsigned char mac[6];
	if (sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6)
		die("internal: bad MAC address '%s'", text);
	nl_attr(r, type, mac, sizeof(mac));
}

static int nl_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -1;
	int one = 1;
	/* errors carry the kernel's explanation; acks do not echo the whole request back */
	setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	return fd;
}

/* Send R and wait for its ack: 0, or a negative errno (kernel_says then holds the extack text). */
static int nl_talk(int fd, struct nlreq *r)
{
	static unsigned seq;
	r->h.nlmsg_seq = ++seq;
	kernel_says[0] = '\0';
	if (send(fd, r, r->h.nlmsg_len, 0) < 0)
		return -errno;
	char buf[8192] __attribute__((aligned(4)));
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		int left = (int)n;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR)
				continue;
			struct nlmsgerr *e = NLMSG_DATA(h);
			if (h->nlmsg_flags & NLM_F_ACK_TLVS) {
				size_t skip = sizeof(*e) + ((h->nlmsg_flags & NLM_F_CAPPED) ? 0 : e->msg.nlmsg_len - NLMSG_HDRLEN);
				int alen = (int)h->nlmsg_len - (int)NLMSG_HDRLEN - (int)skip;
				for (struct rtattr *a = (struct rtattr *)((char *)e + skip); alen > 0 && RTA_OK(a, alen); a = RTA_NEXT(a, alen))
					if (a->rta_type == NLMSGERR_ATTR_MSG)
						snprintf(kernel_says, sizeof(kernel_says), "%.*s", (int)RTA_PAYLOAD(a), (char *)RTA_DATA(a));
			}
			return e->error;
		}
	}
}

static int link_index(const char *name)
{
	unsigned i = if_nametoindex(name);
	return i ? (int)i : fail_step("find link", name, ENODEV);
}

static int link_request(int fd, int type, int flags, int index, unsigned up, void (*attrs)(struct nlreq *, const void *), const void *arg, const char *what, const char *object)
{
	struct nlreq r;
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = index, .ifi_flags = up, .ifi_change = up };
	nl_begin(&r, type, flags, &ifi, sizeof(ifi));
	if (attrs)
		attrs(&r, arg);
	int err = nl_talk(fd, &r);
	return err ? fail_step(what, object, -err) : 0; /* 0 or -errno */
}

struct veth_arg {
	const struct net_veth *v;
	int master;
	pid_t pid;
};

static void veth_attrs(struct nlreq *r, const void *p)
{
	const struct veth_arg *a = p;
	nl_str(r, IFLA_IFNAME, a->v->name);
	nl_mac(r, IFLA_ADDRESS, a->v->mac);
	if (a->master > 0)
		nl_u32(r, IFLA_MASTER, (uint32_t)a->master);
	struct rtattr *info = nl_nest(r, IFLA_LINKINFO);
	nl_str(r, IFLA_INFO_KIND, "veth");
	struct rtattr *data = nl_nest(r, IFLA_INFO_DATA);
	struct rtattr *peer = nl_nest(r, VETH_INFO_PEER);
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
	/* the peer's attributes follow its own ifinfomsg */
	memcpy((char *)r + r->h.nlmsg_len, &ifi, sizeof(ifi));
	r->h.nlmsg_len += NLMSG_ALIGN(sizeof(ifi));
	nl_str(r, IFLA_IFNAME, a->v->peer);
	nl_mac(r, IFLA_ADDRESS, a->v->peer_mac);
	nl_u32(r, IFLA_NET_NS_PID, (uint32_t)a->pid);
	nl_end(r, peer);
	nl_end(r, data);
	nl_end(r, info);
}

static void bridge_attrs(struct nlreq *r, const void *name)
{
	nl_str(r, IFLA_IFNAME, name);
	struct rtattr *info = nl_nest(r, IFLA_LINKINFO);
	nl_str(r, IFLA_INFO_KIND, "bridge");
	nl_end(r, info);
}

static void name_attr(struct nlreq *r, const void *name) { nl_str(r, IFLA_IFNAME, name); }

static void alt_name_attrs(struct nlreq *r, const void *alt)
{
	struct rtattr *list = nl_nest(r, IFLA_PROP_LIST | NLA_F_NESTED);
	nl_str(r, IFLA_ALT_IFNAME, alt);
	nl_end(r, list);
}

static void netns_attr(struct nlreq *r, const void *pid) { nl_u32(r, IFLA_NET_NS_PID, (uint32_t)*(const pid_t *)pid); }

struct vlan_arg {
	const char *kind, *name, *mac;
	int parent;
	pid_t pid;
};

static void vlan_attrs(struct nlreq *r, const void *p)
{
	const struct vlan_arg *a = p;
	nl_str(r, IFLA_IFNAME, a->name);
	nl_u32(r, IFLA_LINK, (uint32_t)a->parent);
	nl_u32(r, IFLA_NET_NS_PID, (uint32_t)a->pid);
	if (a->mac)
		nl_mac(r, IFLA_ADDRESS, a->mac);
	struct rtattr *info = nl_nest(r, IFLA_LINKINFO);
	nl_str(r, IFLA_INFO_KIND, a->kind);
	struct rtattr *data = nl_nest(r, IFLA_INFO_DATA);
	if (a->mac)
		nl_u32(r, IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE);
	else {
		uint16_t mode = IPVLAN_MODE_L2;
		nl_attr(r, IFLA_IPVLAN_MODE, &mode, sizeof(mode));
	}
	nl_end(r, data);
	nl_end(r, info);
}

static int parse_address(const char *text, unsigned char *bytes, int *family)
{
	*family = strchr(text, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(*family, text, bytes) != 1)
		die("internal: bad address '%s'", text);
	return *family == AF_INET6 ? 16 : 4;
}

static int add_address(int fd, const struct net_addr *a)
{
	int index = link_index(a->ifname);
	if (index < 0)
		return -1;
	unsigned char bytes[16];
	int family;
	int len = parse_address(a->address, bytes, &family);
	struct ifaddrmsg ifa = { .ifa_family = (unsigned char)family, .ifa_prefixlen = (unsigned char)a->prefix, .ifa_flags = family == AF_INET6 ? IFA_F_NODAD : 0, .ifa_index = (unsigned)index };
	struct nlreq r;
	/* the host side is a zone bridge's gateway too: set again what an earlier member set */
	nl_begin(&r, RTM_NEWADDR, NLM_F_CREATE | (a->container ? NLM_F_EXCL : NLM_F_REPLACE), &ifa, sizeof(ifa));
	nl_attr(&r, IFA_LOCAL, bytes, (size_t)len);
	nl_attr(&r, IFA_ADDRESS, bytes, (size_t)len);
	int err = nl_talk(fd, &r);
	if (err) {
		char object[128];
		snprintf(object, sizeof(object), "%s/%d on %s", a->address, a->prefix, a->ifname);
		return fail_step("add address", object, -err);
	}
	return 0;
}

static int add_default_route(int fd, const char *ifname, const char *gateway)
{
	int index = link_index(ifname);
	if (index < 0)
		return -1;
	unsigned char bytes[16];
	int family;
	int len = parse_address(gateway, bytes, &family);
	struct rtmsg rt = { .rtm_family = (unsigned char)family, .rtm_table = RT_TABLE_MAIN, .rtm_protocol = RTPROT_BOOT, .rtm_scope = RT_SCOPE_UNIVERSE, .rtm_type = RTN_UNICAST };
	struct nlreq r;
	nl_begin(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rt, sizeof(rt));
	nl_attr(&r, RTA_GATEWAY, bytes, (size_t)len);
	nl_u32(&r, RTA_OIF, (uint32_t)index);
	int err = nl_talk(fd, &r);
	if (err) {
		char object[128];
		snprintf(object, sizeof(object), "via %s on %s", gateway, ifname);
		return fail_step("add default route", object, -err);
	}
	return 0;
}

/* ---- the rules: libnftables in a forked worker ---- */

static pid_t nft_worker = -1;
static int nft_pipe = -1; /* the worker's error line, if any */

/* "Could not process rule: … (in: add rule …)": nft's first error line and the command it names. */
static void nft_one_line(const char *err, char *out, size_t len)
{
	char first[256] = "", second[256] = "";
	const char *p = err;
	for (int line = 0; *p && line < 2;) {
		const char *nl = strchrnul(p, '\n');
		const char *s = p;
		while (s < nl && (*s == ' ' || *s == '\t'))
			s++;
		if (s < nl) {
			char *dst = line == 0 ? first : second;
			snprintf(dst, 256, "%.*s", (int)(nl - s), s);
			line++;
		}
		p = *nl ? nl + 1 : nl;
	}
	const char *e = strncmp(first, "Error: ", 7) ? first : first + 7;
	if (*second && second[0] != '^')
		snprintf(out, len, "nft: %s (in: %s)", e, second);
	else
		snprintf(out, len, "nft: %s", *e ? e : "failed");
}

static void run_nft(const char *script, int out)
{
	void *lib = dlopen("libnftables.so.1", RTLD_NOW);
	if (!lib) {
		dprintf(out, "cannot load libnftables.so.1 (install nftables): %s", dlerror());
		_exit(1);
	}
	void *(*ctx_new)(uint32_t) = (void *(*)(uint32_t))dlsym(lib, "nft_ctx_new");
	int (*buffer_error)(void *) = (int (*)(void *))dlsym(lib, "nft_ctx_buffer_error");
	int (*buffer_output)(void *) = (int (*)(void *))dlsym(lib, "nft_ctx_buffer_output");
	const char *(*get_error)(void *) = (const char *(*)(void *))dlsym(lib, "nft_ctx_get_error_buffer");
	int (*run)(void *, const char *) = (int (*)(void *, const char *))dlsym(lib, "nft_run_cmd_from_buffer");
	void *ctx = ctx_new && buffer_error && buffer_output && get_error && run ? ctx_new(0) : NULL;
	if (!ctx) {
		dprintf(out, "nft: cannot set up libnftables");
		_exit(1);
	}
	buffer_output(ctx);
	buffer_error(ctx);
	if (run(ctx, script) != 0) {
		char line[512];
		const char *err = get_error(ctx); /* (a second call returns an empty buffer) */
		nft_one_line(err ? err : "", line, sizeof(line));
		dprintf(out, "%s", line);
		_exit(1);
	}
	_exit(0);
}

static void start_nft(const char *script)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	nft_worker = fork();
	if (nft_worker < 0)
		die("fork: %s", strerror(errno));
	if (nft_worker == 0) {
		close(p[0]);
		run_nft(script, p[1]);
	}
	close(p[1]);
	nft_pipe = p[0];
}

/* 0 when the rules are in, else -1 (with error_text set when REPORT: else an earlier failure is the one to tell). */
static int wait_nft(bool report)
{
	if (nft_worker < 0)
		return 0;
	char line[480] = "";
	ssize_t n;
	size_t len = 0;
	while (len < sizeof(line) - 1 && (n = read(nft_pipe, line + len, sizeof(line) - 1 - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		len += (size_t)n;
	}
	line[len] = '\0';
	close(nft_pipe);
	int status = 0;
	while (waitpid(nft_worker, &status, 0) < 0 && errno == EINTR)
		;
	nft_worker = -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (report)
		snprintf(error_text, sizeof(error_text), "%s", *line ? line : "nft: the rules worker failed");
	return -1;
}

/* ---- the watcher, and collecting after a failure ---- */

/* fork + exec ARGV detached: own session, /dev/null as stdio, none of our other fds (a copy of
 * the machine lock would make the watcher wait for itself). Returns the pid. */
static pid_t spawn_detached(char *const *argv)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	setsid();
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int fd = 0; fd < 3; fd++)
		dup2(null, fd);
	syscall(SYS_close_range, 3U, ~0U, 0U);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(argv[0], argv, environ);
	_exit(127);
}

/* ARGV[K...] = the collector's argv, NULL-terminated (ARGV has room for K + 12 + 1). */
static void append_collector(char **argv, size_t k, const struct net_plan *n)
{
	for (size_t i = 0; i < n->n_collector; i++)
		argv[k++] = (char *)n->collector[i];
	argv[k] = NULL;
}

/* The watcher: `sh` waiting in flock(1) for the machine lock (held by the supervisor for the
 * container's life), then the collector, which removes what the state file names. */
static void start_watcher(const struct net_plan *n)
{
	if (!n->watch_lock || n->n_collector == 0)
		return;
	char *argv[4 + 12 + 1] = { "/bin/sh", "-c", "flock -x \"$0\" true; exec \"$@\"", (char *)n->watch_lock };
	append_collector(argv, 4, n);
	if (spawn_detached(argv) < 0)
		warnx_("cannot start the network collector: %s", strerror(errno));
}

/* After a failure in run mode nobody else is left to clean up in time: let go of the machine
 * lock and run the collector ourselves (the watcher then finds nothing to do). The container,
 * which holds a copy of the lock until its exec, must be gone first. */
static const struct net_plan *handed_over; /* run mode: the launcher gave us its locks */
static pid_t supervisor_pid, container_pid;
static int container_pidfd = -1; /* signals the container, never a process that reused its PID */

void net_container_started(pid_t pid)
{
	if (!handed_over)
		return;
	container_pid = pid;
	container_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
}

static void collect_now(const struct net_plan *n)
{
	if (n->alloc_lock_fd >= 0)
		close(n->alloc_lock_fd);
	if (n->machine_lock_fd >= 0)
		close(n->machine_lock_fd);
	if (n->n_collector == 0)
		return;
	char *argv[12 + 1];
	append_collector(argv, 0, n);
	pid_t pid = spawn_detached(argv);
	if (pid > 0)
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
}

/* ---- the whole setup ---- */

void net_failed(void)
{
	/* only the supervisor: forked helpers (the builder, the rules worker) die on their own */
	if (!handed_over || getpid() != supervisor_pid)
		return;
	const struct net_plan *n = handed_over;
	handed_over = NULL;
	/* a rules worker still running could commit after the collector removed the rules */
	(void)wait_nft(false);
	if (container_pidfd >= 0 && syscall(SYS_pidfd_send_signal, container_pidfd, SIGKILL, NULL, 0) == 0)
		while (waitpid(container_pid, NULL, 0) < 0 && errno == EINTR)
			;
	collect_now(n);
}

void net_start(struct config *c)
{
	struct net_plan *n = &c->net;
	if (!n->active)
		return;
	if (n->machine_lock_fd >= 0) {
		/* whatever ends this start with a failure (a die() anywhere, a failed child setup)
		 * leaves nothing of the network behind when the launcher returns */
		handed_over = n;
		supervisor_pid = getpid();
		die_cleanup = net_failed;
	}
	if (n->nft_script)
		start_nft(n->nft_script);
	start_watcher(n);
}

static char created[16][IFNAMSIZ]; /* host-side links this run made, undone on failure */
static size_t n_created;

static void remember(const char *name)
{
	if (n_created < sizeof(created) / sizeof(created[0]))
		snprintf(created[n_created++], IFNAMSIZ, "%s", name);
}

static void undo_links(int fd)
{
	while (n_created > 0) {
		const char *name = created[--n_created];
		(void)link_request(fd, RTM_DELLINK, 0, 0, 0, name_attr, name, "delete link", name);
	}
}

static int enter_netns(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail_step("open network namespace", path, errno);
	int r = setns(fd, CLONE_NEWNET);
	int err = errno;
	close(fd);
	return r < 0 ? fail_step("enter network namespace", path, err) : 0;
}

/* The container's side, from inside its network namespace (this process is single-threaded). */
static int configure_container(const struct net_plan *n, pid_t pid)
{
	bool any = false;
	for (size_t i = 0; i < n->n_addrs; i++)
		any |= n->addrs[i].container;
	if (!any)
		return 0;
	int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	if (home < 0)
		return fail_step("open network namespace", "/proc/self/ns/net", errno);
	if (enter_netns(path) < 0) {
		close(home);
		return -1;
	}
	int fd = nl_open();
	int r = fd < 0 ? fail_step("socket", "AF_NETLINK", errno) : 0;
	const char *up = NULL;
	for (size_t i = 0; r == 0 && i < n->n_addrs; i++) {
		const struct net_addr *a = &n->addrs[i];
		if (!a->container)
			continue;
		if (!up || strcmp(up, a->ifname)) {
			int index = link_index(a->ifname);
			r = index < 0 ? -1 : link_request(fd, RTM_NEWLINK, 0, index, IFF_UP, NULL, NULL, "set link", a->ifname);
			up = a->ifname;
		}
		if (r == 0)
			r = add_address(fd, a);
	}
	for (size_t i = 0; r == 0 && i < n->n_routes; i++)
		r = add_default_route(fd, n->routes[i].ifname, n->routes[i].gateway);
	if (fd >= 0)
		close(fd);
	/* staying in the container's namespace would put everything after this in the wrong place */
	if (setns(home, CLONE_NEWNET) < 0)
		die("cannot return to the host network namespace: %s", strerror(errno));
	close(home);
	return r;
}

static int configure_host(struct net_plan *n, int fd, pid_t pid)
{
	if (n->bridge) {
		int r = link_request(fd, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, IFF_UP, bridge_attrs, n->bridge, "create bridge", n->bridge);
		if (r == 0) {
			remember(n->bridge);
			if (n->bridge_alt && link_request(fd, RTM_NEWLINKPROP, NLM_F_CREATE | NLM_F_EXCL, (int)if_nametoindex(n->bridge), 0, alt_name_attrs, n->bridge_alt, "add altname", n->bridge) < 0)
				return -1;
		} else if (r != -EEXIST)
			return -1; /* an existing zone bridge is the zone's: another member made it meanwhile */
	}
	for (size_t i = 0; i < n->n_veths; i++) {
		const struct net_veth *v = &n->veths[i];
		struct veth_arg a = { v, 0, pid };
		if (v->master && (a.master = link_index(v->master)) < 0)
			return -1;
		if (link_request(fd, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, IFF_UP, veth_attrs, &a, "create veth", v->name) < 0)
			return -1;
		remember(v->name);
		if (v->alt_name && link_request(fd, RTM_NEWLINKPROP, NLM_F_CREATE | NLM_F_EXCL, (int)if_nametoindex(v->name), 0, alt_name_attrs, v->alt_name, "add altname", v->name) < 0)
			return -1;
		size_t used = strlen(n->ifindices);
		snprintf(n->ifindices + used, sizeof(n->ifindices) - used, "%s%u", used ? "," : "", if_nametoindex(v->name));
	}
	for (size_t i = 0; i < n->n_addrs; i++)
		if (!n->addrs[i].container && add_address(fd, &n->addrs[i]) < 0)
			return -1;
	for (size_t i = 0; i < n->n_moves; i++) {
		int index = link_index(n->moves[i]);
		if (index < 0 || link_request(fd, RTM_NEWLINK, 0, index, 0, netns_attr, &pid, "move link", n->moves[i]) < 0)
			return -1;
	}
	for (size_t i = 0; i < n->n_vlans; i++) {
		struct vlan_arg a = { n->vlans[i].kind, n->vlans[i].name, n->vlans[i].mac, link_index(n->vlans[i].parent), pid };
		char what[32];
		snprintf(what, sizeof(what), "create %s", a.kind);
		if (a.parent < 0 || link_request(fd, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, 0, vlan_attrs, &a, what, a.name) < 0)
			return -1;
	}
	for (size_t i = 0; i < n->n_sysctls; i++) {
		char path[256];
		snprintf(path, sizeof(path), "/proc/sys/net/%s", n->sysctls[i].key);
		if (write_file(path, n->sysctls[i].value) < 0)
			return fail_step("write", path, errno);
	}
	return 0;
}

int net_setup(struct config *c, pid_t pid)
{
	struct net_plan *n = &c->net;
	if (!n->active)
		return 0;
	int fd = nl_open();
	int r = fd < 0 ? fail_step("socket", "AF_NETLINK", errno) : configure_host(n, fd, pid);
	if (r == 0)
		r = configure_container(n, pid);
	int rules = wait_nft(r == 0);
	if (r < 0 || rules < 0) {
		char failed[sizeof(error_text)];
		memcpy(failed, error_text, sizeof(failed)); /* a failing undo step must not replace it */
		if (fd >= 0)
			undo_links(fd);
		memcpy(error_text, failed, sizeof(failed));
		r = -1;
	}
	if (fd >= 0)
		close(fd);
	if (r < 0)
		return -1;
	/* the links exist: the next launcher may allocate */
	if (n->alloc_lock_fd >= 0)
		close(n->alloc_lock_fd);
	n->alloc_lock_fd = -1;
	return 0;
}

void net_abort(struct config *c)
{
	die("network setup for '%s' failed: %s", c->name ? c->name : "?", error_text);
}

void net_child_close(const struct config *c)
{
	if (c->net.alloc_lock_fd >= 0)
		close(c->net.alloc_lock_fd);
}

/* lo in a fresh network namespace starts down; nspawn brings it up for every container. */
void net_bring_up_loopback(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	struct ifreq ifr = { .ifr_name = "lo" };
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		(void)ioctl(fd, SIOCSIFFLAGS, &ifr);
	}
	close(fd);
}
