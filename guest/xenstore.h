/* The guest's xenstore pieces: the relay (xenstore.c), its guest reports (xs-report.c) and the
 * tools (xs-tool.c). Wire facts from Xen's xen/include/public/io/xs_wire.h. */
#ifndef VMSTACK_XENSTORE_H
#define VMSTACK_XENSTORE_H

#include <stddef.h>
#include <stdint.h>

#define XS_HDR 16                /* struct xsd_sockmsg: type, req_id, tx_id, len (native u32) */
#define XS_PAYLOAD_MAX 4096      /* XENSTORE_PAYLOAD_MAX */
#define XS_PORT_NAME "org.vmstack.xenstore"
#define XS_SOCKET "/var/run/xenstored/socket" /* Xen's socket path; XENSTORED_PATH overrides it */

enum {
  XS_CONTROL = 0, XS_DIRECTORY = 1, XS_READ = 2, XS_GET_PERMS = 3, XS_WATCH = 4, XS_UNWATCH = 5,
  XS_TRANSACTION_START = 6, XS_TRANSACTION_END = 7, XS_GET_DOMAIN_PATH = 10, XS_WRITE = 11,
  XS_MKDIR = 12, XS_RM = 13, XS_SET_PERMS = 14, XS_WATCH_EVENT = 15, XS_ERROR = 16,
  XS_RESET_WATCHES = 21,
};

/* A callback for the relay's own requests: the reply's type and payload (XS_ERROR: the name). */
typedef void (*xs_cb)(uint32_t type, const char *payload, size_t len);

/* xenstore.c */
int xs_relay_main(int argc, char **argv);
/* Send a request of the relay's own (cid 0); cb may be NULL. Payload parts are concatenated. */
void xs_call(uint32_t type, uint32_t tx, const void *a, size_t alen, const void *b, size_t blen, xs_cb cb);
/* Register a watch of the relay's own; its events go to xs_internal_event(). */
void xs_internal_watch(const char *path, const char *token);
void xs_flush_upstream(int ms);
extern int xs_power_allowed;

/* xs-report.c: what the guest tells the toolstack, and control/shutdown */
void xs_report(void);
void xs_report_tick(void);
void xs_internal_event(const char *path, const char *token);

/* xs-tool.c */
int xs_tool_main(const char *verb, int argc, char **argv);
const char *xs_error_text(const char *name);

#endif
