/* Port forwards from the host's IPv6 loopback, [::1]:PORT, relayed by the supervisor.
 *
 * Forwards are nftables DNAT rules (src/net/ports.ts), and 127.0.0.1 works through them, but
 * ::1 cannot: IPv6 has no route_localnet, and the container's reply to ::1 arriving on the veth
 * is dropped by the routing code (docs/networking.md). What can serve ::1 is a socket: the
 * supervisor, which lives as long as the container anyway, listens on [::1]:PORT and copies
 * each connection to the container's address. TCP only; idle it costs a listening socket.
 *
 * Config token (config.c): proxy6 HOSTPORT ADDRESS PORT (ADDRESS: the container's IPv6). */
#define _GNU_SOURCE
#include "nsexec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LISTENERS 16
#define MAX_CONNS 64
#define BUF_SIZE 65536

struct listener {
	int fd;
	struct sockaddr_in6 target;
};

/* One relayed connection: the client on ::1 and our socket to the container. Each direction
 * has one buffer, refilled only once it has been written out completely. */
struct conn {
	int client, container;
	bool connected;
	char *up, *down; /* client -> container, container -> client */
	size_t up_len, up_off, down_len, down_off;
	bool client_eof, container_eof;
};

static struct listener listeners[MAX_LISTENERS];
static size_t n_listeners;
static struct conn conns[MAX_CONNS];
static size_t n_conns;

void proxy_setup(const struct config *c)
{
	for (size_t i = 0; i < c->n_proxies && n_listeners < MAX_LISTENERS; i++) {
		struct listener *l = &listeners[n_listeners];
		memset(&l->target, 0, sizeof(l->target));
		l->target.sin6_family = AF_INET6;
		l->target.sin6_port = htons((uint16_t)c->proxies[i].container_port);
		if (inet_pton(AF_INET6, c->proxies[i].address, &l->target.sin6_addr) != 1)
			continue;
		int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		struct sockaddr_in6 local = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)c->proxies[i].host_port), .sin6_addr = IN6ADDR_LOOPBACK_INIT };
		if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0 || listen(fd, 64) < 0) {
			/* someone else serves [::1]:PORT: the forward still works on every other address */
			if (!c->quiet)
				warnx_("port %d is not forwarded from [::1]: %s", c->proxies[i].host_port, strerror(errno));
			close(fd);
			continue;
		}
		l->fd = fd;
		n_listeners++;
	}
}

static void conn_close(size_t i)
{
	struct conn *k = &conns[i];
	close(k->client);
	close(k->container);
	free(k->up);
	free(k->down);
	conns[i] = conns[--n_conns];
}

static void accept_on(const struct listener *l)
{
	for (;;) {
		int client = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (client < 0)
			return;
		int ct = n_conns < MAX_CONNS ? socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
		char *up = ct >= 0 ? malloc(BUF_SIZE) : NULL;
		char *down = up ? malloc(BUF_SIZE) : NULL;
		if (!down || (connect(ct, (const struct sockaddr *)&l->target, sizeof(l->target)) < 0 && errno != EINPROGRESS)) {
			close(client);
			if (ct >= 0)
				close(ct);
			free(up);
			free(down);
			continue;
		}
		conns[n_conns++] = (struct conn){ .client = client, .container = ct, .up = up, .down = down };
	}
}

size_t proxy_pollfds(struct pollfd *p, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < n_listeners && n < max; i++)
		p[n++] = (struct pollfd){ .fd = listeners[i].fd, .events = POLLIN };
	for (size_t i = 0; i < n_conns && n + 2 <= max; i++) {
		struct conn *k = &conns[i];
		short ce = 0, te = 0;
		if (!k->connected) {
			te = POLLOUT;
		} else {
			if (!k->client_eof && k->up_len == 0)
				ce |= POLLIN;
			if (k->up_off < k->up_len)
				te |= POLLOUT;
			if (!k->container_eof && k->down_len == 0)
				te |= POLLIN;
			if (k->down_off < k->down_len)
				ce |= POLLOUT;
		}
		p[n++] = (struct pollfd){ .fd = k->client, .events = ce };
		p[n++] = (struct pollfd){ .fd = k->container, .events = te };
	}
	return n;
}

/* Move what one side has into its buffer, or the buffer out to the other side. false: drop the connection. */
static bool pump(int from, int to, char *buf, size_t *len, size_t *off, bool *eof, short from_ev, short to_ev)
{
	if (*len == 0 && !*eof && (from_ev & (POLLIN | POLLHUP | POLLERR))) {
		ssize_t r = read(from, buf, BUF_SIZE);
		if (r > 0) {
			*len = (size_t)r;
			*off = 0;
		} else if (r == 0) {
			*eof = true;
			shutdown(to, SHUT_WR);
		} else if (errno != EAGAIN && errno != EINTR) {
			return false;
		}
	}
	if (*off < *len && (to_ev & (POLLOUT | POLLERR) || *off == 0)) {
		ssize_t w = send(to, buf + *off, *len - *off, MSG_NOSIGNAL);
		if (w > 0)
			*off += (size_t)w;
		else if (w < 0 && errno != EAGAIN && errno != EINTR)
			return false;
		if (*off == *len)
			*len = *off = 0;
	}
	return true;
}

void proxy_dispatch(const struct pollfd *p, size_t n)
{
	size_t j = 0;
	for (size_t i = 0; i < n_listeners && j < n; i++, j++)
		if (p[j].revents & POLLIN)
			accept_on(&listeners[i]);
	/* connections accepted just now were not polled: only the first ones map to p */
	size_t polled = (n - j) / 2;
	for (size_t i = polled; i-- > 0;) {
		struct conn *k = &conns[i];
		short ce = p[j + 2 * i].revents, te = p[j + 2 * i + 1].revents;
		bool ok = true;
		if (!k->connected && te) {
			int err = 0;
			socklen_t len = sizeof(err);
			getsockopt(k->container, SOL_SOCKET, SO_ERROR, &err, &len);
			ok = err == 0;
			k->connected = ok;
			te = 0;
		}
		if (ok && k->connected) {
			ok = pump(k->client, k->container, k->up, &k->up_len, &k->up_off, &k->client_eof, ce, te) &&
			     pump(k->container, k->client, k->down, &k->down_len, &k->down_off, &k->container_eof, te, ce);
		}
		if (!ok || (k->client_eof && k->container_eof && k->up_len == 0 && k->down_len == 0))
			conn_close(i);
	}
}
