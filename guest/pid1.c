/*
 * vmstack-agent --init: the agent as PID 1. Does what guest/init does in sh, with system calls
 * instead of one busybox fork+exec per step (each costs milliseconds under TCG), then forks: the
 * child serves the protocol, PID 1 reaps orphans and powers off when the child ends.
 */
#define _GNU_SOURCE
#include "pid1.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int debug;

static void power_off_now(void) {
  sync();
  reboot(RB_POWER_OFF);
  /* Only reached if reboot(2) failed; exiting PID 1 panics, and panic=-1 with QEMU's
   * -no-reboot ends the VM, so the machine never hangs. */
  fprintf(stderr, "vmstack-init: reboot(RB_POWER_OFF): %s\n", strerror(errno));
  exit(1);
}

static void fail(const char *what, int err) {
  fprintf(stderr, "vmstack-init: FAILED: %s: %s\n", what, strerror(err));
  power_off_now();
}

/* With vmstack.debug=1 on the kernel command line: each step on the console, with the uptime. */
static void step(const char *what) {
  if (!debug) return;
  char up[64] = "?";
  FILE *f = fopen("/proc/uptime", "re");
  if (f) {
    if (fscanf(f, "%63s", up) != 1) strcpy(up, "?");
    fclose(f);
  }
  fprintf(stderr, "vmstack-init: [%s] %s\n", up, what);
}

/* nosuid everywhere; nodev everywhere but devpts, whose whole point is device nodes. */
static void mnt(const char *src, const char *dir, const char *type, const char *opts, int required) {
  mkdir(dir, 0755);
  unsigned long flags = MS_NOSUID | (strcmp(type, "devpts") ? MS_NODEV : 0);
  if (mount(src, dir, type, flags, opts) < 0 && required) {
    char what[128];
    snprintf(what, sizeof what, "mount %s on %s", type, dir);
    fail(what, errno);
  }
}

/* /lib/modules/load-order: one .ko path per line (absolute or relative to /lib/modules), in
 * dependency order, as the initrd builder resolved it from modules.dep. */
static void load_modules(void) {
  FILE *f = fopen("/lib/modules/load-order", "re");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    if (!line[0] || line[0] == '#') continue;
    char path[600];
    snprintf(path, sizeof path, "%s%s", line[0] == '/' ? "" : "/lib/modules/", line);
    step(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, errno);
    /* finit_module(2): the kernel reads the file itself; EEXIST = built in or already loaded. */
    if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST) fail(path, errno);
    close(fd);
  }
  fclose(f);
}

static void loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  /* Bringing lo up is enough: the kernel assigns 127.0.0.1/8 to the loopback device itself. */
  if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0) fail("lo", errno);
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) fail("lo up", errno);
  close(s);
}

void pid1_setup(void) {
  if (getpid() != 1) {
    fprintf(stderr, "vmstack-agent: --init only runs as PID 1\n");
    exit(2);
  }
  mnt("proc", "/proc", "proc", NULL, 1);
  char cmdline[4096] = "";
  FILE *f = fopen("/proc/cmdline", "re");
  if (f) {
    if (!fgets(cmdline, sizeof cmdline, f)) cmdline[0] = 0;
    fclose(f);
  }
  debug = strstr(cmdline, "vmstack.debug=1") != NULL;
  step("start");
  mnt("sys", "/sys", "sysfs", NULL, 1);
  /* EBUSY: a devtmpfs is already there (a kernel with DEVTMPFS_MOUNT, or a test namespace). */
  mkdir("/dev", 0755);
  if (mount("dev", "/dev", "devtmpfs", MS_NOSUID, NULL) < 0 && errno != EBUSY) fail("mount devtmpfs on /dev", errno);
  /* The kernel gives init /dev/console as stdio when the initramfs has that node; otherwise
   * open it now that devtmpfs provides it, so failures reach the console. */
  int con = fcntl(2, F_GETFD) < 0 ? open("/dev/console", O_RDWR | O_NOCTTY) : -1;
  if (con >= 0) {
    dup2(con, 0);
    dup2(con, 1);
    dup2(con, 2);
    if (con > 2) close(con);
  }
  mnt("tmp", "/tmp", "tmpfs", "mode=1777", 1);
  mnt("devpts", "/dev/pts", "devpts", NULL, 0);
  mnt("shm", "/dev/shm", "tmpfs", "mode=1777", 0);
  load_modules();
  step("hostname, lo");
  if (sethostname("vmstack", 7) < 0) fail("sethostname", errno);
  loopback_up();
  setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
  setenv("HOME", "/root", 1);
  if (chdir("/") < 0) fail("chdir /", errno);

  step("starting the agent");
  pid_t agent = fork();
  if (agent < 0) fail("fork", errno);
  if (agent == 0) return; /* the child goes on to serve the protocol */
  for (;;) {
    int st;
    pid_t pid = wait(&st);
    if (pid < 0 && errno == EINTR) continue;
    if (pid < 0) fail("wait", errno);
    if (pid != agent) continue; /* an orphan re-parented to PID 1: reaped, nothing else */
    if (WIFSIGNALED(st))
      fprintf(stderr, "vmstack-init: FAILED: agent killed by signal %d (%s); powering off\n", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
      fprintf(stderr, "vmstack-init: FAILED: agent exited with status %d; powering off\n", WEXITSTATUS(st));
    power_off_now();
  }
}
