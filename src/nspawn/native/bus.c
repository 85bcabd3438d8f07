/* The smallest D-Bus client that lets the supervisor be a scope's Controller=, as
 * systemd-nspawn is for the scope it has machined (or systemd) create: on a stop request
 * (`systemctl stop`, `machinectl terminate`) systemd does not kill a scope with a controller
 * but sends it the unicast signal org.freedesktop.systemd1.Scope.RequestStop; the controller
 * then asks the container's PID 1 to shut down with the kill signal (SIGRTMIN+3 for a booted
 * systemd), and systemd only SIGKILLs what is left after TimeoutStopSec.
 *
 * `prepare` connects and says Hello (so the launcher knows the unique name to register as
 * Controller= before the scope exists); the container child holds the connection until the
 * supervisor takes it over with pidfd_getfd. Only whole messages are ever read from the
 * socket, so the hand-over never splits one. The supervisor reads messages, acts on
 * RequestStop from a trusted sender (the owners of org.freedesktop.systemd1 and
 * org.freedesktop.machine1, followed through NameOwnerChanged; the daemon sets SENDER, it
 * cannot be forged) and
 * answers method calls with an error so no caller waits for a timeout. Wire format: the
 * D-Bus specification (header fields, alignment, both byte orders). */
#define _GNU_SOURCE
#include "nsexec.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { MSG_METHOD_CALL = 1, MSG_METHOD_RETURN = 2, MSG_ERR = 3, MSG_SIGNAL = 4 };
enum { F_PATH = 1, F_INTERFACE = 2, F_MEMBER = 3, F_ERROR_NAME = 4, F_REPLY_SERIAL = 5, F_DESTINATION = 6, F_SENDER = 7, F_SIGNATURE = 8 };
#define FLAG_NO_REPLY_EXPECTED 0x1

/* ---- building messages (little endian) ---- */

struct out {
	unsigned char b[1024];
	size_t n;
	bool overflow;
};

static void put(struct out *o, const void *p, size_t len)
{
	if (o->n + len > sizeof(o->b)) {
		o->overflow = true;
		return;
	}
	memcpy(o->b + o->n, p, len);
	o->n += len;
}

static void pad(struct out *o, size_t align)
{
	static const unsigned char zero[8];
	put(o, zero, (align - o->n % align) % align);
}

static void put_u32(struct out *o, uint32_t v)
{
	pad(o, 4);
	unsigned char le[4] = { v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24 };
	put(o, le, 4);
}

static void put_string(struct out *o, const char *s)
{
	put_u32(o, (uint32_t)strlen(s));
	put(o, s, strlen(s) + 1);
}

/* one header field: code, variant signature, value ('s', 'o', 'g' or 'u') */
static void put_field(struct out *o, unsigned char code, char type, const char *s, uint32_t u)
{
	pad(o, 8);
	unsigned char head[4] = { code, 1, (unsigned char)type, 0 };
	put(o, head, 4);
	if (type == 'u')
		put_u32(o, u);
	else if (type == 'g') {
		unsigned char len = (unsigned char)strlen(s);
		put(o, &len, 1);
		put(o, s, strlen(s) + 1);
	} else
		put_string(o, s);
}

/* A message with an empty body or a single string argument. */
static int send_message(int fd, unsigned char type, uint32_t serial, uint32_t reply_serial, const char *dest, const char *path,
			const char *iface, const char *member, const char *error_name, const char *string_arg)
{
	struct out o = { .n = 0 };
	unsigned char fixed[4] = { 'l', type, type == MSG_METHOD_CALL ? 0 : FLAG_NO_REPLY_EXPECTED, 1 };
	put(&o, fixed, 4);
	put_u32(&o, 0); /* body length, patched below */
	put_u32(&o, serial);
	put_u32(&o, 0); /* header field array length, patched below */
	size_t fields = o.n;
	if (path)
		put_field(&o, F_PATH, 'o', path, 0);
	if (iface)
		put_field(&o, F_INTERFACE, 's', iface, 0);
	if (member)
		put_field(&o, F_MEMBER, 's', member, 0);
	if (error_name)
		put_field(&o, F_ERROR_NAME, 's', error_name, 0);
	if (reply_serial)
		put_field(&o, F_REPLY_SERIAL, 'u', NULL, reply_serial);
	if (dest)
		put_field(&o, F_DESTINATION, 's', dest, 0);
	if (string_arg)
		put_field(&o, F_SIGNATURE, 'g', "s", 0);
	uint32_t fields_len = (uint32_t)(o.n - fields);
	pad(&o, 8);
	size_t body = o.n;
	if (string_arg)
		put_string(&o, string_arg);
	if (o.overflow)
		return -1;
	uint32_t body_len = (uint32_t)(o.n - body);
	for (int i = 0; i < 4; i++) {
		o.b[4 + i] = (body_len >> (8 * i)) & 0xff;
		o.b[12 + i] = (fields_len >> (8 * i)) & 0xff;
	}
	size_t done = 0;
	while (done < o.n) {
		ssize_t w = send(fd, o.b + done, o.n - done, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			if (poll(&p, 1, 1000) <= 0)
				return -1;
			continue;
		}
		if (w <= 0)
			return -1;
		done += (size_t)w;
	}
	return 0;
}

/* ---- reading messages ---- */

struct message {
	unsigned char type, flags;
	uint32_t serial, reply_serial;
	const char *path, *iface, *member, *sender, *signature;
	const unsigned char *body;
	uint32_t body_len;
	bool big_endian;
};

static uint32_t get_u32(const unsigned char *p, bool be)
{
	return be ? ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3])
		  : ((uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]);
}

static size_t align_to(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Length of the message that starts at b (16 bytes at least), or 0 if the header is invalid. */
static size_t message_length(const unsigned char *b)
{
	bool be = b[0] == 'B';
	if ((b[0] != 'l' && !be) || b[3] != 1)
		return 0;
	uint64_t fields = get_u32(b + 12, be), body = get_u32(b + 4, be);
	uint64_t total = align_to(16 + fields, 8) + body;
	return total > (1u << 27) ? 0 : (size_t)total;
}

/* Parse the header fields of a complete message (strings point into the buffer). */
static bool parse_message(unsigned char *b, size_t len, struct message *m)
{
	memset(m, 0, sizeof(*m));
	m->big_endian = b[0] == 'B';
	m->type = b[1];
	m->flags = b[2];
	m->serial = get_u32(b + 8, m->big_endian);
	size_t end = 16 + get_u32(b + 12, m->big_endian);
	size_t off = 16;
	if (end > len)
		return false;
	while (off < end) {
		off = align_to(off, 8);
		if (off + 4 > end)
			return false;
		unsigned char code = b[off], siglen = b[off + 1];
		if (siglen != 1 || off + 3 > end)
			return false;
		char type = (char)b[off + 2];
		off += 4;
		if (type == 's' || type == 'o') {
			off = align_to(off, 4);
			if (off + 4 > end)
				return false;
			uint32_t n = get_u32(b + off, m->big_endian);
			if (off + 4 + n + 1 > end || b[off + 4 + n] != '\0')
				return false;
			const char *s = (const char *)b + off + 4;
			if (code == F_PATH) m->path = s;
			else if (code == F_INTERFACE) m->iface = s;
			else if (code == F_MEMBER) m->member = s;
			else if (code == F_SENDER) m->sender = s;
			off += 4 + n + 1;
		} else if (type == 'g') {
			unsigned char n = b[off];
			if (off + 1 + n + 1 > end)
				return false;
			if (code == F_SIGNATURE) m->signature = (const char *)b + off + 1;
			off += 1 + (size_t)n + 1;
		} else if (type == 'u') {
			off = align_to(off, 4);
			if (off + 4 > end)
				return false;
			if (code == F_REPLY_SERIAL)
				m->reply_serial = get_u32(b + off, m->big_endian);
			off += 4;
		} else
			return false; /* no other header field type exists */
	}
	m->body = b + align_to(end, 8);
	m->body_len = (uint32_t)(len - align_to(end, 8));
	return true;
}

/* Read exactly n bytes from a blocking socket. */
static int read_exact(int fd, void *buf, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = read(fd, (char *)buf + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

/* ---- prepare: connect, authenticate, Hello ---- */

int bus_open(const char *address, char *unique, size_t unique_len)
{
	/* "unix:path=/run/dbus/system_bus_socket[,guid=…]" (the first unix:path entry of a list) */
	const char *p = strstr(address, "unix:path=");
	if (!p)
		return -1;
	p += strlen("unix:path=");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strcspn(p, ",;");
	if (len == 0 || len >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, p, len);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;

	/* SASL EXTERNAL with our uid as hex-encoded decimal digits, then BEGIN */
	char uid[32], auth[96];
	snprintf(uid, sizeof(uid), "%u", (unsigned)geteuid());
	int n = snprintf(auth, sizeof(auth), "%cAUTH EXTERNAL ", '\0');
	for (const char *c = uid; *c; c++)
		n += snprintf(auth + n, sizeof(auth) - (size_t)n, "%02x", (unsigned char)*c);
	n += snprintf(auth + n, sizeof(auth) - (size_t)n, "\r\n");
	if (send(fd, auth, (size_t)n, MSG_NOSIGNAL) != n)
		goto fail;
	char line[256];
	size_t k = 0;
	/* byte by byte: nothing after the line may be consumed */
	while (k < sizeof(line) - 1) {
		if (read_exact(fd, line + k, 1) < 0)
			goto fail;
		if (line[k++] == '\n')
			break;
	}
	line[k] = '\0';
	if (strncmp(line, "OK ", 3) != 0 || send(fd, "BEGIN\r\n", 7, MSG_NOSIGNAL) != 7)
		goto fail;

	if (send_message(fd, MSG_METHOD_CALL, 1, 0, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", NULL, NULL) < 0)
		goto fail;
	/* read whole messages until Hello's reply; what follows (NameAcquired) stays for the supervisor */
	for (int tries = 0; tries < 16; tries++) {
		unsigned char head[16];
		if (read_exact(fd, head, sizeof(head)) < 0)
			goto fail;
		size_t total = message_length(head);
		if (total < 16 || total > 65536)
			goto fail;
		unsigned char *msg = malloc(total);
		if (!msg)
			goto fail;
		memcpy(msg, head, 16);
		struct message m;
		if (read_exact(fd, msg + 16, total - 16) < 0 || !parse_message(msg, total, &m)) {
			free(msg);
			goto fail;
		}
		if ((m.type == MSG_METHOD_RETURN || m.type == MSG_ERR) && m.reply_serial == 1) {
			bool ok = m.type == MSG_METHOD_RETURN && m.signature && !strcmp(m.signature, "s") && m.body_len >= 5;
			uint32_t slen = ok ? get_u32(m.body, m.big_endian) : 0;
			ok = ok && slen + 5 <= m.body_len && slen < unique_len;
			if (ok) {
				memcpy(unique, m.body + 4, slen);
				unique[slen] = '\0';
			}
			free(msg);
			if (!ok)
				goto fail;
			tv.tv_sec = 0;
			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			return fd;
		}
		free(msg);
	}
fail:
	close(fd);
	return -1;
}

/* ---- supervisor: watch the connection ---- */

static uint32_t out_serial = 2;

static unsigned char inbuf[65536];
static size_t inlen;
static size_t skipping; /* bytes left of a message too big to keep */

/* Whose RequestStop counts: the owners of org.freedesktop.systemd1 / machine1, followed through
 * NameOwnerChanged (sent by the bus daemon itself), so a restarted machine service or a
 * re-executed systemd is still obeyed. */
static struct {
	char name[256];
	char owner[256];
} trust[4];
static size_t n_trust;

int bus_watch(int fd, const char *const *names, const char *const *owners, size_t n)
{
	for (size_t i = 0; i < n && i < sizeof(trust) / sizeof(trust[0]); i++) {
		snprintf(trust[i].name, sizeof(trust[i].name), "%s", names[i]);
		snprintf(trust[i].owner, sizeof(trust[i].owner), "%s", owners[i]);
		char rule[512];
		snprintf(rule, sizeof(rule),
			 "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'", names[i]);
		if (send_message(fd, MSG_METHOD_CALL, out_serial++, 0, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
				 "AddMatch", NULL, rule) < 0)
			return -1;
		n_trust = i + 1;
	}
	return 0;
}

/* The i-th string of a body of strings (signature "sss…"), or NULL. */
static const char *body_string(const struct message *m, int index)
{
	size_t off = 0;
	for (int i = 0;; i++) {
		off = align_to(off, 4);
		if (off + 4 > m->body_len)
			return NULL;
		uint32_t len = get_u32(m->body + off, m->big_endian);
		if (off + 4 + len + 1 > m->body_len || m->body[off + 4 + len] != '\0')
			return NULL;
		if (i == index)
			return (const char *)m->body + off + 4;
		off += 4 + len + 1;
	}
}

/* Returns 1 when a trusted RequestStop arrived, 0 otherwise, -1 when the connection is gone. */
int bus_dispatch(int fd)
{
	ssize_t r = recv(fd, inbuf + inlen, sizeof(inbuf) - inlen, MSG_DONTWAIT);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	if (r == 0)
		return -1;
	inlen += (size_t)r;
	int stop = 0;
	size_t off = 0;
	for (;;) {
		if (skipping) {
			size_t k = inlen - off < skipping ? inlen - off : skipping;
			off += k;
			skipping -= k;
			if (skipping)
				break;
		}
		if (inlen - off < 16)
			break;
		size_t total = message_length(inbuf + off);
		if (total < 16)
			return -1; /* out of step with the stream: give up on it */
		if (total > sizeof(inbuf)) {
			skipping = total;
			continue;
		}
		if (inlen - off < total)
			break;
		struct message m;
		if (parse_message(inbuf + off, total, &m)) {
			bool trusted_sender = false;
			for (size_t i = 0; m.sender && i < n_trust; i++)
				trusted_sender |= trust[i].owner[0] && strcmp(m.sender, trust[i].owner) == 0;
			if (m.type == MSG_SIGNAL && trusted_sender && m.iface && m.member &&
			    !strcmp(m.iface, "org.freedesktop.systemd1.Scope") && !strcmp(m.member, "RequestStop"))
				stop = 1;
			else if (m.type == MSG_SIGNAL && m.sender && !strcmp(m.sender, "org.freedesktop.DBus") && m.member &&
				 !strcmp(m.member, "NameOwnerChanged") && m.signature && !strcmp(m.signature, "sss")) {
				const char *name = body_string(&m, 0), *owner = body_string(&m, 2);
				for (size_t i = 0; name && owner && i < n_trust; i++)
					if (!strcmp(name, trust[i].name))
						snprintf(trust[i].owner, sizeof(trust[i].owner), "%s", owner);
			}
			else if (m.type == MSG_METHOD_CALL && !(m.flags & FLAG_NO_REPLY_EXPECTED) && m.sender)
				(void)send_message(fd, MSG_ERR, out_serial++, m.serial, m.sender, NULL, NULL, NULL,
						   "org.freedesktop.DBus.Error.UnknownMethod", "mctl-nspawn's supervisor implements no methods");
		}
		off += total;
	}
	memmove(inbuf, inbuf + off, inlen - off);
	inlen -= off;
	return stop;
}
