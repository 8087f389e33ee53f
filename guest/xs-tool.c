/*
 * The guest's xenstore tools: `vmstack-agent xenstore VERB ARGS` or, through a link, the
 * multi-call names xenstore-read, xenstore-write, xenstore-ls, xenstore-list, xenstore-rm,
 * xenstore-exists, xenstore-mkdir and xenstore-watch (the names of Xen's tools). They talk to the
 * relay's socket (XENSTORED_PATH, default /var/run/xenstored/socket) with the plain wire
 * protocol, one request at a time. Relative paths are the domain's (/local/domain/<domid>/...),
 * resolved by xenstored. Errors print `xenstore VERB: PATH: Permission denied (EACCES)` and exit
 * 1; usage errors exit 2.
 */
#include "agent.h"
#include "xenstore.h"

static int fd = -1;
static uint32_t next_req = 1;
static const char *verb_name;
static int timeout_ms = 30000;

struct reply { uint32_t type; size_t len; char p[XS_PAYLOAD_MAX + 1]; };

static const struct { const char *name; int code; } errs[] = {
  {"EINVAL", EINVAL}, {"EACCES", EACCES}, {"EEXIST", EEXIST}, {"EISDIR", EISDIR}, {"ENOENT", ENOENT},
  {"ENOMEM", ENOMEM}, {"ENOSPC", ENOSPC}, {"EIO", EIO}, {"ENOTEMPTY", ENOTEMPTY}, {"ENOSYS", ENOSYS},
  {"EROFS", EROFS}, {"EBUSY", EBUSY}, {"EAGAIN", EAGAIN}, {"EISCONN", EISCONN}, {"E2BIG", E2BIG},
  {"EPERM", EPERM},
};

const char *xs_error_text(const char *name) {
  for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) if (!strcmp(errs[i].name, name)) return strerror(errs[i].code);
  return "error";
}

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "xenstore %s: %s: %s\n", verb_name, what, detail);
  exit(1);
}

static void read_full(void *p, size_t n) {
  uint8_t *b = p;
  int64_t end = now_ms() + timeout_ms;
  while (n) {
    struct pollfd pf = {fd, POLLIN, 0};
    int64_t left = end - now_ms();
    if (timeout_ms > 0 && (left <= 0 || poll(&pf, 1, (int)left) == 0))
      fail("xenstored", "no answer (is the guest's xenstore channel connected?)");
    ssize_t r = read(fd, b, n);
    if (r == 0) fail("xenstored", "connection closed");
    if (r < 0) { if (errno == EINTR || errno == EAGAIN) continue; fail("read", strerror(errno)); }
    b += r;
    n -= (size_t)r;
  }
}

/* The next frame from xenstored (a reply or a watch event). */
static void next_frame(struct reply *r, uint32_t *req) {
  uint32_t h[4];
  read_full(h, sizeof h);
  if (h[3] > XS_PAYLOAD_MAX) fail("xenstored", "oversized frame");
  read_full(r->p, h[3]);
  r->p[h[3]] = 0;
  r->type = h[0];
  r->len = h[3];
  *req = h[1];
}

static void send_req(uint32_t type, uint32_t req, const char *a, size_t alen, const char *b, size_t blen) {
  uint8_t f[XS_HDR + 2 * XS_PAYLOAD_MAX];
  if (alen + blen > XS_PAYLOAD_MAX) fail(a, "request too large (4096 bytes at most)");
  uint32_t h[4] = {type, req, 0, (uint32_t)(alen + blen)};
  memcpy(f, h, sizeof h);
  memcpy(f + XS_HDR, a, alen);
  if (blen) memcpy(f + XS_HDR + alen, b, blen);
  size_t n = XS_HDR + alen + blen, off = 0;
  while (off < n) {
    ssize_t w = write(fd, f + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail("write", strerror(errno));
    off += (size_t)w;
  }
}

/* One request; returns 0 with the reply, or -1 with the error name in r->p. */
static int call(uint32_t type, const char *a, size_t alen, const char *b, size_t blen, struct reply *r) {
  uint32_t req = next_req++, got;
  send_req(type, req, a, alen, b, blen);
  do next_frame(r, &got);
  while (r->type == XS_WATCH_EVENT || got != req);
  return r->type == XS_ERROR ? -1 : 0;
}

static void must(int rc, const char *path, struct reply *r) {
  if (rc == 0) return;
  char detail[200];
  snprintf(detail, sizeof detail, "%s (%.40s)", xs_error_text(r->p), r->p);
  fail(path, detail);
}

static int path_call(uint32_t type, const char *path, struct reply *r) { return call(type, path, strlen(path) + 1, NULL, 0, r); }

static void print_value(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c < 32 || c == 127) printf("\\x%02x", c);
    else putchar(c);
  }
}

/* xenstore-ls: `name = "value"`, children indented one space per level. */
static void ls(const char *path, int depth) {
  struct reply *d = malloc(sizeof *d);
  if (!d) die("malloc");
  if (path_call(XS_DIRECTORY, path, d) < 0) {
    if (depth == 0) must(-1, path, d);
    free(d);
    return;
  }
  for (size_t off = 0; off < d->len;) {
    const char *name = d->p + off;
    off += strlen(name) + 1;
    if (!*name) continue;
    char child[XS_PAYLOAD_MAX];
    snprintf(child, sizeof child, "%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/", name);
    struct reply v;
    printf("%*s%s = \"", depth, "", name);
    if (path_call(XS_READ, child, &v) == 0) print_value(v.p, v.len);
    printf("\"\n");
    ls(child, depth + 1);
  }
  free(d);
}

static void usage_to(FILE *to, int code) {
  fprintf(to,
          "usage: vmstack-agent xenstore VERB ARGS   (or xenstore-VERB ARGS)\n"
          "  read PATH...             print each value on its own line\n"
          "  write PATH VALUE...      write pairs\n"
          "  ls [PATH]                the tree under PATH (default: the domain's home) with values\n"
          "  list PATH                the children of PATH, one per line\n"
          "  rm PATH...               remove (with children)\n"
          "  mkdir PATH...            create empty nodes\n"
          "  exists PATH              exit 0 if PATH exists, 1 if not\n"
          "  watch [-n N] PATH        print the path of every change under PATH (stop after N)\n"
          "Relative paths are under /local/domain/<domid>. Socket: $XENSTORED_PATH or " XS_SOCKET ".\n");
  exit(code);
}

static void usage(void) { usage_to(stderr, 2); }

int xs_tool_main(const char *verb, int argc, char **argv) {
  verb_name = verb;
  if (!strcmp(verb, "--help") || !strcmp(verb, "help") || !strcmp(verb, "-h")) usage_to(stdout, 0);
  if (argc > 0 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) usage_to(stdout, 0);
  static const char *const verbs[] = {"read", "write", "rm", "mkdir", "exists", "list", "ls", "watch"};
  size_t known = 0;
  while (known < sizeof verbs / sizeof *verbs && strcmp(verbs[known], verb)) known++;
  if (known == sizeof verbs / sizeof *verbs) usage();
  const char *sock = getenv("XENSTORED_PATH");
  if (!sock || !*sock) sock = XS_SOCKET;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof sa.sun_path) fail(sock, "socket path too long");
  strcpy(sa.sun_path, sock);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) fail(sock, strerror(errno));
  struct reply r;
  if (!strcmp(verb, "read")) {
    if (argc < 1) usage();
    for (int i = 0; i < argc; i++) {
      must(path_call(XS_READ, argv[i], &r), argv[i], &r);
      fwrite(r.p, 1, r.len, stdout);
      putchar('\n');
    }
  } else if (!strcmp(verb, "write")) {
    if (argc < 2 || argc % 2) usage();
    for (int i = 0; i < argc; i += 2) must(call(XS_WRITE, argv[i], strlen(argv[i]) + 1, argv[i + 1], strlen(argv[i + 1]), &r), argv[i], &r);
  } else if (!strcmp(verb, "rm") || !strcmp(verb, "mkdir")) {
    if (argc < 1) usage();
    for (int i = 0; i < argc; i++) must(path_call(verb[0] == 'r' ? XS_RM : XS_MKDIR, argv[i], &r), argv[i], &r);
  } else if (!strcmp(verb, "exists")) {
    if (argc != 1) usage();
    return path_call(XS_READ, argv[0], &r) == 0 ? 0 : 1;
  } else if (!strcmp(verb, "list")) {
    if (argc != 1) usage();
    must(path_call(XS_DIRECTORY, argv[0], &r), argv[0], &r);
    for (size_t off = 0; off < r.len; off += strlen(r.p + off) + 1) if (r.p[off]) printf("%s\n", r.p + off);
  } else if (!strcmp(verb, "ls")) {
    if (argc > 1) usage();
    char home[64];
    const char *path = argc ? argv[0] : NULL;
    if (!path) { /* the home: relative "domid" names our domid */
      must(path_call(XS_READ, "domid", &r), "domid", &r);
      snprintf(home, sizeof home, "/local/domain/%.40s", r.p);
      path = home;
    }
    ls(path, 0);
  } else if (!strcmp(verb, "watch")) {
    long count = -1;
    if (argc >= 2 && !strcmp(argv[0], "-n")) { count = strtol(argv[1], NULL, 10); argc -= 2; argv += 2; }
    if (argc != 1 || count == 0) usage();
    must(call(XS_WATCH, argv[0], strlen(argv[0]) + 1, "vmstack", 8, &r), argv[0], &r);
    setvbuf(stdout, NULL, _IOLBF, 0);
    timeout_ms = 0; /* events come when they come */
    uint32_t req;
    while (count < 0 || count-- > 0) {
      do next_frame(&r, &req);
      while (r.type != XS_WATCH_EVENT);
      printf("%s\n", r.p);
    }
  } else {
    usage();
  }
  return fflush(stdout) == 0 ? 0 : 1;
}
