/*
 * vmstack-agent: the guest side of the vmstack agent protocol (docs/agent-protocol.md).
 *
 * One single-threaded poll() loop serves one host connection: several commands in flight at once
 * (each in its own process group), file transfers, ping, hello and power requests. The guest has
 * only busybox and this binary, so it is plain C, built `gcc -static -Os`. Files: agent.c (this:
 * options, the channel, dispatch, the loop), wire.c (buffers, frames, payload reader), exec.c
 * (commands), files.c (file transfers), pid1.c (--init), agent.h (what they share).
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
 *
 * In a guest (--port with --power) the agent also starts the xenstore relay (xenstore.c) as a
 * child process if the port org.vmstack.xenstore exists; --no-xenstore skips it. Subcommands:
 *   vmstack-agent xenstore VERB ARGS   the guest's xenstore tools (xs-tool.c); also run as
 *                                      xenstore-read, xenstore-write, ... through links
 *   vmstack-agent xenstore-relay ...   the relay alone (xenstore.c)
 */
#include "agent.h"
#include "pid1.h"
#include "xenstore.h"

static enum mode mode = M_PORT;
static const char *chan_arg = "org.vmstack.agent";
static int power_allowed;
static int conn_fd = -1, listen_fd = -1, sig_fd = -1, host_up;
static struct buf inb;

int id_in_use(uint32_t id) { return find_cmd(id) || find_xfer(id); }

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
  case T_REFRESH: do_refresh(id, &r, power_allowed); break;
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
  /* Commands run on: their results are queued for whoever connects next. But no one will send
   * them more stdin or finish a file transfer: a new host starts with fresh ids. */
  end_stdin_all();
  abort_transfers();
}

static void host_found(void) {
  host_up = 1;
  send_u32(T_READY, 0, PROTO_VERSION); /* may be lost; the host also sends HELLO until answered */
}

static char *find_port(const char *name) {
  static char path[300];
  /* Ports appear asynchronously after insmod: up to ~10 s. */
  return find_virtio_port(name, path, sizeof path, 10000, 10) == 0 ? path : NULL;
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
                  " | --fd N] [--power] [--init] [--no-xenstore]\n"
                  "       vmstack-agent xenstore VERB ARGS | xenstore-relay ...\n");
  exit(2);
}

/* The xenstore relay as a child of the agent: its own loop, so neither protocol stalls the other.
 * The port appears together with the agent's (one virtio-serial device), so 1 s is plenty; a VM
 * without it (vmstack run) just has no xenstore. */
static void start_xenstore_relay(void) {
  pid_t pid = fork();
  if (pid != 0) return; /* the agent reaps it like any child (reap() ignores unknown pids) */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  close_fd(&conn_fd);
  close_fd(&sig_fd);
  char *args[] = {"--port", XS_PORT_NAME, "--wait-port", "1000", "--quiet-missing", "--power", NULL};
  exit(xs_relay_main(6, args));
}

/* poll() slots: what each pollfd stands for */
enum { P_CONN, P_LISTEN, P_SIG, P_OUT, P_ERR, P_IN };

int main(int argc, char **argv) {
  int as_init = 0, xenstore = 1;
  const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
  if (strncmp(base, "xenstore-", 9) == 0) return xs_tool_main(base + 9, argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "xenstore") == 0) return argc > 2 ? xs_tool_main(argv[2], argc - 3, argv + 3) : xs_tool_main("", 0, NULL);
  if (argc > 1 && strcmp(argv[1], "xenstore-relay") == 0) return xs_relay_main(argc - 2, argv + 2);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--no-xenstore") == 0) { xenstore = 0; continue; }
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
  if (xenstore && mode == M_PORT && power_allowed) start_xenstore_relay();

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
