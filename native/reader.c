/*
 * Reading a client's socket from the event loop without Node.js's stream (src/xenstore/socket-io.ts).
 *
 * A request read by a net.Socket goes through libuv's read callback, a Buffer allocated for it,
 * the stream's push and a 'data' event before the daemon sees it. Here libuv only watches the
 * socket (a uv_poll_t) and this file reads it with recv(2) into a buffer the caller owns, then
 * calls one JavaScript function with the byte count. Measured on the machines vmstack runs on (a
 * /tmp echo server answering a C client, one 32-byte request in flight, three rounds each): on the
 * client's CPU, 35.1-35.7k round trips/s against 30.2-31.0k through the stream (31.4-31.6k with
 * replies sent by send(2)); on another CPU, 39.7-40.4k against 34.2-35.7k (a C server with
 * epoll: 46.6-47.7k and 36.6-38.1k).
 *
 * libuv allows one watcher per descriptor, and the stream keeps its own for writing, so the
 * reader watches a duplicate of the socket's descriptor (the kernel's epoll tells them apart).
 * The caller stops the stream from reading (the server pauses its sockets on accept), so every
 * byte comes through here, in order. At end of stream, a hang-up or an error from poll, the reader
 * stops and says so (0): the caller hands the socket back to the stream, which then finds the end
 * or the error itself and reports it the usual way. A recv(2) error is passed on as -errno.
 *
 * The duplicate keeps the connection open as long as it exists, so readClose must come with the
 * socket's close (the caller does it on 'close'), and closes it at once. A reader still open when
 * its environment ends (a worker thread's exit) is closed by a cleanup hook: libuv refuses to
 * close a loop with a handle open, and takes the process down with it.
 *
 * Each reader holds a second descriptor per client. Node.js raises the soft RLIMIT_NOFILE to the
 * hard limit at start; where that is low, the caller serves a client whose descriptor cannot be
 * duplicated (EMFILE) through its stream instead.
 */
#define _GNU_SOURCE /* F_DUPFD_CLOEXEC */
#include "xsio.h"
#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
  uv_poll_t poll; /* first: libuv hands the callback this address */
  napi_env env;
  int fd; /* the duplicate descriptor; -1 once closed */
  int watching; /* the poll is started */
  int ended; /* the reader said 0 or -errno: it reads no more */
  int handle_closed; /* libuv is done with `poll` (uv_close's callback ran) */
  int collected; /* the JavaScript handle is gone (its finalizer ran) */
  void *buf;
  size_t len;
  napi_ref buf_ref, on_read;
  napi_async_context ctx;
} Reader;

/* Tells a reader handle from any other object handed in (napi_check_object_type_tag). */
static const napi_type_tag READER_TAG = { 0x78736f5f72656164ULL, 0x65725f7461673031ULL };

static void stop(Reader *r) {
  if (!r->watching) return;
  uv_poll_stop(&r->poll);
  r->watching = 0;
}

/* Frees the reader once both libuv and JavaScript are done with it. */
static void release(Reader *r) {
  if (r->handle_closed && r->collected) free(r);
}

static void on_handle_closed(uv_handle_t *h) {
  Reader *r = (Reader *)h;
  r->handle_closed = 1;
  release(r);
}

/* Stops, closes the duplicate, and hands the handle to uv_close with `closed` to call. */
static void shut(Reader *r, uv_close_cb closed) {
  stop(r);
  r->ended = 1;
  uv_close((uv_handle_t *)&r->poll, closed);
  close(r->fd);
  r->fd = -1;
}

/*
 * The environment is ending with the reader open (readClose removes this hook). Its loop closes
 * the handle after the addon is unloaded, so no callback of ours may be left for it: the reader's
 * memory, which libuv still touches then, is left to the process (one per reader open at a
 * worker thread's exit).
 */
static void on_env_cleanup(void *data) {
  Reader *r = data;
  if (r->fd >= 0) shut(r, NULL);
}

static void on_collected(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Reader *r = data;
  r->collected = 1;
  release(r);
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  Reader *r = (Reader *)h;
  ssize_t n = 0;
  if (status == 0) {
    do n = recv(r->fd, r->buf, r->len, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    /* Another read got there first (the busy-poll's wait in the addon reads the same socket). */
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n < 0) n = -errno;
  }
  if (n <= 0) {
    stop(r);
    r->ended = 1;
  }
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv_this, arg, result;
  if (napi_get_reference_value(env, r->on_read, &fn) == napi_ok && fn != NULL && napi_get_global(env, &recv_this) == napi_ok && napi_create_double(env, (double)n, &arg) == napi_ok &&
      napi_make_callback(env, r->ctx, recv_this, fn, 1, &arg, &result) != napi_ok) {
    /* What a throwing 'data' handler would do: the process's uncaught-exception path. */
    bool pending = false;
    napi_value err;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending && napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

/* The reader behind `v`, or NULL with a TypeError thrown. */
static Reader *reader_arg(napi_env env, napi_callback_info info, const char *usage) {
  size_t argc = 1;
  napi_value argv[1];
  bool tagged = false;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1) return xsio_fail(env, usage), NULL;
  if (napi_check_object_type_tag(env, argv[0], &READER_TAG, &tagged) != napi_ok || !tagged || napi_get_value_external(env, argv[0], &data) != napi_ok) return xsio_fail(env, "not a reader from readStart"), NULL;
  return data;
}

/*
 * readStart(fd: number, buf: Buffer, onRead: (n: number) => void): object — watch the socket
 * `fd` for input from the event loop. When it is readable, its bytes are read into `buf` and
 * onRead(n) is called: n > 0 bytes; 0, the reader has stopped for good (end of stream, hang-up,
 * poll error: the stream should read from now on); -errno, recv(2) failed (stopped too). The
 * returned handle goes to readPause, readResume and readClose. Throws if the descriptor cannot be
 * duplicated or watched.
 */
napi_value xsio_read_start(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  void *buf;
  size_t len;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) return xsio_fail(env, "readStart(fd, buf, onRead)");
  if (!xsio_arg_fd(env, argv[0], &fd)) return xsio_fail(env, "fd must be a descriptor");
  if (napi_get_buffer_info(env, argv[1], &buf, &len) != napi_ok || len == 0) return xsio_fail(env, "buf must be a non-empty Buffer");
  if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function) return xsio_fail(env, "onRead must be a function");
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return xsio_fail(env, "no event loop");
  Reader *r = calloc(1, sizeof *r);
  if (r == NULL) return napi_throw_error(env, "ENOMEM", "readStart: out of memory"), NULL;
  r->env = env;
  r->buf = buf;
  r->len = len;
  r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r->fd < 0) {
    int e = errno;
    free(r);
    return napi_throw_error(env, e == EMFILE ? "EMFILE" : e == ENFILE ? "ENFILE" : "EBADF", "readStart: cannot duplicate the socket's descriptor"), NULL;
  }
  int u = uv_poll_init(loop, &r->poll, r->fd);
  if (u != 0) {
    /* A failed init leaves no handle behind. */
    close(r->fd);
    free(r);
    return napi_throw_error(env, uv_err_name(u), "readStart: cannot watch the socket"), NULL;
  }
  u = uv_poll_start(&r->poll, UV_READABLE, on_readable);
  if (u != 0) {
    /* An initialised handle is libuv's until uv_close's callback: nothing JavaScript holds. */
    r->collected = 1;
    shut(r, on_handle_closed);
    return napi_throw_error(env, uv_err_name(u), "readStart: cannot watch the socket"), NULL;
  }
  r->watching = 1;
  napi_value handle, name;
  napi_create_reference(env, argv[1], 1, &r->buf_ref);
  napi_create_reference(env, argv[2], 1, &r->on_read);
  napi_create_string_utf8(env, "xsio.read", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &r->ctx);
  napi_create_external(env, r, on_collected, NULL, &handle);
  napi_type_tag_object(env, handle, &READER_TAG);
  napi_add_env_cleanup_hook(env, on_env_cleanup, r);
  return handle;
}

/* readPause(h): stop watching until readResume (back-pressure). No-op once stopped or closed. */
napi_value xsio_read_pause(napi_env env, napi_callback_info info) {
  Reader *r = reader_arg(env, info, "readPause(reader)");
  if (r == NULL) return NULL;
  stop(r);
  return NULL;
}

/*
 * readResume(h): number — watch again after readPause: 0, or libuv's (negative) error if the
 * socket cannot be watched (the caller hands it to its stream). No-op (0) once the reader has
 * ended or is closed.
 */
napi_value xsio_read_resume(napi_env env, napi_callback_info info) {
  Reader *r = reader_arg(env, info, "readResume(reader)");
  if (r == NULL) return NULL;
  int u = 0;
  if (r->fd >= 0 && !r->ended && !r->watching) {
    u = uv_poll_start(&r->poll, UV_READABLE, on_readable);
    if (u == 0) r->watching = 1;
  }
  return xsio_number(env, u);
}

/* readClose(h): stop, close the duplicate descriptor, let go of the buffer and the callback. Idempotent. */
napi_value xsio_read_close(napi_env env, napi_callback_info info) {
  Reader *r = reader_arg(env, info, "readClose(reader)");
  if (r == NULL || r->fd < 0) return NULL;
  napi_remove_env_cleanup_hook(env, on_env_cleanup, r);
  shut(r, on_handle_closed);
  napi_delete_reference(env, r->buf_ref);
  napi_delete_reference(env, r->on_read);
  napi_async_destroy(env, r->ctx);
  return NULL;
}
