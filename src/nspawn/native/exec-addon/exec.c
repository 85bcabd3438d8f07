/* mctl-exec.node: the calls the launcher's start path needs from native code, execve() and
 * isatty(), as a tiny Node-API addon. isatty() because process.stdin.isTTY makes Node build
 * the stdin stream, which loads its whole streams machinery (~4 ms of a ~45 ms start). Loading it costs well under a millisecond; loading koffi to make
 * the same call costs ~12 ms, a sixth of the whole start budget (docs/nspawn-internals.md).
 *
 * Node-API is a stable C ABI, so the few prototypes used are declared here instead of
 * depending on a header package being installed. */
#define _GNU_SOURCE
#include <errno.h>
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

/* execve(path, argv, envp); Node sets FD_CLOEXEC on 0-2, which the new program must keep. */
static napi_value js_execve(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value args[3];
	if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != 0 || argc != 3) {
		napi_throw_error(env, NULL, "execve(path, argv, envp) needs three arguments");
		return NULL;
	}
	char *path = string_of(env, args[0]);
	char **argv = vector_of(env, args[1]);
	char **envp = vector_of(env, args[2]);
	if (!path || !argv || !envp) {
		napi_throw_error(env, NULL, "execve: arguments must be a string and two arrays of strings");
		return NULL;
	}
	for (int fd = 0; fd < 3; fd++) {
		int flags = fcntl(fd, F_GETFD);
		if (flags >= 0)
			fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
	}
	execve(path, argv, envp);
	char msg[512];
	snprintf(msg, sizeof(msg), "execve %s: %s", path, strerror(errno));
	napi_throw_error(env, "EEXEC", msg);
	return NULL;
}

/* isatty(fd) as a boolean. */
static napi_value js_isatty(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value arg, result;
	int32_t fd = -1;
	if (napi_get_cb_info(env, info, &argc, &arg, NULL, NULL) != 0 || argc != 1 || napi_get_value_int32(env, arg, &fd) != 0) {
		napi_throw_error(env, NULL, "isatty(fd) needs a file descriptor number");
		return NULL;
	}
	napi_get_boolean(env, isatty(fd) == 1, &result);
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
	return exports;
}
