/*
 * vmstack-agent: the guest side of the vmstack agent protocol (docs/agent-protocol.md).
 *
 * One single-threaded poll() loop serves one host connection: several commands in flight at once
 * (each in its own process group), file transfers, ping, hello and power requests. The guest has
 * only busybox and this binary, so it is plain C, built `gcc -static -Os`.
 *
 * Channels (exactly one):
 *   (default)        the virtio-serial port named org.vmstack.agent, found through
 *                    /sys/class/virtio-ports/<dev>/name and opened as /dev/<dev>
 *   --port NAME      another virtio-serial port name
 *   --device PATH    a character device (virtio-serial semantics: EOF/POLLHUP = host away, stay)
 *   --listen PATH    listen on a Unix socket; serve one connection at a time (tests)
 *   --connect PATH   connect to a Unix socket; exit when it closes (tests)
 *   --fd N           an inherited socket (socketpair); exit when it closes (tests)
 * --power lets POWER requests really power off/reboot the machine; without it the agent
 * acknowledges and exits 0, so tests on the host can exercise the request safely.
 * --init (PID 1 only; implies --power) first sets the machine up like guest/init (pid1.c). Run
 * as PID 1 (installed as the initrd's /init) the agent does this without being asked.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pid1.h"

#define AGENT_VERSION "0.1.0"
#define PROTO_VERSION 1
#define MAGIC0 0xF7
#define MAGIC1 0x56 /* 'V' */
#define HDR 12
#define MAX_PAYLOAD (1u << 20)
#define CHUNK 65536
#define OUT_HIGH (1u << 20)   /* stop reading pipes/files while this much output is queued */
#define MAX_CMDS 64
#define MAX_XFERS 16
#define MAX_ITEMS 4096        /* argv and env entries per exec */
#define DEFAULT_GRACE_MS 250
#define HOST_RETRY_MS 50      /* virtio-serial: how often to look for a returning host */

/* Frame types: the table in docs/agent-protocol.md and src/guest/protocol.ts. */
enum {
  T_HELLO = 0x01, T_PING = 0x02, T_EXEC = 0x03, T_STDIN = 0x04, T_SIGNAL = 0x05,
  T_WRITE_FILE = 0x06, T_FILE_DATA = 0x07, T_READ_FILE = 0x08, T_POWER = 0x09,
  T_HELLO_REPLY = 0x41, T_PONG = 0x42, T_STARTED = 0x43, T_STDOUT = 0x44, T_STDERR = 0x45,
  T_EXIT = 0x46, T_STDIN_ACK = 0x47, T_FILE_INFO = 0x48, T_OK = 0x49, T_READY = 0x4A,
  T_ERROR = 0x7F,
};
/* ERROR codes >= 1000 are protocol errors; below that they are Linux errno values. */
enum {
  E_BAD_FRAME = 1000, E_TOO_LARGE = 1001, E_UNKNOWN_TYPE = 1002, E_BAD_PAYLOAD = 1003,
  E_DUPLICATE_ID = 1004, E_LIMIT = 1005,
};
enum { EXEC_SHELL = 1, EXEC_STDIN = 2, EXEC_CLEAR_ENV = 4 };
enum { EXIT_TIMED_OUT = 1, EXIT_HELD_OPEN = 2 };
enum mode { M_PORT, M_DEVICE, M_LISTEN, M_CONNECT, M_FD };

struct buf { uint8_t *p; size_t off, len, cap; }; /* bytes [off, len) are pending */

struct cmd {
  int used, detached; /* detached: EXIT sent with held-open; drain and discard until EOF */
  uint32_t id;
  pid_t pid;
  int in_fd, out_fd, err_fd, in_eof, exited, status, timed_out;
  struct buf in;
  int64_t start, deadline, grace, grace_deadline;
};

struct xfer { int used, reading; uint32_t id; int fd; char *path, *tmp; };

static enum mode mode = M_PORT;
static const char *chan_arg = "org.vmstack.agent";
static int power_allowed;
static int conn_fd = -1, listen_fd = -1, sig_fd = -1, host_up;
static struct buf inb, outb;
static struct cmd cmds[MAX_CMDS];
static struct xfer xfers[MAX_XFERS];
static uint8_t scratch[CHUNK];

static void die(const char *what) {
  fprintf(stderr, "vmstack-agent: fatal: %s: %s\n", what, strerror(errno));
  exit(2);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t put_str(uint8_t *p, const char *s) {
  size_t n = strlen(s);
  put32(p, (uint32_t)n);
  memcpy(p + 4, s, n);
  return 4 + n;
}

static void buf_append(struct buf *b, const void *data, size_t n) {
  if (b->off > 0 && b->off == b->len) b->off = b->len = 0;
  if (b->len + n > b->cap) {
    if (b->off > 0) { /* compact before growing */
      memmove(b->p, b->p + b->off, b->len - b->off);
      b->len -= b->off;
      b->off = 0;
    }
    if (b->len + n > b->cap) {
      size_t cap = b->cap ? b->cap : 4096;
      while (cap < b->len + n) cap *= 2;
      uint8_t *p = realloc(b->p, cap);
      if (!p) die("out of memory");
      b->p = p;
      b->cap = cap;
    }
  }
  if (n) memcpy(b->p + b->len, data, n);
  b->len += n;
}
static size_t buf_pending(const struct buf *b) { return b->len - b->off; }
static void buf_free(struct buf *b) { free(b->p); memset(b, 0, sizeof *b); }

/* Queue one frame; the payload is the concatenation of two parts (saves a copy for data frames). */
static void send_frame(int type, uint32_t id, const void *a, size_t alen, const void *b, size_t blen) {
  uint8_t h[HDR];
  h[0] = MAGIC0; h[1] = MAGIC1; h[2] = (uint8_t)type; h[3] = 0;
  put32(h + 4, id);
  put32(h + 8, (uint32_t)(alen + blen));
  buf_append(&outb, h, HDR);
  buf_append(&outb, a, alen);
  buf_append(&outb, b, blen);
}

static void send_u32(int type, uint32_t id, uint32_t v) {
  uint8_t p[4];
  put32(p, v);
  send_frame(type, id, p, 4, NULL, 0);
}

static void send_error(uint32_t id, uint32_t code, const char *fmt, ...) {
  char msg[512];
  uint8_t p[8];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  put32(p, code);
  put32(p + 4, (uint32_t)strlen(msg));
  send_frame(T_ERROR, id, p, 8, msg, strlen(msg));
}

/* ---- payload reader: every field is checked; any problem marks the whole payload bad ---- */
struct rd { const uint8_t *p; size_t n; int bad; };

static uint32_t rd_u32(struct rd *r) {
  if (r->bad || r->n < 4) { r->bad = 1; return 0; }
  uint32_t v = get32(r->p);
  r->p += 4; r->n -= 4;
  return v;
}
/* A length-prefixed string without NUL bytes, returned NUL-terminated (caller frees). */
static char *rd_str(struct rd *r) {
  uint32_t len = rd_u32(r);
  if (r->bad || len > r->n || memchr(r->p, 0, len)) { r->bad = 1; return NULL; }
  char *s = malloc(len + 1);
  if (!s) die("out of memory");
  memcpy(s, r->p, len);
  s[len] = 0;
  r->p += len; r->n -= len;
  return s;
}

static struct cmd *find_cmd(uint32_t id) {
  for (int i = 0; i < MAX_CMDS; i++)
    if (cmds[i].used && !cmds[i].detached && cmds[i].id == id) return &cmds[i];
  return NULL;
}
static struct xfer *find_xfer(uint32_t id) {
  for (int i = 0; i < MAX_XFERS; i++)
    if (xfers[i].used && xfers[i].id == id) return &xfers[i];
  return NULL;
}
static int id_in_use(uint32_t id) { return find_cmd(id) || find_xfer(id); }

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* ---- commands ---- */

static void cmd_free(struct cmd *c) {
  close_fd(&c->in_fd);
  close_fd(&c->out_fd);
  close_fd(&c->err_fd);
  buf_free(&c->in);
  c->used = 0;
}

/* Report the exit. With held_open, output is no longer streamed: the pipes stay open and are
 * drained into nowhere, so a background process that still writes neither blocks nor dies of
 * SIGPIPE (a daemon started by the command keeps running). */
static void cmd_finish(struct cmd *c, int held_open) {
  uint8_t p[12];
  int st = c->status;
  p[0] = WIFSIGNALED(st) ? 1 : 0;
  p[1] = (uint8_t)((c->timed_out ? EXIT_TIMED_OUT : 0) | (held_open ? EXIT_HELD_OPEN : 0));
  p[2] = p[3] = 0;
  put32(p + 4, (uint32_t)(WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st)));
  put32(p + 8, (uint32_t)(now_ms() - c->start));
  send_frame(T_EXIT, c->id, p, sizeof p, NULL, 0);
  if (held_open) {
    c->detached = 1;
    close_fd(&c->in_fd);
    buf_free(&c->in);
  } else {
    cmd_free(c);
  }
}

static void cmd_check_done(struct cmd *c) {
  if (c->out_fd >= 0 || c->err_fd >= 0) return;
  if (c->detached) cmd_free(c);
  else if (c->exited) cmd_finish(c, 0);
}

/* The grace period ended with stdout or stderr still open. First take what is already in the
 * pipes, past the usual output-queue limit: the command wrote it before exiting (at most a pipe
 * buffer per stream), so it belongs to the result even if the host was slow to read. Bounded, so
 * a background process that writes without pause cannot keep us here. */
static void cmd_grace_expired(struct cmd *c) {
  int *fds[2] = {&c->out_fd, &c->err_fd};
  for (int k = 0; k < 2; k++) {
    for (size_t total = 0; *fds[k] >= 0 && total < OUT_HIGH;) {
      ssize_t n = read(*fds[k], scratch, sizeof scratch);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;
      if (n > 0) {
        send_frame(k ? T_STDERR : T_STDOUT, c->id, scratch, (size_t)n, NULL, 0);
        total += (size_t)n;
        continue;
      }
      send_frame(k ? T_STDERR : T_STDOUT, c->id, NULL, 0, NULL, 0);
      close_fd(fds[k]);
    }
  }
  cmd_finish(c, c->out_fd >= 0 || c->err_fd >= 0);
}

static void do_exec(uint32_t id, struct rd *r) {
  uint32_t flags = rd_u32(r), timeout = rd_u32(r), grace = rd_u32(r);
  char *cwd = rd_str(r);
  uint32_t argc = rd_u32(r);
  char **argv = NULL, **env = NULL;
  uint32_t envc = 0, na = 0, ne = 0;
  if (!r->bad && (argc == 0 || argc > MAX_ITEMS)) r->bad = 1;
  if (!r->bad) argv = calloc(argc + 1, sizeof *argv);
  for (; !r->bad && na < argc; na++) argv[na] = rd_str(r);
  if (!r->bad) envc = rd_u32(r);
  if (!r->bad && envc > MAX_ITEMS) r->bad = 1;
  if (!r->bad) env = calloc(envc + 1, sizeof *env);
  for (; !r->bad && ne < envc; ne++) {
    env[ne] = rd_str(r);
    if (env[ne] && (env[ne][0] == '=' || !strchr(env[ne], '='))) r->bad = 1;
  }
  if (!r->bad && (r->n != 0 || (flags & ~7u) || ((flags & EXEC_SHELL) && argc != 1))) r->bad = 1;

  struct cmd *c = NULL;
  if (r->bad) {
    send_error(id, E_BAD_PAYLOAD, "malformed EXEC payload");
    goto out;
  }
  if (id == 0 || id_in_use(id)) {
    send_error(id, E_DUPLICATE_ID, "id %u is zero or already in use", id);
    goto out;
  }
  for (int i = 0; i < MAX_CMDS && !c; i++)
    if (!cmds[i].used) c = &cmds[i];
  if (!c) {
    send_error(id, E_LIMIT, "too many commands (limit %d)", MAX_CMDS);
    goto out;
  }

  /* rep: the child reports a failed chdir/exec here; a successful exec closes it (CLOEXEC). */
  int inp[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2] = {-1, -1};
  int ok = (flags & EXEC_STDIN) ? pipe2(inp, O_CLOEXEC) == 0
                                : (inp[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;
  ok = ok && pipe2(outp, O_CLOEXEC) == 0 && pipe2(errp, O_CLOEXEC) == 0 && pipe2(rep, O_CLOEXEC) == 0;
  int64_t start = now_ms();
  pid_t pid = ok ? fork() : -1;
  if (pid < 0) { /* out of fds or processes: this command fails, the agent carries on */
    send_error(id, (uint32_t)errno, "%s: %s", ok ? "fork" : "pipe", strerror(errno));
    int *all[] = {&inp[0], &inp[1], &outp[0], &outp[1], &errp[0], &errp[1], &rep[0], &rep[1]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) close_fd(all[i]);
    goto out;
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Ignored signals are inherited through exec: whoever started the agent (a background
     * shell ignores SIGINT, we ignore SIGPIPE) must not decide what the command ignores. */
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    setpgid(0, 0); /* its own group, so timeouts and SIGNAL reach everything it starts */
    dup2(inp[0], 0);
    dup2(outp[1], 1);
    dup2(errp[1], 2);
    int stage = 0, err;
    if (cwd[0] && chdir(cwd) < 0) goto fail;
    if (flags & EXEC_CLEAR_ENV) clearenv();
    for (uint32_t i = 0; i < envc; i++) putenv(env[i]);
    stage = 1;
    if (flags & EXEC_SHELL) execl("/bin/sh", "sh", "-c", argv[0], (char *)NULL);
    else execvp(argv[0], argv);
  fail:
    err = errno;
    int msg[2] = {stage, err};
    if (write(rep[1], msg, sizeof msg) < 0) _exit(127);
    _exit(127);
  }
  setpgid(pid, pid); /* also here: no race with a SIGNAL that arrives before the child runs */
  close(inp[0]); close(outp[1]); close(errp[1]); close(rep[1]);
  int msg[2];
  ssize_t n;
  do n = read(rep[0], msg, sizeof msg); while (n < 0 && errno == EINTR);
  close(rep[0]);
  if (n == (ssize_t)sizeof msg) { /* the child is reaped later and matches no command */
    send_error(id, (uint32_t)msg[1], "%s %s: %s", msg[0] ? "exec" : "chdir",
               msg[0] ? argv[0] : cwd, strerror(msg[1]));
    close_fd(&inp[1]); close(outp[0]); close(errp[0]);
    goto out;
  }
  memset(c, 0, sizeof *c);
  c->used = 1;
  c->id = id;
  c->pid = pid;
  c->in_fd = inp[1];
  c->out_fd = outp[0];
  c->err_fd = errp[0];
  c->start = start;
  c->deadline = timeout ? start + timeout : 0;
  c->grace = grace ? grace : DEFAULT_GRACE_MS;
  if (c->in_fd >= 0) set_nonblock(c->in_fd);
  set_nonblock(c->out_fd);
  set_nonblock(c->err_fd);
  send_u32(T_STARTED, id, (uint32_t)pid);
out:
  free(cwd);
  for (uint32_t i = 0; argv && i < na; i++) free(argv[i]);
  for (uint32_t i = 0; env && i < ne; i++) free(env[i]);
  free(argv);
  free(env);
}

static void reap(void) {
  int st;
  pid_t pid;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_CMDS; i++) {
      struct cmd *c = &cmds[i];
      if (!c->used || c->exited || c->pid != pid) continue;
      c->exited = 1;
      c->status = st;
      c->grace_deadline = now_ms() + c->grace;
      cmd_check_done(c);
    }
  }
}

static void drain_output(struct cmd *c, int *fd, int type) {
  ssize_t n = read(*fd, scratch, sizeof scratch);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n > 0) {
    if (!c->detached) send_frame(type, c->id, scratch, (size_t)n, NULL, 0);
    return;
  }
  if (!c->detached) send_frame(type, c->id, NULL, 0, NULL, 0); /* empty = end of stream */
  close_fd(fd);
  cmd_check_done(c);
}

static void feed_stdin(struct cmd *c) {
  size_t len = buf_pending(&c->in);
  ssize_t n = len ? write(c->in_fd, c->in.p + c->in.off, len) : 0;
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n < 0) { /* EPIPE: the command closed its stdin; what it never read counts as consumed */
    if (len) send_u32(T_STDIN_ACK, c->id, (uint32_t)len);
    buf_free(&c->in);
    close_fd(&c->in_fd);
    return;
  }
  c->in.off += (size_t)n;
  if (n > 0) send_u32(T_STDIN_ACK, c->id, (uint32_t)n);
  if (c->in_eof && buf_pending(&c->in) == 0) close_fd(&c->in_fd);
}

static void do_stdin(uint32_t id, const uint8_t *p, size_t n) {
  struct cmd *c = find_cmd(id);
  if (!c) return; /* a command that just ended: a normal race, not an error */
  if (n == 0) {
    c->in_eof = 1;
    if (buf_pending(&c->in) == 0) close_fd(&c->in_fd);
  } else if (c->in_fd < 0 || c->in_eof) {
    send_u32(T_STDIN_ACK, id, (uint32_t)n);
  } else {
    buf_append(&c->in, p, n);
  }
}

static void kill_all(void) {
  for (int i = 0; i < MAX_CMDS; i++)
    if (cmds[i].used && cmds[i].pid > 0) kill(-cmds[i].pid, SIGKILL);
}

/* ---- file transfer ---- */

static void xfer_free(struct xfer *x, int failed) {
  if (x->fd >= 0) close(x->fd);
  if (failed && x->tmp) unlink(x->tmp);
  free(x->path);
  free(x->tmp);
  memset(x, 0, sizeof *x);
  x->fd = -1;
}

static struct xfer *xfer_new(uint32_t id) {
  if (id == 0 || id_in_use(id)) {
    send_error(id, E_DUPLICATE_ID, "id %u is zero or already in use", id);
    return NULL;
  }
  for (int i = 0; i < MAX_XFERS; i++)
    if (!xfers[i].used) {
      memset(&xfers[i], 0, sizeof xfers[i]);
      xfers[i].used = 1;
      xfers[i].id = id;
      xfers[i].fd = -1;
      return &xfers[i];
    }
  send_error(id, E_LIMIT, "too many file transfers (limit %d)", MAX_XFERS);
  return NULL;
}

static int mkdir_parents(const char *path) {
  char *p = strdup(path);
  if (!p) die("out of memory");
  for (char *s = p + 1; (s = strchr(s, '/')); s++) {
    *s = 0;
    if (mkdir(p, 0755) < 0 && errno != EEXIST) { free(p); return -1; }
    *s = '/';
  }
  free(p);
  return 0;
}

/* WRITE_FILE: data goes to a temporary name next to the target, renamed into place at the end,
 * so a reader never sees a half-written file and a failed transfer leaves nothing behind. */
static void do_write_file(uint32_t id, struct rd *r) {
  uint32_t fmode = rd_u32(r), flags = rd_u32(r);
  char *path = rd_str(r);
  if (r->bad || r->n || !path[0] || (fmode & ~07777u) || (flags & ~1u)) {
    send_error(id, E_BAD_PAYLOAD, "malformed WRITE_FILE payload");
    free(path);
    return;
  }
  struct xfer *x = xfer_new(id);
  if (!x) { free(path); return; }
  x->path = path;
  if (asprintf(&x->tmp, "%s.vmstack-tmp-%u", path, id) < 0) die("out of memory");
  if ((flags & 1) && mkdir_parents(path) < 0) goto fail;
  x->fd = open(x->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (x->fd < 0 || fchmod(x->fd, fmode) < 0) goto fail;
  return;
fail:
  send_error(id, (uint32_t)errno, "write %s: %s", path, strerror(errno));
  xfer_free(x, 1);
}

static void do_file_data(uint32_t id, const uint8_t *p, size_t n) {
  struct xfer *x = find_xfer(id);
  if (!x || x->reading) return; /* a transfer that already failed: drop the rest quietly */
  while (n > 0) {
    ssize_t w = write(x->fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) goto fail;
    p += w;
    n -= (size_t)w;
  }
  return;
fail:
  send_error(id, (uint32_t)errno, "write %s: %s", x->path, strerror(errno));
  xfer_free(x, 1);
}

static void do_file_end(uint32_t id) {
  struct xfer *x = find_xfer(id);
  if (!x || x->reading) return;
  int fd = x->fd;
  x->fd = -1;
  if (close(fd) < 0 || rename(x->tmp, x->path) < 0) {
    send_error(id, (uint32_t)errno, "write %s: %s", x->path, strerror(errno));
    xfer_free(x, 1);
    return;
  }
  send_frame(T_OK, id, NULL, 0, NULL, 0);
  xfer_free(x, 0);
}

static void do_read_file(uint32_t id, struct rd *r) {
  char *path = rd_str(r);
  if (r->bad || r->n || !path[0]) {
    send_error(id, E_BAD_PAYLOAD, "malformed READ_FILE payload");
    free(path);
    return;
  }
  struct xfer *x = xfer_new(id);
  if (!x) { free(path); return; }
  x->path = path;
  x->reading = 1;
  struct stat st;
  x->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (x->fd < 0 || fstat(x->fd, &st) < 0) goto fail;
  if (!S_ISREG(st.st_mode)) {
    errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    goto fail;
  }
  uint8_t p[12];
  put32(p, st.st_mode & 07777);
  put32(p + 4, (uint32_t)((uint64_t)st.st_size >> 32));
  put32(p + 8, (uint32_t)st.st_size);
  send_frame(T_FILE_INFO, id, p, sizeof p, NULL, 0);
  return;
fail:
  send_error(id, (uint32_t)errno, "read %s: %s", path, strerror(errno));
  xfer_free(x, 0);
}

/* One chunk of each reading transfer per loop turn, so big files interleave with command output. */
static void pump_reads(void) {
  for (int i = 0; i < MAX_XFERS && buf_pending(&outb) < OUT_HIGH; i++) {
    struct xfer *x = &xfers[i];
    if (!x->used || !x->reading) continue;
    ssize_t n = read(x->fd, scratch, sizeof scratch);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      send_error(x->id, (uint32_t)errno, "read %s: %s", x->path, strerror(errno));
      xfer_free(x, 0);
    } else {
      send_frame(T_FILE_DATA, x->id, scratch, (size_t)n, NULL, 0);
      if (n == 0) xfer_free(x, 0);
    }
  }
}

/* ---- power ---- */

static void flush_out(int ms) {
  int64_t end = now_ms() + ms;
  while (buf_pending(&outb) && conn_fd >= 0 && now_ms() < end) {
    struct pollfd p = {conn_fd, POLLOUT, 0};
    poll(&p, 1, 20);
    ssize_t n = write(conn_fd, outb.p + outb.off, buf_pending(&outb));
    if (n > 0) outb.off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR) break;
  }
}

static void do_power(uint32_t id, struct rd *r) {
  uint32_t action = rd_u32(r);
  if (r->bad || r->n || action > 1) {
    send_error(id, E_BAD_PAYLOAD, "malformed POWER payload");
    return;
  }
  send_frame(T_OK, id, NULL, 0, NULL, 0);
  flush_out(1000);
  kill_all();
  if (!power_allowed) {
    fprintf(stderr, "vmstack-agent: %s requested; exiting (no --power)\n", action ? "reboot" : "poweroff");
    exit(0);
  }
  sync();
  reboot(action ? RB_AUTOBOOT : RB_POWER_OFF);
  die("reboot");
}

/* ---- frames from the host ---- */

static void dispatch(int type, uint32_t id, const uint8_t *p, size_t n) {
  struct rd r = {p, n, 0};
  switch (type) {
  case T_HELLO: {
    rd_u32(&r); /* the host's version: the host decides whether ours suits it */
    struct utsname u;
    char kernel[200] = "";
    if (uname(&u) == 0) snprintf(kernel, sizeof kernel, "%s %s %s", u.sysname, u.release, u.machine);
    uint8_t h[8 + 4 + sizeof AGENT_VERSION + 4 + sizeof kernel];
    size_t len = 0;
    put32(h, PROTO_VERSION);
    put32(h + 4, MAX_PAYLOAD);
    len = 8 + put_str(h + 8, AGENT_VERSION);
    len += put_str(h + len, kernel);
    send_frame(T_HELLO_REPLY, id, h, len, NULL, 0);
    break;
  }
  case T_PING: send_frame(T_PONG, id, p, n, NULL, 0); break;
  case T_EXEC: do_exec(id, &r); break;
  case T_STDIN: do_stdin(id, p, n); break;
  case T_SIGNAL: {
    uint32_t sig = rd_u32(&r);
    struct cmd *c = find_cmd(id);
    if (r.bad || r.n || sig < 1 || sig > 64) send_error(id, E_BAD_PAYLOAD, "malformed SIGNAL payload");
    else if (c && !c->exited) kill(-c->pid, (int)sig);
    break;
  }
  case T_WRITE_FILE: do_write_file(id, &r); break;
  case T_FILE_DATA: if (n) do_file_data(id, p, n); else do_file_end(id); break;
  case T_READ_FILE: do_read_file(id, &r); break;
  case T_POWER: do_power(id, &r); break;
  case T_ERROR: break; /* the host's complaint about us: nothing to answer (no error ping-pong) */
  default: send_error(id, E_UNKNOWN_TYPE, "unknown frame type 0x%02x", type); break;
  }
}

/* Decode every complete frame in inb. Garbage is skipped up to the next magic (one ERROR per
 * skipped run), so a host that connects mid-stream or a corrupted byte never wedges the channel. */
static void process_input(void) {
  for (;;) {
    uint8_t *p = inb.p + inb.off;
    size_t n = buf_pending(&inb);
    if (n == 0) return;
    if (p[0] != MAGIC0 || (n > 1 && p[1] != MAGIC1)) {
      size_t skip = 1;
      while (skip < n && !(p[skip] == MAGIC0 && (skip + 1 == n || p[skip + 1] == MAGIC1))) skip++;
      inb.off += skip;
      send_error(0, E_BAD_FRAME, "skipped %zu bytes that are not a frame", skip);
      continue;
    }
    if (n < HDR) return;
    uint32_t id = get32(p + 4), len = get32(p + 8);
    if (len > MAX_PAYLOAD) {
      send_error(id, E_TOO_LARGE, "frame payload of %u bytes exceeds %u", len, MAX_PAYLOAD);
      inb.off += 2; /* resynchronise after this header's magic */
      continue;
    }
    if (n < HDR + len) return;
    inb.off += HDR + len;
    if (p[3] != 0) send_error(id, E_BAD_FRAME, "reserved header byte is %u, not 0", p[3]);
    else dispatch(p[2], id, p + HDR, len);
  }
}

/* ---- the channel ---- */

static void host_lost(void) {
  inb.off = inb.len = 0; /* a half-received frame from the old host must not prefix the next */
  host_up = 0;
  switch (mode) {
  case M_FD: case M_CONNECT:
    kill_all();
    exit(0);
  case M_LISTEN:
    close_fd(&conn_fd);
    break;
  case M_PORT: case M_DEVICE:
    break; /* the port stays open; the host comes back when QEMU's socket gets a new client */
  }
}

static void host_found(void) {
  host_up = 1;
  send_u32(T_READY, 0, PROTO_VERSION); /* may be lost; the host also sends HELLO until answered */
}

static char *find_port(const char *name) {
  static char path[300];
  for (int tries = 0; tries < 1000; tries++) { /* ports appear asynchronously after insmod: ~10 s */
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    while (d && (e = readdir(d))) {
      char f[300], got[256] = "";
      if (e->d_name[0] == '.') continue;
      snprintf(f, sizeof f, "/sys/class/virtio-ports/%s/name", e->d_name);
      FILE *fp = fopen(f, "re");
      if (!fp) continue;
      if (fgets(got, sizeof got, fp)) got[strcspn(got, "\n")] = 0;
      fclose(fp);
      if (strcmp(got, name) == 0) {
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        if (access(path, F_OK) == 0) { closedir(d); return path; }
      }
    }
    if (d) closedir(d);
    struct timespec ts = {0, 10 * 1000000};
    nanosleep(&ts, NULL);
  }
  errno = ENOENT;
  return NULL;
}

static int unix_socket(const char *path, struct sockaddr_un *sa) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa->sun_path) { errno = ENAMETOOLONG; die(path); }
  strcpy(sa->sun_path, path);
  return fd;
}

static const char *open_channel(void) {
  struct sockaddr_un sa;
  switch (mode) {
  case M_PORT: {
    const char *dev = find_port(chan_arg);
    if (!dev) die(chan_arg);
    chan_arg = dev;
  } /* fall through */
  case M_DEVICE:
    conn_fd = open(chan_arg, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (conn_fd < 0) die(chan_arg);
    break;
  case M_LISTEN:
    listen_fd = unix_socket(chan_arg, &sa);
    unlink(chan_arg);
    if (bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(listen_fd, 4) < 0) die(chan_arg);
    break;
  case M_CONNECT:
    conn_fd = unix_socket(chan_arg, &sa);
    if (connect(conn_fd, (struct sockaddr *)&sa, sizeof sa) < 0) die(chan_arg);
    set_nonblock(conn_fd);
    host_found();
    break;
  case M_FD:
    conn_fd = atoi(chan_arg);
    if (fcntl(conn_fd, F_SETFD, FD_CLOEXEC) < 0) die("--fd");
    set_nonblock(conn_fd);
    host_found();
    break;
  }
  return chan_arg;
}

static void usage(void) {
  fprintf(stderr, "usage: vmstack-agent [--port NAME | --device PATH | --listen PATH | --connect PATH"
                  " | --fd N] [--power] [--init]\n");
  exit(2);
}

/* poll() slots: what each pollfd stands for */
enum { P_CONN, P_LISTEN, P_SIG, P_OUT, P_ERR, P_IN };

int main(int argc, char **argv) {
  int as_init = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--power") == 0) { power_allowed = 1; continue; }
    if (strcmp(a, "--init") == 0) { as_init = 1; power_allowed = 1; continue; }
    if (strcmp(a, "--version") == 0) { printf("vmstack-agent %s protocol %d\n", AGENT_VERSION, PROTO_VERSION); return 0; }
    if (i + 1 >= argc) usage();
    if (strcmp(a, "--port") == 0) mode = M_PORT;
    else if (strcmp(a, "--device") == 0) mode = M_DEVICE;
    else if (strcmp(a, "--listen") == 0) mode = M_LISTEN;
    else if (strcmp(a, "--connect") == 0) mode = M_CONNECT;
    else if (strcmp(a, "--fd") == 0) mode = M_FD;
    else usage();
    chan_arg = argv[++i];
  }
  /* Run as PID 1 (the initrd's /init is this binary): nothing else will set the machine up. */
  if (getpid() == 1) as_init = power_allowed = 1;
  if (as_init) pid1_setup();
  for (int i = 0; i < MAX_XFERS; i++) xfers[i].fd = -1;
  signal(SIGPIPE, SIG_IGN); /* a vanished host or a closed stdin pipe is an errno, not a death */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGCHLD);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  sigprocmask(SIG_BLOCK, &sigs, NULL);
  if ((sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) die("signalfd");
  /* Orphans (a command's background processes) re-parent to us, so we reap them: no zombies,
   * and it works the same whether or not the agent is PID 1. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  const char *where = open_channel();
  fprintf(stderr, "vmstack-agent: ready (protocol %d) on %s\n", PROTO_VERSION, where);

  static struct pollfd pfd[3 + 3 * MAX_CMDS];
  static int what[3 + 3 * MAX_CMDS], whom[3 + 3 * MAX_CMDS];
  for (;;) {
    int64_t now = now_ms(), wake = -1;
    int nf = 0, device = mode == M_PORT || mode == M_DEVICE;
#define WAKE(t) do { int64_t t_ = (t); if (wake < 0 || t_ < wake) wake = t_; } while (0)
    if (device && !host_up) { /* POLLHUP while the host is away: probe, don't spin */
      struct pollfd p = {conn_fd, POLLIN, 0};
      poll(&p, 1, 0);
      if (!(p.revents & POLLHUP)) host_found();
      else WAKE(now + HOST_RETRY_MS);
    }
    for (int i = 0; i < MAX_CMDS; i++) { /* timers: guest-side timeout, output grace */
      struct cmd *c = &cmds[i];
      if (!c->used) continue;
      if (!c->exited && c->deadline && !c->timed_out) {
        if (now >= c->deadline) { c->timed_out = 1; kill(-c->pid, SIGKILL); }
        else WAKE(c->deadline);
      }
      if (c->exited && !c->detached) {
        if (now >= c->grace_deadline) cmd_grace_expired(c);
        else WAKE(c->grace_deadline);
      }
    }
    int room = buf_pending(&outb) < OUT_HIGH;
    if (room) for (int i = 0; i < MAX_XFERS; i++) if (xfers[i].used && xfers[i].reading) WAKE(now);
    if (conn_fd >= 0 && (!device || host_up)) {
      pfd[nf] = (struct pollfd){conn_fd, POLLIN | (buf_pending(&outb) ? POLLOUT : 0), 0};
      what[nf++] = P_CONN;
    }
    if (listen_fd >= 0 && conn_fd < 0) { pfd[nf] = (struct pollfd){listen_fd, POLLIN, 0}; what[nf++] = P_LISTEN; }
    pfd[nf] = (struct pollfd){sig_fd, POLLIN, 0};
    what[nf++] = P_SIG;
    for (int i = 0; i < MAX_CMDS; i++) {
      struct cmd *c = &cmds[i];
      if (!c->used) continue;
      /* while output is backed up, leave pipes unread: the command blocks, the guest does not swell */
      if (c->out_fd >= 0 && (room || c->detached)) { pfd[nf] = (struct pollfd){c->out_fd, POLLIN, 0}; what[nf] = P_OUT; whom[nf++] = i; }
      if (c->err_fd >= 0 && (room || c->detached)) { pfd[nf] = (struct pollfd){c->err_fd, POLLIN, 0}; what[nf] = P_ERR; whom[nf++] = i; }
      if (c->in_fd >= 0 && buf_pending(&c->in)) { pfd[nf] = (struct pollfd){c->in_fd, POLLOUT, 0}; what[nf] = P_IN; whom[nf++] = i; }
    }
    int timeout = wake < 0 ? -1 : (int)(wake > now ? wake - now : 0);
    if (poll(pfd, (nfds_t)nf, timeout) < 0 && errno != EINTR) die("poll");
    for (int k = 0; k < nf; k++) {
      short ev = pfd[k].revents;
      if (!ev) continue;
      struct cmd *c = &cmds[whom[k]];
      switch (what[k]) {
      case P_CONN:
        if (ev & POLLOUT) {
          ssize_t n = write(conn_fd, outb.p + outb.off, buf_pending(&outb));
          if (n > 0) outb.off += (size_t)n;
          else if (n < 0 && errno != EAGAIN && errno != EINTR) { host_lost(); break; }
        }
        if (ev & (POLLIN | POLLHUP | POLLERR)) {
          uint8_t tmp[CHUNK];
          ssize_t n = read(conn_fd, tmp, sizeof tmp);
          if (n > 0) { buf_append(&inb, tmp, (size_t)n); process_input(); }
          else if (n == 0 || (errno != EAGAIN && errno != EINTR)) host_lost();
        }
        break;
      case P_LISTEN:
        conn_fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (conn_fd >= 0) host_found();
        break;
      case P_SIG: {
        struct signalfd_siginfo si;
        while (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
          if (si.ssi_signo != SIGCHLD) {
            fprintf(stderr, "vmstack-agent: exiting on signal %u\n", si.ssi_signo);
            kill_all();
            exit(0);
          }
        }
        reap();
        break;
      }
      /* a slot may have been freed by an earlier event in this same turn */
      case P_OUT: if (c->used && c->out_fd == pfd[k].fd) drain_output(c, &c->out_fd, T_STDOUT); break;
      case P_ERR: if (c->used && c->err_fd == pfd[k].fd) drain_output(c, &c->err_fd, T_STDERR); break;
      case P_IN: if (c->used && c->in_fd == pfd[k].fd) feed_stdin(c); break;
      }
    }
    pump_reads();
    if (buf_pending(&outb) && conn_fd >= 0 && (!(mode == M_PORT || mode == M_DEVICE) || host_up)) {
      /* write eagerly: most turns end with fresh output and a free socket */
      ssize_t n = write(conn_fd, outb.p + outb.off, buf_pending(&outb));
      if (n > 0) outb.off += (size_t)n;
    }
  }
}
