/* vmstack agent: file transfers (WRITE_FILE, READ_FILE, FILE_DATA). docs/agent-protocol.md. */
#include "agent.h"

struct xfer xfers[MAX_XFERS];

struct xfer *find_xfer(uint32_t id) {
  for (int i = 0; i < MAX_XFERS; i++)
    if (xfers[i].used && xfers[i].id == id) return &xfers[i];
  return NULL;
}

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
void do_write_file(uint32_t id, struct rd *r) {
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

void do_file_data(uint32_t id, const uint8_t *p, size_t n) {
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

void do_file_end(uint32_t id) {
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

void do_read_file(uint32_t id, struct rd *r) {
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
void pump_reads(void) {
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

/* The host went away: no transfer can finish. A partial write leaves no file behind. */
void abort_transfers(void) {
  for (int i = 0; i < MAX_XFERS; i++)
    if (xfers[i].used) xfer_free(&xfers[i], !xfers[i].reading);
}
