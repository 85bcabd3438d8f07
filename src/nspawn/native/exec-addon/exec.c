/* mctl-exec.node: the calls the launcher's start path needs from native code, execve(),
 * isatty(), a run-and-read-fd-3 spawn, lock files and FD_CLOEXEC, as a tiny Node-API addon. Loading it costs well under
 * a millisecond; loading koffi to make the same execve() call costs ~12 ms, a sixth of the whole
 * start budget (docs/nspawn-internals.md). isatty() because process.stdin.isTTY makes Node
 * build the stdin stream, which loads its whole streams machinery (~4 ms of a ~35 ms start); the
 * spawn because node:child_process costs ~5 ms to load on the networked start path, which only
 * needs to run the helper's `prepare` once.
 *
 * Node-API is a stable C ABI, so the few prototypes used are declared here instead of
 * depending on a header package being installed. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef int napi_status; /* napi_ok == 0 */
typedef napi_value (*napi_callback)(napi_env env, napi_callback_info info);

napi_status napi_get_cb_info(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv, napi_value *this_arg, void **data);
napi_status napi_get_value_string_utf8(napi_env env, napi_value value, char *buf, size_t bufsize, size_t *result);
napi_status napi_get_array_length(napi_env env, napi_value value, uint32_t *result);
napi_status napi_get_element(napi_env env, napi_value object, uint32_t index, napi_value *result);
napi_status napi_create_function(napi_env env, const char *name, size_t length, napi_callback cb, void *data, napi_value *result);
napi_status napi_set_named_property(napi_env env, napi_value object, const char *name, napi_value value);
napi_status napi_throw_error(napi_env env, const char *code, const char *msg);
napi_status napi_get_value_int32(napi_env env, napi_value value, int32_t *result);
napi_status napi_get_boolean(napi_env env, _Bool value, napi_value *result);
napi_status napi_create_int32(napi_env env, int32_t value, napi_value *result);
napi_status napi_create_string_utf8(napi_env env, const char *str, size_t length, napi_value *result);
napi_status napi_create_array_with_length(napi_env env, size_t length, napi_value *result);
napi_status napi_set_element(napi_env env, napi_value object, uint32_t index, napi_value value);

/* A JS string as a malloc'd C string (NULL on error). */
static char *string_of(napi_env env, napi_value v)
{
	size_t len = 0;
	if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != 0)
		return NULL;
	char *s = malloc(len + 1);
	if (s && napi_get_value_string_utf8(env, v, s, len + 1, &len) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

/* A JS array of strings as a NULL-terminated vector (NULL on error). */
static char **vector_of(napi_env env, napi_value arr)
{
	uint32_t n = 0;
	if (napi_get_array_length(env, arr, &n) != 0)
		return NULL;
	char **v = calloc((size_t)n + 1, sizeof(char *));
	if (!v)
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		napi_value e;
		if (napi_get_element(env, arr, i, &e) != 0 || !(v[i] = string_of(env, e)))
			return NULL;
	}
	return v;
}

/* The (path, argv, envp) arguments of FN as C strings; false (a JS error thrown) when they are not. */
static bool program_arguments(napi_env env, napi_callback_info info, const char *fn, char **path, char ***argv, char ***envp)
{
	size_t argc = 3;
	napi_value args[3];
	char msg[128];
	if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != 0 || argc != 3) {
		snprintf(msg, sizeof(msg), "%s(path, argv, envp) needs three arguments", fn);
		napi_throw_error(env, NULL, msg);
		return false;
	}
	*path = string_of(env, args[0]);
	*argv = vector_of(env, args[1]);
	*envp = vector_of(env, args[2]);
	if (!*path || !*argv || !*envp) {
		snprintf(msg, sizeof(msg), "%s: arguments must be a string and two arrays of strings", fn);
		napi_throw_error(env, NULL, msg);
		return false;
	}
	return true;
}

/* Stdio must reach the new program: Node marks 0-2 close-on-exec. */
static void keep_stdio(void)
{
	for (int fd = 0; fd < 3; fd++) {
		int flags = fcntl(fd, F_GETFD);
		if (flags >= 0)
			fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
	}
}

/* execve(path, argv, envp). */
static napi_value js_execve(napi_env env, napi_callback_info info)
{
	char *path, **argv, **envp;
	if (!program_arguments(env, info, "execve", &path, &argv, &envp))
		return NULL;
	keep_stdio();
	execve(path, argv, envp);
	char msg[512];
	snprintf(msg, sizeof(msg), "execve %s: %s", path, strerror(errno));
	napi_throw_error(env, "EEXEC", msg);
	return NULL;
}

/* The single file descriptor argument of FN; false (a JS error thrown) when there is none. */
static bool fd_argument(napi_env env, napi_callback_info info, const char *fn, int32_t *fd)
{
	size_t argc = 1;
	napi_value arg;
	if (napi_get_cb_info(env, info, &argc, &arg, NULL, NULL) != 0 || argc != 1 || napi_get_value_int32(env, arg, fd) != 0) {
		char msg[128];
		snprintf(msg, sizeof(msg), "%s(fd) needs a file descriptor number", fn);
		napi_throw_error(env, NULL, msg);
		return false;
	}
	return true;
}

/* isatty(fd) as a boolean. */
static napi_value js_isatty(napi_env env, napi_callback_info info)
{
	int32_t fd = -1;
	napi_value result;
	if (!fd_argument(env, info, "isatty", &fd))
		return NULL;
	napi_get_boolean(env, isatty(fd) == 1, &result);
	return result;
}

/* spawnReport(path, argv, envp) -> [status, text]: run PATH with our stdio and a pipe as fd 3,
 * read that pipe to its end, wait; status is the exit code, or 128 + the signal. */
static napi_value js_spawn_report(napi_env env, napi_callback_info info)
{
	char *path, **argv, **envp;
	if (!program_arguments(env, info, "spawnReport", &path, &argv, &envp))
		return NULL;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		napi_throw_error(env, "ESPAWN", "spawnReport: pipe failed");
		return NULL;
	}
	if (p[1] <= 3) {
		/* dup2 onto itself would keep FD_CLOEXEC: move the write end above 3 first */
		int moved = fcntl(p[1], F_DUPFD_CLOEXEC, 4);
		close(p[1]);
		p[1] = moved;
	}
	keep_stdio();
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 3);
	posix_spawnattr_t attr;
	posix_spawnattr_init(&attr);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	/* Node blocks nothing but ignores SIGPIPE and SIGXFSZ: defaults for the helper */
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	pid_t pid;
	int err = posix_spawn(&pid, path, &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(p[1]);
	if (err != 0) {
		close(p[0]);
		char msg[512];
		snprintf(msg, sizeof(msg), "spawn %s: %s", path, strerror(err));
		napi_throw_error(env, "ESPAWN", msg);
		return NULL;
	}
	size_t len = 0, cap = 4096;
	char *text = malloc(cap);
	for (;;) {
		if (!text)
			break;
		if (len == cap) {
			char *bigger = realloc(text, cap *= 2);
			if (!bigger) {
				free(text);
				text = NULL;
				break;
			}
			text = bigger;
		}
		ssize_t n = read(p[0], text + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(p[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	napi_value result, v;
	napi_create_array_with_length(env, 2, &result);
	napi_create_int32(env, code, &v);
	napi_set_element(env, result, 0, v);
	napi_create_string_utf8(env, text ? text : "", text ? len : 0, &v);
	napi_set_element(env, result, 1, v);
	free(text);
	return result;
}

/* lock(fd, kind, op, wait) -> 1 taken, 0 held elsewhere (only without wait), or -errno.
 * kind 0: an OFD lock (fcntl F_OFD_SETLK[W], systemd's lock type), 1: flock(2) (what flock(1)
 * waits for); op 0 shared, 1 exclusive, 2 unlock. Here rather than over koffi: the launcher's
 * networked start takes two locks, and koffi costs ~10 ms to load. */
static napi_value js_lock(napi_env env, napi_callback_info info)
{
	size_t argc = 4;
	napi_value args[4], result;
	int32_t v[4] = { -1, -1, -1, 0 };
	if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != 0 || argc != 4) {
		napi_throw_error(env, NULL, "lock(fd, kind, op, wait) needs four numbers");
		return NULL;
	}
	for (int i = 0; i < 4; i++)
		if (napi_get_value_int32(env, args[i], &v[i]) != 0) {
			napi_throw_error(env, NULL, "lock(fd, kind, op, wait) needs four numbers");
			return NULL;
		}
	int fd = v[0], op = v[2];
	bool wait = v[3] != 0;
	int r;
	if (v[1] == 0) {
		struct flock fl = { .l_type = (short)(op == 0 ? F_RDLCK : op == 1 ? F_WRLCK : F_UNLCK), .l_whence = SEEK_SET };
		while ((r = fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl)) < 0 && errno == EINTR)
			;
	} else {
		int how = (op == 0 ? LOCK_SH : op == 1 ? LOCK_EX : LOCK_UN) | (wait ? 0 : LOCK_NB);
		while ((r = flock(fd, how)) < 0 && errno == EINTR)
			;
	}
	int out = r == 0 ? 1 : (errno == EAGAIN || errno == EACCES) && !wait ? 0 : -errno;
	napi_create_int32(env, out, &result);
	return result;
}

/* clearCloexec(fd) -> 0 or -errno: the fd survives execve. */
static napi_value js_clear_cloexec(napi_env env, napi_callback_info info)
{
	int32_t fd = -1;
	napi_value result;
	if (!fd_argument(env, info, "clearCloexec", &fd))
		return NULL;
	int flags = fcntl(fd, F_GETFD);
	int out = flags < 0 || fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0 ? -errno : 0;
	napi_create_int32(env, out, &result);
	return result;
}

napi_value napi_register_module_v1(napi_env env, napi_value exports);
napi_value napi_register_module_v1(napi_env env, napi_value exports)
{
	napi_value fn;
	if (napi_create_function(env, "execve", 6, js_execve, NULL, &fn) == 0)
		napi_set_named_property(env, exports, "execve", fn);
	if (napi_create_function(env, "isatty", 6, js_isatty, NULL, &fn) == 0)
		napi_set_named_property(env, exports, "isatty", fn);
	if (napi_create_function(env, "spawnReport", 11, js_spawn_report, NULL, &fn) == 0)
		napi_set_named_property(env, exports, "spawnReport", fn);
	if (napi_create_function(env, "lock", 4, js_lock, NULL, &fn) == 0)
		napi_set_named_property(env, exports, "lock", fn);
	if (napi_create_function(env, "clearCloexec", 12, js_clear_cloexec, NULL, &fn) == 0)
		napi_set_named_property(env, exports, "clearCloexec", fn);
	return exports;
}
