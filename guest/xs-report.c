/*
 * What the guest tells its toolstack through xenstore, and the PV shutdown protocol, as the
 * relay's own requests (xenstore.c). Paths are relative: xenstored resolves them against the
 * domain's home /local/domain/<domid>. Conventions (Xen docs/misc/xenstore-paths.pandoc, [w]
 * paths a guest may write):
 *   drivers/0                   "vmstack-agent VERSION (Linux RELEASE)"
 *   data/os_uname               the kernel release (as XenServer's guest utilities write it)
 *   attr/vif/N/name, mac/0, ipv4/I, ipv6/I   each non-loopback interface, N in ifindex order
 *   control/feature-poweroff, control/feature-reboot   "1": control/shutdown is honoured
 *   data/booted                 "1", written last, so a toolstack waiting for it sees the rest
 * Addresses are looked at again every 5 s and rewritten when they changed (a DHCP lease, a
 * command that configured an interface).
 *
 * control/shutdown (Linux drivers/xen/manage.c, shutdown_handler): on its watch event read it in
 * a transaction; for "poweroff", "halt" or "reboot" write "" in the same transaction (the
 * acknowledgement) and commit, retrying the whole transaction on EAGAIN; once committed, sync
 * and power off or reboot. Other values (suspend, sysrq) are not acknowledged, so the toolstack
 * knows they were not understood.
 */
#include "agent.h"
#include "xenstore.h"
#include <ifaddrs.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <netpacket/packet.h>

static char addr_sig[2048];
static int64_t next_check;

static void wr(const char *path, const char *value) {
  xs_call(XS_WRITE, 0, path, strlen(path) + 1, value, strlen(value), NULL);
}

/* The interfaces' names, MACs and addresses as "name mac ipv4... | ipv6..." lines, sorted by
 * interface index so the vif numbers are stable. */
static void collect(char *out, size_t outlen) {
  struct ifaddrs *ifs;
  out[0] = 0;
  if (getifaddrs(&ifs) < 0) return;
  size_t used = 0;
  for (unsigned idx = 1; idx < 64; idx++) {
    char name[IF_NAMESIZE];
    if (!if_indextoname(idx, name)) continue;
    char line[640] = "", mac[32] = "", v4[256] = "", v6[256] = "";
    int loop = 0;
    for (struct ifaddrs *a = ifs; a; a = a->ifa_next) {
      if (!a->ifa_addr || strcmp(a->ifa_name, name)) continue;
      if (a->ifa_flags & IFF_LOOPBACK) loop = 1;
      char ip[INET6_ADDRSTRLEN];
      if (a->ifa_addr->sa_family == AF_INET && inet_ntop(AF_INET, &((struct sockaddr_in *)a->ifa_addr)->sin_addr, ip, sizeof ip))
        snprintf(v4 + strlen(v4), sizeof v4 - strlen(v4), " %s", ip);
      else if (a->ifa_addr->sa_family == AF_INET6 && inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ifa_addr)->sin6_addr, ip, sizeof ip))
        snprintf(v6 + strlen(v6), sizeof v6 - strlen(v6), " %s", ip);
      else if (a->ifa_addr->sa_family == AF_PACKET) {
        struct sockaddr_ll *ll = (struct sockaddr_ll *)a->ifa_addr;
        if (ll->sll_halen == 6)
          snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", ll->sll_addr[0], ll->sll_addr[1], ll->sll_addr[2], ll->sll_addr[3], ll->sll_addr[4], ll->sll_addr[5]);
      }
    }
    if (loop) continue;
    snprintf(line, sizeof line, "%s %s%s |%s\n", name, mac[0] ? mac : "-", v4, v6);
    if (used + strlen(line) < outlen) { strcpy(out + used, line); used += strlen(line); }
  }
  freeifaddrs(ifs);
}

static void write_vifs(const char *sig) {
  static const char attr[] = "attr/vif";
  xs_call(XS_RM, 0, attr, sizeof attr, NULL, 0, NULL); /* ENOENT the first time: fine */
  char copy[2048];
  snprintf(copy, sizeof copy, "%s", sig);
  int n = 0;
  for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n"), n++) {
    char path[128], *save, *name = strtok_r(line, " ", &save), *mac = strtok_r(NULL, " ", &save);
    if (!name || !mac) continue;
    snprintf(path, sizeof path, "attr/vif/%d/name", n);
    wr(path, name);
    if (strcmp(mac, "-")) { snprintf(path, sizeof path, "attr/vif/%d/mac/0", n); wr(path, mac); }
    int v6 = 0, i4 = 0, i6 = 0;
    for (char *w; (w = strtok_r(NULL, " ", &save));) {
      if (!strcmp(w, "|")) { v6 = 1; continue; }
      if (*w == '|') { v6 = 1; w++; if (!*w) continue; }
      snprintf(path, sizeof path, "attr/vif/%d/%s/%d", n, v6 ? "ipv6" : "ipv4", v6 ? i6++ : i4++);
      wr(path, w);
    }
  }
}

void xs_report(void) {
  struct utsname u;
  char drv[300];
  if (uname(&u) < 0) memset(&u, 0, sizeof u);
  snprintf(drv, sizeof drv, "vmstack-agent %s (%s %s)", AGENT_VERSION, u.sysname, u.release);
  wr("drivers/0", drv);
  wr("data/os_uname", u.release);
  collect(addr_sig, sizeof addr_sig);
  write_vifs(addr_sig);
  next_check = now_ms() + 5000;
  wr("control/feature-poweroff", "1");
  wr("control/feature-reboot", "1");
  wr("data/booted", "1");
}

void xs_report_tick(void) {
  if (now_ms() < next_check || next_check == 0) return;
  next_check = now_ms() + 5000;
  char sig[sizeof addr_sig];
  collect(sig, sizeof sig);
  if (strcmp(sig, addr_sig) == 0) return;
  strcpy(addr_sig, sig);
  write_vifs(addr_sig);
}

/* ---- control/shutdown ---- */

static uint32_t sd_tx;
static char sd_cmd[16];
static int sd_busy, sd_again; /* sd_again: an event came while a round was under way */

static void sd_start(void);

static int is_error(uint32_t type, const char *p, const char *name) { return type == XS_ERROR && (!name || !strcmp(p, name)); }

static void sd_idle(void) {
  sd_busy = 0;
  if (sd_again) { sd_again = 0; sd_start(); }
}

static void sd_ended(uint32_t type, const char *p, size_t n) {
  (void)n;
  sd_busy = 0;
  if (is_error(type, p, "EAGAIN")) { sd_start(); return; } /* someone wrote meanwhile: read again */
  if (type == XS_ERROR || !sd_cmd[0]) { sd_idle(); return; }
  int reboot_it = !strcmp(sd_cmd, "reboot");
  fprintf(stderr, "vmstack-agent: control/shutdown = %s: acknowledged; %s\n", sd_cmd, reboot_it ? "rebooting" : "powering off");
  xs_flush_upstream(1000); /* the acknowledgement must leave before the machine stops */
  if (!xs_power_allowed) exit(0);
  sync();
  reboot(reboot_it ? RB_AUTOBOOT : RB_POWER_OFF);
  die("reboot");
}

static void sd_end(int commit) {
  char tx[16];
  snprintf(tx, sizeof tx, "%s", commit ? "T" : "F");
  xs_call(XS_TRANSACTION_END, sd_tx, tx, 2, NULL, 0, commit ? sd_ended : NULL);
  if (!commit) sd_idle();
}

static void sd_written(uint32_t type, const char *p, size_t n) {
  (void)p; (void)n;
  sd_end(type != XS_ERROR);
}

static void sd_read(uint32_t type, const char *p, size_t n) {
  sd_cmd[0] = 0;
  if (type != XS_ERROR && n < sizeof sd_cmd) {
    memcpy(sd_cmd, p, n);
    sd_cmd[n] = 0;
  }
  if (strcmp(sd_cmd, "poweroff") && strcmp(sd_cmd, "halt") && strcmp(sd_cmd, "reboot")) {
    if (sd_cmd[0]) fprintf(stderr, "vmstack-agent: control/shutdown = %s: not supported; not acknowledged\n", sd_cmd);
    sd_cmd[0] = 0;
    sd_end(0);
    return;
  }
  static const char path[] = "control/shutdown";
  xs_call(XS_WRITE, sd_tx, path, sizeof path, NULL, 0, sd_written);
}

static void sd_started(uint32_t type, const char *p, size_t n) {
  (void)n;
  if (type == XS_ERROR) { sd_idle(); return; }
  sd_tx = (uint32_t)strtoul(p, NULL, 10);
  static const char path[] = "control/shutdown";
  xs_call(XS_READ, sd_tx, path, sizeof path, NULL, 0, sd_read);
}

static void sd_start(void) {
  sd_busy = 1;
  xs_call(XS_TRANSACTION_START, 0, "", 1, NULL, 0, sd_started);
}

void xs_internal_event(const char *path, const char *token) {
  (void)path;
  if (strcmp(token, "shutdown")) return;
  if (sd_busy) sd_again = 1;
  else sd_start();
}
