/* Shared declarations of the vmstack agent's files (agent.c, wire.c, exec.c, files.c). */
#ifndef VMSTACK_AGENT_H
#define VMSTACK_AGENT_H

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
  T_REFRESH = 0x0A,
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

/* wire.c: buffers, frames, payload reading */
void die(const char *what);
int64_t now_ms(void);
int find_virtio_port(const char *name, char *out, size_t outlen, int wait_ms, int poll_ms);
void put32(uint8_t *p, uint32_t v);
uint32_t get32(const uint8_t *p);
size_t put_str(uint8_t *p, const char *s);
void buf_append(struct buf *b, const void *data, size_t n);
size_t buf_pending(const struct buf *b);
void buf_free(struct buf *b);
void send_frame(int type, uint32_t id, const void *a, size_t alen, const void *b, size_t blen);
void send_u32(int type, uint32_t id, uint32_t v);
void send_error(uint32_t id, uint32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
struct rd { const uint8_t *p; size_t n; int bad; }; /* a payload being read; bad sticks */
uint32_t rd_u32(struct rd *r);
char *rd_str(struct rd *r);
void close_fd(int *fd);
void set_nonblock(int fd);

/* exec.c: commands */
struct cmd *find_cmd(uint32_t id);
void do_exec(uint32_t id, struct rd *r);
void do_stdin(uint32_t id, const uint8_t *p, size_t n);
void reap(void);
void drain_output(struct cmd *c, int *fd, int type);
void feed_stdin(struct cmd *c);
void cmd_finish(struct cmd *c, int held_open);
void cmd_grace_expired(struct cmd *c);
void kill_all(void);
void end_stdin_all(void);

/* files.c: file transfers */
struct xfer *find_xfer(uint32_t id);
void do_write_file(uint32_t id, struct rd *r);
void do_file_data(uint32_t id, const uint8_t *p, size_t n);
void do_file_end(uint32_t id);
void do_read_file(uint32_t id, struct rd *r);
void pump_reads(void);
void abort_transfers(void);

/* refresh.c: fresh randomness and clock after a snapshot restore (allowed: in a guest) */
void do_refresh(uint32_t id, struct rd *r, int allowed);

/* agent.c */
int id_in_use(uint32_t id);

extern struct buf outb;                 /* frames queued for the host */
extern struct cmd cmds[MAX_CMDS];
extern struct xfer xfers[MAX_XFERS];
extern uint8_t scratch[CHUNK];          /* one chunk of pipe or file data */

#endif
