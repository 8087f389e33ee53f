/* vmstack agent: commands (EXEC, STDIN, SIGNAL's target, exit reporting). docs/agent-protocol.md. */
#include "agent.h"

struct cmd cmds[MAX_CMDS];

struct cmd *find_cmd(uint32_t id) {
  for (int i = 0; i < MAX_CMDS; i++)
    if (cmds[i].used && !cmds[i].detached && cmds[i].id == id) return &cmds[i];
  return NULL;
}

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
void cmd_finish(struct cmd *c, int held_open) {
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
void cmd_grace_expired(struct cmd *c) {
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

void do_exec(uint32_t id, struct rd *r) {
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

void reap(void) {
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

void drain_output(struct cmd *c, int *fd, int type) {
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

void feed_stdin(struct cmd *c) {
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

void do_stdin(uint32_t id, const uint8_t *p, size_t n) {
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

void kill_all(void) {
  for (int i = 0; i < MAX_CMDS; i++)
    if (cmds[i].used && cmds[i].pid > 0) kill(-cmds[i].pid, SIGKILL);
}

/* The host went away: every command's stdin ends once what was received is written. */
void end_stdin_all(void) {
  for (int i = 0; i < MAX_CMDS; i++) {
    struct cmd *c = &cmds[i];
    if (!c->used || c->in_fd < 0) continue;
    c->in_eof = 1;
    if (buf_pending(&c->in) == 0) close_fd(&c->in_fd);
  }
}
