/* vmstack agent: byte buffers, outgoing frames, and the checked payload reader. */
#include "agent.h"

struct buf outb;
uint8_t scratch[CHUNK];

void die(const char *what) {
  fprintf(stderr, "vmstack-agent: fatal: %s: %s\n", what, strerror(errno));
  exit(2);
}

int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The /dev path of the virtio-serial port called `name` (QEMU's virtserialport name=), polling
 * every `poll_ms` for up to `wait_ms`: ports appear asynchronously after their driver loads.
 * 0 and `out` filled, or -1 with errno ENOENT.
 */
int find_virtio_port(const char *name, char *out, size_t outlen, int wait_ms, int poll_ms) {
  int64_t end = now_ms() + wait_ms;
  do {
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
        snprintf(out, outlen, "/dev/%s", e->d_name);
        if (access(out, F_OK) == 0) { closedir(d); return 0; }
      }
    }
    if (d) closedir(d);
    struct timespec ts = {0, (long)poll_ms * 1000000};
    nanosleep(&ts, NULL);
  } while (now_ms() < end);
  errno = ENOENT;
  return -1;
}

void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

size_t put_str(uint8_t *p, const char *s) {
  size_t n = strlen(s);
  put32(p, (uint32_t)n);
  memcpy(p + 4, s, n);
  return 4 + n;
}

void buf_append(struct buf *b, const void *data, size_t n) {
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
size_t buf_pending(const struct buf *b) { return b->len - b->off; }
void buf_free(struct buf *b) { free(b->p); memset(b, 0, sizeof *b); }

/* Queue one frame; the payload is the concatenation of two parts (saves a copy for data frames). */
void send_frame(int type, uint32_t id, const void *a, size_t alen, const void *b, size_t blen) {
  uint8_t h[HDR];
  h[0] = MAGIC0; h[1] = MAGIC1; h[2] = (uint8_t)type; h[3] = 0;
  put32(h + 4, id);
  put32(h + 8, (uint32_t)(alen + blen));
  buf_append(&outb, h, HDR);
  buf_append(&outb, a, alen);
  buf_append(&outb, b, blen);
}

void send_u32(int type, uint32_t id, uint32_t v) {
  uint8_t p[4];
  put32(p, v);
  send_frame(type, id, p, 4, NULL, 0);
}

void send_error(uint32_t id, uint32_t code, const char *fmt, ...) {
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

uint32_t rd_u32(struct rd *r) {
  if (r->bad || r->n < 4) { r->bad = 1; return 0; }
  uint32_t v = get32(r->p);
  r->p += 4; r->n -= 4;
  return v;
}
/* A length-prefixed string without NUL bytes, returned NUL-terminated (caller frees). */
char *rd_str(struct rd *r) {
  uint32_t len = rd_u32(r);
  if (r->bad || len > r->n || memchr(r->p, 0, len)) { r->bad = 1; return NULL; }
  char *s = malloc(len + 1);
  if (!s) die("out of memory");
  memcpy(s, r->p, len);
  s[len] = 0;
  r->p += len; r->n -= len;
  return s;
}

void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }
