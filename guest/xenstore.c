/*
 * vmstack-agent xenstore-relay: the guest end of the xenstore channel (docs/agent-protocol.md,
 * "The xenstore channel").
 *
 * vmstackd binds the virtio-serial port org.vmstack.xenstore to an unprivileged xenstored
 * connection of this domain. A port has one opener, so this relay owns it and multiplexes guest
 * clients onto that one connection: it listens on Xen's socket path (/var/run/xenstored/socket)
 * so `vmstack-agent xenstore ...` and unmodified xenstore-* tools (XENSTORED_PATH) work, and it
 * has requests of its own (xs-report.c: what the guest reports, control/shutdown).
 *
 * Multiplexing, with the wire protocol otherwise unchanged (xs_wire.h):
 * - req_id: every request gets a fresh upstream id; the reply is matched by it and handed back
 *   to its client with the client's own id. Upstream ids start at a random value, so a reply
 *   still in flight from before a guest reboot cannot match a new request.
 * - watch tokens: WATCH/UNWATCH tokens become "<client>:<token>" upstream (tokens must be unique
 *   per connection), and an event goes to the client the prefix names, with its own token.
 * - transactions: ids come from xenstored and are unique on the connection; the relay records who
 *   started each, ends a departed client's transactions (TRANSACTION_END "F") and removes its
 *   watches. RESET_WATCHES from a client resets that client only.
 *
 * The host can go away (vmstackd restarting, or resetting the channel after it met bytes it
 * could not parse): the port reports POLLHUP. Half-received replies are then discarded. When the
 * host is back, the relay starts a clean connection: RESET_WATCHES, every watch registered again
 * (which fires each watch once, as a new registration does), requests that were waiting sent
 * again, and requests of transactions begun before (which the new connection does not know)
 * answered EAGAIN, the error on which xenstore clients retry the whole transaction.
 *
 * A request unanswered for 10 s means the stream is out of step (check_stuck): the relay asks
 * for a reset in band, which xenstored and vmstackd turn into the port hanging up.
 *
 * Bounded: 32 clients, 128 requests in flight (clients are not read while that many wait), 256
 * watches; a client frame over 4096 bytes closes that client, as xenstored does.
 */
#include "agent.h"
#include "xenstore.h"
#include <sys/random.h>

#define MAX_CL 32
#define MAX_PEND 128
#define MAX_WATCH 256
#define MAX_TX 64

struct xcl { int fd; uint32_t cid; struct buf in, out; };
struct pend { uint32_t up, cid, orig, type, tx; int track; uint8_t *frame; size_t len; xs_cb cb; int64_t at; };
struct xwatch { uint32_t cid; char *path, *wtoken; }; /* wtoken: "<cid>:<token>" as sent upstream */
struct xtx { uint32_t cid, id; };

static struct xcl cl[MAX_CL];
static struct pend pend[MAX_PEND];
static int npend;
static struct xwatch watches[MAX_WATCH];
static int nwatch;
static struct xtx txs[MAX_TX];
static int ntx;
static uint32_t next_cid = 1, next_up;
static int up_fd = -1, up_device, up_ok, lsn_fd = -1, reset_asked;
static int stuck_ms = 10000;
static const char *up_path;
static struct buf upin, upout;
static int64_t up_retry_at;
int xs_power_allowed;

/* ---- frames ---- */

static void frame_to(struct buf *b, uint32_t type, uint32_t req, uint32_t tx, const void *a, size_t alen, const void *p2, size_t blen) {
  uint32_t h[4] = {type, req, tx, (uint32_t)(alen + blen)};
  buf_append(b, h, sizeof h);
  if (alen) buf_append(b, a, alen);
  if (blen) buf_append(b, p2, blen);
}

static struct xcl *client(uint32_t cid) {
  for (int i = 0; i < MAX_CL; i++) if (cl[i].fd >= 0 && cl[i].cid == cid) return &cl[i];
  return NULL;
}

static void reply_local(uint32_t cid, uint32_t req, uint32_t tx, uint32_t type, const char *payload, size_t len, xs_cb cb) {
  if (cid == 0) { if (cb) cb(type, payload, len); return; }
  struct xcl *c = client(cid);
  if (c) frame_to(&c->out, type, req, tx, payload, len, NULL, 0);
}

static int tx_live(uint32_t tx, uint32_t cid) {
  for (int i = 0; i < ntx; i++) if (txs[i].id == tx && txs[i].cid == cid) return 1;
  return 0;
}

static void tx_drop(uint32_t tx) {
  for (int i = 0; i < ntx; i++) if (txs[i].id == tx) { txs[i] = txs[--ntx]; return; }
}

/* Queue a request upstream under a fresh id. `track`: the reply updates the watch/transaction
 * tables (client and own requests); replays and clean-ups do not. */
static void submit(uint32_t cid, uint32_t orig, uint32_t type, uint32_t tx, const void *a, size_t alen, const void *b, size_t blen, int track, xs_cb cb) {
  if (tx != 0 && !tx_live(tx, cid)) { /* begun on a connection that is gone */
    reply_local(cid, orig, tx, XS_ERROR, "EAGAIN", 7, cb);
    return;
  }
  if (npend == MAX_PEND) { /* only the relay's own clean-ups can get here: clients wait for room */
    reply_local(cid, orig, tx, XS_ERROR, "EAGAIN", 7, cb);
    return;
  }
  do next_up++; while (next_up == 0);
  struct pend *p = &pend[npend++];
  struct buf f = {0};
  frame_to(&f, type, next_up, tx, a, alen, b, blen);
  *p = (struct pend){next_up, cid, orig, type, tx, track, f.p, f.len, cb, now_ms()};
  if (up_ok) buf_append(&upout, f.p, f.len);
}

/* A request whose reply nobody waits for (clean-ups, replays): a fresh id with no table entry,
 * so its reply is dropped like any unknown one. Only while the host is there. */
static void send_untracked(uint32_t type, uint32_t tx, const char *a, const char *b) {
  if (!up_ok) return;
  do next_up++; while (next_up == 0);
  size_t alen = a ? strlen(a) + 1 : 0, blen = b ? strlen(b) + 1 : 0;
  frame_to(&upout, type, next_up, tx, a, alen, b, blen);
}

void xs_call(uint32_t type, uint32_t tx, const void *a, size_t alen, const void *b, size_t blen, xs_cb cb) {
  submit(0, 0, type, tx, a, alen, b, blen, 1, cb);
}

void xs_internal_watch(const char *path, const char *token) {
  char t[300];
  snprintf(t, sizeof t, "0:%s", token);
  xs_call(XS_WATCH, 0, path, strlen(path) + 1, t, strlen(t) + 1, NULL);
}

/* "a\0b\0" into two strings; 0 if the payload is not exactly that. */
static int two_strings(const char *p, size_t n, const char **a, const char **b) {
  if (n < 2 || p[n - 1] != 0) return 0;
  size_t la = strnlen(p, n);
  if (la + 1 >= n) return 0;
  *a = p;
  *b = p + la + 1;
  return la + 1 + strlen(*b) + 1 == n;
}

static void watch_add(uint32_t cid, const char *path, const char *wtoken) {
  for (int i = 0; i < nwatch; i++) if (!strcmp(watches[i].path, path) && !strcmp(watches[i].wtoken, wtoken)) return;
  if (nwatch == MAX_WATCH) return; /* xenstored's own quota (128 per domain) refuses first */
  watches[nwatch++] = (struct xwatch){cid, strdup(path), strdup(wtoken)};
}

static void watch_del(int i) {
  free(watches[i].path);
  free(watches[i].wtoken);
  watches[i] = watches[--nwatch];
}

/* ---- a client's request ---- */

static void client_frame(struct xcl *c, uint32_t type, uint32_t req, uint32_t tx, const char *p, size_t n) {
  const char *path, *token;
  switch (type) {
  case XS_WATCH: case XS_UNWATCH: {
    if (!two_strings(p, n, &path, &token)) { frame_to(&c->out, XS_ERROR, req, tx, "EINVAL", 7, NULL, 0); return; }
    char wt[XS_PAYLOAD_MAX + 16];
    int wl = snprintf(wt, sizeof wt, "%u:%s", c->cid, token);
    submit(c->cid, req, type, tx, path, strlen(path) + 1, wt, (size_t)wl + 1, 1, NULL);
    return;
  }
  case XS_RESET_WATCHES: /* this client's watches and transactions only: the others keep theirs */
    for (int i = nwatch - 1; i >= 0; i--) {
      if (watches[i].cid != c->cid) continue;
      send_untracked(XS_UNWATCH, 0, watches[i].path, watches[i].wtoken);
      watch_del(i);
    }
    for (int i = ntx - 1; i >= 0; i--) if (txs[i].cid == c->cid) { send_untracked(XS_TRANSACTION_END, txs[i].id, "F", NULL); tx_drop(txs[i].id); }
    frame_to(&c->out, XS_RESET_WATCHES, req, tx, "OK", 3, NULL, 0);
    return;
  default:
    submit(c->cid, req, type, tx, p, n, NULL, 0, 1, NULL);
  }
}

static void client_close(struct xcl *c) {
  for (int i = nwatch - 1; i >= 0; i--) {
    if (watches[i].cid != c->cid) continue;
    send_untracked(XS_UNWATCH, 0, watches[i].path, watches[i].wtoken);
    watch_del(i);
  }
  for (int i = ntx - 1; i >= 0; i--) {
    if (txs[i].cid != c->cid) continue;
    uint32_t id = txs[i].id;
    send_untracked(XS_TRANSACTION_END, id, "F", NULL);
    tx_drop(id);
  }
  close_fd(&c->fd);
  buf_free(&c->in);
  buf_free(&c->out);
}

static void client_input(struct xcl *c) {
  while (npend < MAX_PEND && c->fd >= 0) {
    size_t n = buf_pending(&c->in);
    if (n < XS_HDR) return;
    uint32_t h[4];
    memcpy(h, c->in.p + c->in.off, sizeof h);
    if (h[3] > XS_PAYLOAD_MAX) { client_close(c); return; }
    if (n < XS_HDR + h[3]) return;
    const char *p = (const char *)c->in.p + c->in.off + XS_HDR;
    c->in.off += XS_HDR + h[3];
    client_frame(c, h[0], h[1], h[2], p, h[3]);
  }
}

/* ---- the host's replies and events ---- */

static void upstream_frame(uint32_t type, uint32_t req, uint32_t tx, const char *p, size_t n) {
  if (type == XS_WATCH_EVENT) {
    const char *path, *token;
    if (!two_strings(p, n, &path, &token)) return;
    char *colon = strchr(token, ':');
    if (!colon) return;
    uint32_t cid = (uint32_t)strtoul(token, NULL, 10);
    if (cid == 0) { xs_internal_event(path, colon + 1); return; }
    struct xcl *c = client(cid);
    if (c) frame_to(&c->out, XS_WATCH_EVENT, 0, 0, path, strlen(path) + 1, colon + 1, strlen(colon + 1) + 1);
    return;
  }
  int i = 0;
  while (i < npend && pend[i].up != req) i++;
  if (i == npend) return; /* a reply to a request from before a reset */
  struct pend e = pend[i];
  memmove(&pend[i], &pend[i + 1], (size_t)(npend - i - 1) * sizeof *pend);
  npend--;
  struct xcl *c = e.cid ? client(e.cid) : NULL;
  int ok = type != XS_ERROR, gone = e.cid != 0 && !c;
  if (e.track && ok) {
    const char *path, *token;
    const char *payload = (const char *)e.frame + XS_HDR;
    size_t plen = e.len - XS_HDR;
    if (e.type == XS_WATCH && two_strings(payload, plen, &path, &token)) {
      if (gone) send_untracked(XS_UNWATCH, 0, path, token);
      else watch_add(e.cid, path, token);
    } else if (e.type == XS_UNWATCH && two_strings(payload, plen, &path, &token)) {
      for (int w = 0; w < nwatch; w++) if (!strcmp(watches[w].path, path) && !strcmp(watches[w].wtoken, token)) { watch_del(w); break; }
    } else if (e.type == XS_TRANSACTION_START) {
      uint32_t id = (uint32_t)strtoul(p, NULL, 10);
      if (gone) send_untracked(XS_TRANSACTION_END, id, "F", NULL);
      else if (ntx < MAX_TX) txs[ntx++] = (struct xtx){e.cid, id};
    }
  }
  if (e.type == XS_TRANSACTION_END && e.tx) tx_drop(e.tx);
  free(e.frame);
  if (e.cid == 0) { if (e.cb) e.cb(type, p, n); }
  else if (c) frame_to(&c->out, type, e.orig, tx, p, n, NULL, 0);
}

static void upstream_input(void) {
  for (;;) {
    size_t n = buf_pending(&upin);
    if (n < XS_HDR) return;
    uint32_t h[4];
    memcpy(h, upin.p + upin.off, sizeof h);
    if (h[3] > XS_PAYLOAD_MAX) { /* not a frame boundary: drop what we have, resynchronise on the next reset */
      upin.off = upin.len = 0;
      return;
    }
    if (n < XS_HDR + h[3]) return;
    /* a NUL after the payload, so string payloads can be read in place */
    char p[XS_PAYLOAD_MAX + 1];
    memcpy(p, upin.p + upin.off + XS_HDR, h[3]);
    p[h[3]] = 0;
    upin.off += XS_HDR + h[3];
    upstream_frame(h[0], h[1], h[2], p, h[3]);
  }
}

/* ---- the host coming and going ---- */

static void host_lost(void) {
  up_ok = 0;
  upin.off = upin.len = 0;
  upout.off = upout.len = 0;
  if (!up_device) close_fd(&up_fd);
  up_retry_at = now_ms() + HOST_RETRY_MS;
}

static void host_found(void) {
  up_ok = 1;
  reset_asked = 0;
  upout.off = upout.len = 0;
  ntx = 0; /* the new connection knows none of them */
  /* A clean start: no watch of an earlier connection (or an earlier boot) may fire here. */
  send_untracked(XS_RESET_WATCHES, 0, NULL, NULL);
  for (int i = 0; i < nwatch; i++) send_untracked(XS_WATCH, 0, watches[i].path, watches[i].wtoken);
  /* Requests still waiting go again, in order; those of a transaction begun on the old
   * connection get EAGAIN (answered after the loop: a callback may queue new requests). */
  struct pend gone[MAX_PEND];
  int ngone = 0, keep = 0;
  for (int i = 0; i < npend; i++) {
    if (pend[i].tx != 0) { gone[ngone++] = pend[i]; continue; }
    buf_append(&upout, pend[i].frame, pend[i].len);
    pend[i].at = now_ms();
    pend[keep++] = pend[i];
  }
  npend = keep;
  for (int i = 0; i < ngone; i++) {
    free(gone[i].frame);
    reply_local(gone[i].cid, gone[i].orig, gone[i].tx, XS_ERROR, "EAGAIN", 7, gone[i].cb);
  }
  xs_report();
}

/*
 * A request unanswered for stuck_ms (10 s; xenstored answers in milliseconds) means the byte
 * stream is out of step: this guest rebooted in the middle of writing a frame, say, and
 * xenstored is still reading the rest of it. A guest cannot hang up its port, but it can ask
 * for a reset in band: 4 KiB + 32 bytes of 0xFF. Whatever payload xenstored is in the middle of
 * (4096 bytes at most), a header that follows is read inside the run, announces a frame over
 * 4096 bytes, and xenstored closes the connection; vmstackd then resets the channel (the port
 * hangs up, host_lost) and the requests go again on a clean connection.
 */
static void check_stuck(void) {
  if (!up_ok || reset_asked || npend == 0 || stuck_ms <= 0) return;
  int64_t oldest = pend[0].at;
  for (int i = 1; i < npend; i++) if (pend[i].at < oldest) oldest = pend[i].at;
  if (now_ms() - oldest < stuck_ms) return;
  reset_asked = 1;
  fprintf(stderr, "vmstack-agent: xenstore: no reply for %d ms; asking the host to reset the channel\n", stuck_ms);
  uint8_t ff[XS_PAYLOAD_MAX + 32];
  memset(ff, 0xff, sizeof ff);
  buf_append(&upout, ff, sizeof ff);
}

static void upstream_try(void) {
  if (up_device) { /* a port reports POLLHUP while no host is connected to it */
    struct pollfd p = {up_fd, POLLIN, 0};
    poll(&p, 1, 0);
    if (!(p.revents & POLLHUP)) host_found();
    else up_retry_at = now_ms() + HOST_RETRY_MS;
    return;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", up_path);
  up_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (up_fd >= 0 && connect(up_fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
    set_nonblock(up_fd);
    host_found();
    return;
  }
  close_fd(&up_fd);
  up_retry_at = now_ms() + HOST_RETRY_MS;
}

void xs_flush_upstream(int ms) {
  int64_t end = now_ms() + ms;
  while (buf_pending(&upout) && up_ok && now_ms() < end) {
    struct pollfd p = {up_fd, POLLOUT, 0};
    poll(&p, 1, 20);
    ssize_t n = write(up_fd, upout.p + upout.off, buf_pending(&upout));
    if (n > 0) upout.off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR) break;
  }
}

static void listen_on(const char *path) {
  char dir[sizeof ((struct sockaddr_un *)0)->sun_path];
  snprintf(dir, sizeof dir, "%s", path);
  for (char *s = dir + 1; (s = strchr(s, '/')); s++) { *s = 0; mkdir(dir, 0755); *s = '/'; }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) { errno = ENAMETOOLONG; die(path); }
  strcpy(sa.sun_path, path);
  lsn_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (lsn_fd < 0) die("socket");
  unlink(path);
  mode_t old = umask(077); /* the guest's xenstore rights are root's: 0600, like Xen's socket */
  if (bind(lsn_fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lsn_fd, 16) < 0) die(path);
  umask(old);
}

static void relay_usage(void) {
  fprintf(stderr, "usage: vmstack-agent xenstore-relay [--port NAME | --device PATH | --connect PATH] [--socket PATH]"
                  " [--wait-port MS] [--stuck-ms MS] [--power]\n");
  exit(2);
}

int xs_relay_main(int argc, char **argv) {
  const char *port = XS_PORT_NAME, *sock = getenv("XENSTORED_PATH");
  int wait_ms = 10000, quiet_missing = 0;
  if (!sock || !*sock) sock = XS_SOCKET;
  up_device = 1;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--power")) { xs_power_allowed = 1; continue; }
    if (!strcmp(a, "--quiet-missing")) { quiet_missing = 1; continue; }
    if (i + 1 >= argc) relay_usage();
    if (!strcmp(a, "--port")) port = argv[++i];
    else if (!strcmp(a, "--device")) { up_path = argv[++i]; port = NULL; }
    else if (!strcmp(a, "--connect")) { up_path = argv[++i]; port = NULL; up_device = 0; }
    else if (!strcmp(a, "--socket")) sock = argv[++i];
    else if (!strcmp(a, "--wait-port")) wait_ms = atoi(argv[++i]);
    else if (!strcmp(a, "--stuck-ms")) stuck_ms = atoi(argv[++i]);
    else relay_usage();
  }
  static char dev[300];
  if (port) {
    if (find_virtio_port(port, dev, sizeof dev, wait_ms, 50) < 0) {
      /* a VM without vmstackd (vmstack run) has no xenstore: not an error */
      if (!quiet_missing) fprintf(stderr, "vmstack-agent: no virtio-serial port %s: no xenstore in this guest\n", port);
      return quiet_missing ? 0 : 1;
    }
    up_path = dev;
  }
  signal(SIGPIPE, SIG_IGN);
  if (getrandom(&next_up, sizeof next_up, GRND_NONBLOCK) != (ssize_t)sizeof next_up) next_up = (uint32_t)now_ms() * 2654435761u;
  for (int i = 0; i < MAX_CL; i++) cl[i].fd = -1;
  if (up_device) {
    up_fd = open(up_path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (up_fd < 0) die(up_path);
  }
  listen_on(sock);
  fprintf(stderr, "vmstack-agent: xenstore relay on %s, socket %s\n", up_path, sock);
  xs_internal_watch("control/shutdown", "shutdown");
  static struct pollfd pfd[2 + MAX_CL];
  for (;;) {
    int64_t now = now_ms();
    if (!up_ok && now >= up_retry_at) upstream_try();
    xs_report_tick();
    check_stuck();
    int nf = 0;
    if (up_ok) pfd[nf++] = (struct pollfd){up_fd, POLLIN | (buf_pending(&upout) ? POLLOUT : 0), 0};
    pfd[nf++] = (struct pollfd){lsn_fd, POLLIN, 0};
    int first_cl = nf;
    for (int i = 0; i < MAX_CL; i++) {
      struct xcl *c = &cl[i];
      pfd[nf++] = (struct pollfd){c->fd, (npend < MAX_PEND ? POLLIN : 0) | (buf_pending(&c->out) ? POLLOUT : 0), 0};
    }
    int timeout = up_ok ? 2000 : (int)(up_retry_at > now ? up_retry_at - now : 0);
    if (poll(pfd, (nfds_t)nf, timeout) < 0 && errno != EINTR) die("poll");
    if (up_ok) {
      short ev = pfd[0].revents;
      if (ev & POLLOUT) {
        ssize_t n = write(up_fd, upout.p + upout.off, buf_pending(&upout));
        if (n > 0) upout.off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR) host_lost();
      }
      if (up_ok && (ev & (POLLIN | POLLHUP | POLLERR))) {
        uint8_t tmp[CHUNK];
        ssize_t n = read(up_fd, tmp, sizeof tmp);
        if (n > 0) { buf_append(&upin, tmp, (size_t)n); upstream_input(); }
        else if (n == 0 || (errno != EAGAIN && errno != EINTR)) host_lost();
      }
    }
    if (pfd[first_cl - 1].revents & POLLIN) {
      int fd = accept4(lsn_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
      int slot = 0;
      while (slot < MAX_CL && cl[slot].fd >= 0) slot++;
      if (fd >= 0 && slot == MAX_CL) close(fd); /* full: the client sees EOF at once */
      else if (fd >= 0) cl[slot] = (struct xcl){fd, next_cid++, {0}, {0}};
    }
    for (int i = 0; i < MAX_CL; i++) {
      struct xcl *c = &cl[i];
      short ev = pfd[first_cl + i].revents;
      if (c->fd < 0 || c->fd != pfd[first_cl + i].fd || !ev) continue;
      if (ev & (POLLIN | POLLHUP | POLLERR)) {
        uint8_t tmp[CHUNK];
        ssize_t n = read(c->fd, tmp, sizeof tmp);
        if (n > 0) { buf_append(&c->in, tmp, (size_t)n); client_input(c); }
        else if (n == 0 || (errno != EAGAIN && errno != EINTR)) { client_close(c); continue; }
      }
      if (c->fd >= 0 && buf_pending(&c->out)) {
        ssize_t n = write(c->fd, c->out.p + c->out.off, buf_pending(&c->out));
        if (n > 0) c->out.off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR) client_close(c);
      }
    }
    for (int i = 0; i < MAX_CL; i++) if (cl[i].fd >= 0) client_input(&cl[i]); /* room may have freed up */
    if (up_ok && buf_pending(&upout)) { /* write eagerly */
      ssize_t n = write(up_fd, upout.p + upout.off, buf_pending(&upout));
      if (n > 0) upout.off += (size_t)n;
    }
    for (int i = 0; i < MAX_CL; i++) { /* replies produced this turn */
      struct xcl *c = &cl[i];
      if (c->fd < 0 || !buf_pending(&c->out)) continue;
      ssize_t n = write(c->fd, c->out.p + c->out.off, buf_pending(&c->out));
      if (n > 0) c->out.off += (size_t)n;
    }
  }
}
