/*
 * xenstored's native I/O: socket waits and sends for busy-polling (src/xenstore/socket-io.ts), and
 * the journal's shared mapping (src/xenstore/persist.ts).
 *
 * Node.js detects a readable socket through its event loop: one loop turn (timers, epoll_wait,
 * setImmediate callbacks) per check, then a read, a Buffer and a stream event. On the machines
 * vmstack was measured on, a server polling that way saw a request 8-9 µs after the client's
 * write began and needed 4.4-4.8 µs more until its reply's write returned, where a C server
 * polling with recv(2) needed 3.5-3.8 µs and 2 µs. With one request in flight that latency is the
 * whole throughput. So while the daemon busy-polls, it
 * waits for the next request here: a tight poll(2) loop over the polled sockets (yielding the CPU
 * to anything else runnable on it between looks), and the bytes are read straight into a
 * caller's buffer; replies go out with one send(2).
 *
 * No state, no threads: the event loop still owns every socket (accept, close, errors, queued
 * writes); this only reads or writes when the caller has checked that Node.js has nothing
 * buffered for that socket, so bytes never change order.
 *
 * The same addon gives the journal a shared mapping of its file (reserve, mapShared; below) and
 * locks a state directory for one daemon (lockExclusive).
 */
#define _GNU_SOURCE /* struct ucred, sched_getcpu */
#include "xsio.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 64
#define MAX_BUDGET_NS 10e6
/* A yield that kept the CPU away longer than this may have run something other than a client. */
#define LONG_YIELD_NS 200000
/* How long waits then spin without yielding before they try again. */
#define PLAIN_SPIN_NS 100000000

/* Until when (monotonic ns) waits spin without yielding (wait_recv); one daemon thread waits. */
static int64_t plain_spin_until = 0;

/* The pid of the process at the other end of a Unix socket, or -1 (not a Unix socket). */
static int peer_pid(int fd) {
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || cr.pid <= 0) return -1;
  return (int)cr.pid;
}

/* The CPU process `pid` last ran on (its main thread: /proc/PID/stat field 39), or -1 (gone). */
static int cpu_of(int pid) {
  if (pid <= 0) return -1;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int f = open(path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return -1;
  char buf[1024];
  ssize_t n = read(f, buf, sizeof buf - 1);
  close(f);
  if (n <= 0) return -1;
  buf[n] = 0;
  /* The command name (field 2) is in parentheses and may hold spaces: count from its end. */
  char *p = strrchr(buf, ')');
  if (p == NULL) return -1;
  int field = 2;
  for (p++; *p != 0; p++) {
    if (*p == ' ' && ++field == 39) return atoi(p + 1);
  }
  return -1;
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

napi_value xsio_number(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

napi_value xsio_fail(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

/* A descriptor: an integer from 0 to INT32_MAX (napi_get_value_int32 would take 1.5 or NaN). */
int xsio_arg_fd(napi_env env, napi_value v, int32_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d > 2147483647.0 || d != floor(d)) return 0;
  *out = (int32_t)d;
  return 1;
}

/* The one argument of a function that takes a descriptor: true, or false with a TypeError thrown. */
static int one_fd_arg(napi_env env, napi_callback_info info, const char *usage, int32_t *fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1) return xsio_fail(env, usage), 0;
  if (!xsio_arg_fd(env, argv[0], fd)) return xsio_fail(env, "fd must be a descriptor"), 0;
  return 1;
}

/* A whole number of bytes from `min` to `max`. */
static int arg_bytes(napi_env env, napi_value v, double min, double max, double *out) {
  return napi_get_value_double(env, v, out) == napi_ok && *out >= min && *out <= max && *out == floor(*out);
}

/*
 * waitRecv(fds: Int32Array, readCount: number, count: number, buf: Buffer, budgetNs: number,
 *          out: Int32Array(1)): number
 * Polls fds[0..count) until one is ready or `budgetNs` (at most 10 ms) has passed. The first
 * `readCount` are the sockets to read; the others are only watched (the listening socket, clients
 * served by the event loop): activity there ends the wait so that the event loop sees it at once.
 * Returns the index of the first ready socket, or -1 if none became ready in time (out[0] = 0) or
 * poll(2) failed (out[0] = -errno). For a socket to read, out[0] is what recv(2) gave: the bytes
 * read into `buf` (> 0), 0 at end of stream, or -errno. A hang-up or error without data, and any
 * watched socket, gives out[0] = 0 with nothing read: the event loop deals with it. Between
 * looks it yields the CPU to any other thread ready to run on it (sched_yield(2)).
 */
static napi_value wait_recv(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6) return xsio_fail(env, "waitRecv(fds, readCount, count, buf, budgetNs, out)");
  napi_typedarray_type t1, t6;
  size_t nfds, nout;
  void *fdsData, *outData, *buf;
  size_t buflen;
  double budget;
  uint32_t readCount, count;
  if (napi_get_typedarray_info(env, argv[0], &t1, &nfds, &fdsData, NULL, NULL) != napi_ok || t1 != napi_int32_array) return xsio_fail(env, "fds must be an Int32Array");
  if (napi_get_value_uint32(env, argv[2], &count) != napi_ok || count == 0 || count > nfds || count > MAX_FDS) return xsio_fail(env, "count must be 1..min(fds.length, 64)");
  if (napi_get_value_uint32(env, argv[1], &readCount) != napi_ok || readCount > count) return xsio_fail(env, "readCount must be at most count");
  if (napi_get_buffer_info(env, argv[3], &buf, &buflen) != napi_ok || buflen == 0) return xsio_fail(env, "buf must be a non-empty Buffer");
  if (napi_get_value_double(env, argv[4], &budget) != napi_ok || !(budget >= 0) || budget > MAX_BUDGET_NS) return xsio_fail(env, "budgetNs must be a number from 0 to 10 ms");
  if (napi_get_typedarray_info(env, argv[5], &t6, &nout, &outData, NULL, NULL) != napi_ok || t6 != napi_int32_array || nout < 1) return xsio_fail(env, "out must be an Int32Array");
  const int32_t *fds = fdsData;
  int32_t *out = outData;
  struct pollfd p[MAX_FDS];
  for (uint32_t i = 0; i < count; i++) p[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
  const int64_t deadline = now_ns() + (int64_t)budget;
  out[0] = 0;
  for (;;) {
    int n = poll(p, count, 0);
    if (n > 0) {
      for (uint32_t i = 0; i < count; i++) {
        if (p[i].revents == 0) continue;
        if (i >= readCount || !(p[i].revents & POLLIN)) return xsio_number(env, (double)i);
        ssize_t r;
        do r = recv(p[i].fd, buf, buflen, MSG_DONTWAIT);
        while (r < 0 && errno == EINTR);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        out[0] = r < 0 ? -errno : (int32_t)r;
        return xsio_number(env, (double)i);
      }
    } else if (n < 0 && errno != EINTR) {
      out[0] = -errno;
      return xsio_number(env, -1);
    }
    const int64_t now = now_ns();
    if (now >= deadline) return xsio_number(env, -1);
    /*
     * Nothing yet: let another runnable thread on this CPU go first, when that is the client.
     * When the client shares the CPU (one vCPU, or the scheduler put them together), it is the
     * one that must run for its next request to come, and a plain spin held it off until the
     * scheduler preempted us: measured with the daemon and a client pinned to one CPU, one
     * request in flight, the busy-polling daemon answered 0.71-0.74x as many reads per second as
     * the same daemon not polling; with the yield, 0.94-1.15x. But beside a CPU-bound thread
     * that is not the client (a TCG guest's vCPU), each yield hands it a whole time slice, and a
     * request that comes meanwhile waits for the slice to end: 512 reads/s against 16,000 for a
     * plain spin, with a busy process pinned beside the daemon and the client on another CPU.
     * So a yield that kept the CPU away for longer than a client's turn, while the client was
     * not on this CPU, turns yielding off for a while, and the plain spin shares the CPU with
     * that thread as before. (A client found on this CPU is not polled for at all: the caller
     * asks besidePeer at its requests. The yield serves the time until it next asks, up to
     * 10 ms, and clients it cannot place.)
     */
    if (now < plain_spin_until) continue;
    sched_yield();
    const int64_t back = now_ns();
    if (back - now > LONG_YIELD_NS && (readCount == 0 || cpu_of(peer_pid(fds[0])) != sched_getcpu())) plain_spin_until = back + PLAIN_SPIN_NS;
  }
}

/*
 * besidePeer(fd: number): number — 1 if the process at the other end of the Unix socket `fd` last
 * ran (its main thread) on the CPU this thread runs on now, 0 if on another, -1 if that cannot be
 * told: not a Unix socket, the process gone, or this very process (its main thread is the one
 * asking, wherever the client's code runs). One getsockopt(2) and a read of /proc/PID/stat, about
 * as much as a request costs, so the caller asks now and then (src/xenstore/socket-io.ts).
 */
static napi_value beside_peer(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!one_fd_arg(env, info, "besidePeer(fd)", &fd)) return NULL;
  const int pid = peer_pid(fd);
  const int cpu = pid == getpid() ? -1 : cpu_of(pid);
  return xsio_number(env, cpu < 0 ? -1 : cpu == sched_getcpu() ? 1 : 0);
}

/* sendNow(fd: number, buf: Buffer): number — send(2) without blocking; bytes sent or -errno. */
static napi_value send_now(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  void *buf;
  size_t len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2) return xsio_fail(env, "sendNow(fd, buf)");
  if (!xsio_arg_fd(env, argv[0], &fd)) return xsio_fail(env, "fd must be a descriptor");
  if (napi_get_buffer_info(env, argv[1], &buf, &len) != napi_ok) return xsio_fail(env, "buf must be a Buffer");
  ssize_t r;
  do r = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return xsio_number(env, r < 0 ? -errno : (double)r);
}

/*
 * The journal (src/xenstore/persist.ts) stores its records into a shared mapping of its file:
 * the bytes are in the page cache, where write(2) would have put them, as soon as they are stored
 * (a killed daemon loses nothing), without a system call per reply. fdatasync(2) on the
 * file writes mapped pages back as it does written ones.
 */

/*
 * The (fd, offset, length) arguments of reserve and mapShared: true, or false with a TypeError
 * thrown. `length` is a whole number of bytes from 1 to `maxLength`.
 */
static int file_range_args(napi_env env, napi_callback_info info, const char *usage, double maxLength, int32_t *fd, double *offset, double *length) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) return xsio_fail(env, usage), 0;
  if (!xsio_arg_fd(env, argv[0], fd)) return xsio_fail(env, "fd must be a descriptor"), 0;
  if (!arg_bytes(env, argv[1], 0, 0x1p52, offset)) return xsio_fail(env, "offset must be a whole number of bytes"), 0;
  if (!arg_bytes(env, argv[2], 1, maxLength, length)) return xsio_fail(env, "length must be a whole number of bytes, at least 1 and not too large"), 0;
  return 1;
}

/*
 * reserve(fd: number, offset: number, length: number): number — posix_fallocate(3): the file
 * grows to cover [offset, offset + length) with blocks allocated, so that a store to a mapping of
 * it can never meet a full disk (which would be SIGBUS instead of an error). 0, or -errno.
 */
static napi_value reserve(napi_env env, napi_callback_info info) {
  int32_t fd;
  double offset, length;
  if (!file_range_args(env, info, "reserve(fd, offset, length)", 0x1p40, &fd, &offset, &length)) return NULL;
  int r = posix_fallocate(fd, (off_t)offset, (off_t)length);
  return xsio_number(env, r == 0 ? 0 : -r);
}

static void unmap(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

/*
 * mapShared(fd: number, offset: number, length: number): Buffer — the file's bytes
 * [offset, offset + length) as a Buffer (mmap(2), MAP_SHARED, read and write); `offset` is a
 * multiple of the page size and the file already covers the range (reserve). Unmapped when the
 * Buffer is garbage-collected: the caller must not touch it after shrinking the file below it.
 * Throws on failure.
 */
static napi_value map_shared(napi_env env, napi_callback_info info) {
  int32_t fd;
  double offset, length;
  if (!file_range_args(env, info, "mapShared(fd, offset, length)", 0x1p30, &fd, &offset, &length)) return NULL;
  void *p = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
  if (p == MAP_FAILED) {
    int e = errno;
    char msg[128];
    snprintf(msg, sizeof msg, "mmap of the journal failed: %s", strerror(e));
    napi_throw_error(env, e == ENOMEM ? "ENOMEM" : e == ENODEV ? "ENODEV" : e == EACCES ? "EACCES" : e == EINVAL ? "EINVAL" : "EMAP", msg);
    return NULL;
  }
  napi_value buf;
  if (napi_create_external_buffer(env, (size_t)length, p, unmap, (void *)(uintptr_t)(size_t)length, &buf) != napi_ok) {
    munmap(p, (size_t)length);
    napi_throw_error(env, "EMAP", "cannot wrap the journal mapping in a Buffer");
    return NULL;
  }
  return buf;
}

/*
 * lockExclusive(fd: number): number — flock(2) with LOCK_EX | LOCK_NB: 0 once this open file
 * holds the lock, or -errno (EWOULDBLOCK: another open file holds it). The kernel drops the lock
 * when the last descriptor of that open file is closed, however the process ends, so a killed
 * daemon leaves no lock behind (src/xenstore/state-lock.ts).
 */
static napi_value lock_exclusive(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!one_fd_arg(env, info, "lockExclusive(fd)", &fd)) return NULL;
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  return xsio_number(env, r < 0 ? -errno : 0);
}

NAPI_MODULE_INIT() {
  napi_property_descriptor d[] = {
    { "waitRecv", NULL, wait_recv, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sendNow", NULL, send_now, NULL, NULL, NULL, napi_enumerable, NULL },
    { "besidePeer", NULL, beside_peer, NULL, NULL, NULL, napi_enumerable, NULL },
    { "reserve", NULL, reserve, NULL, NULL, NULL, napi_enumerable, NULL },
    { "mapShared", NULL, map_shared, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lockExclusive", NULL, lock_exclusive, NULL, NULL, NULL, napi_enumerable, NULL },
    { "readStart", NULL, xsio_read_start, NULL, NULL, NULL, napi_enumerable, NULL },
    { "readPause", NULL, xsio_read_pause, NULL, NULL, NULL, napi_enumerable, NULL },
    { "readResume", NULL, xsio_read_resume, NULL, NULL, NULL, napi_enumerable, NULL },
    { "readClose", NULL, xsio_read_close, NULL, NULL, NULL, napi_enumerable, NULL },
    { "encodeShort", NULL, xsio_encode_short, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  xsio_record_init();
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}
