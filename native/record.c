/*
 * The journal's common record, encoded in C (src/xenstore/persist-records.ts has the format): a put
 * or del whose path, permissions and value are each at most SHORT_FIELD latin1 chars and hold no
 * magic. In JavaScript its CRC-32 and the stores into the mapping took some 40 instructions per
 * byte, about a tenth of a one-in-flight write; here about five, plus the call.
 */
#include "xsio.h"
#include <pthread.h>
#include <string.h>

#define SHORT_FIELD 128
#define HEADER 12
#define MAGIC 0x31525358u /* "XSR1" little-endian */

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    crc_table[n] = c;
  }
}

static void put_u16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v) {
  put_u16(p, v & 0xffff);
  put_u16(p + 2, v >> 16);
}

/* A string argument of at most SHORT_FIELD latin1 chars into `out` (SHORT_FIELD + 2 bytes): its length, or -1. */
static int short_string(napi_env env, napi_value v, char *out) {
  size_t n;
  if (napi_get_value_string_latin1(env, v, out, SHORT_FIELD + 2, &n) != napi_ok || n > SHORT_FIELD) return -1;
  return (int)n;
}

/* Whether s[0..n) holds the magic's text (a loop: glibc's memmem costs more on a few dozen bytes). */
static int holds_magic(const char *s, int n) {
  for (int i = 0; i + 4 <= n; i++)
    if (s[i] == 'X' && s[i + 1] == 'S' && s[i + 2] == 'R' && s[i + 3] == '1') return 1;
  return 0;
}

/* Fills the CRC table before any encodeShort: the addon's init calls it (once per environment, a worker's too; the table is filled once). */
void xsio_record_init(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, crc_init);
}

/* A whole number in [0, max] from `v`: 1, or 0 if it is not one. */
static int arg_whole(napi_env env, napi_value v, double max, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0 && d <= max) || d != (double)(uint32_t)d) return 0;
  *out = (uint32_t)d;
  return 1;
}

/*
 * encodeShort(buf: Buffer, at: number, kind: number, path: string, perms?: string, value?: string):
 * number — a put (kind 1, perms and value given) or del (kind 2, neither) record at buf[at..],
 * either kind with or without the 0x80 flag: where it ends, or -1 if a field is longer than
 * SHORT_FIELD or holds the magic (the caller's own encoder takes it then, and nothing is stored).
 * Its length is stored first and its magic last, as the format requires. Bad arguments are a
 * TypeError; a record that does not fit in buf from `at` a RangeError.
 */
napi_value xsio_encode_short(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  const char *usage = "encodeShort(buf, at, kind, path[, perms, value]): a put (kind 1) takes perms and value, a del (kind 2) neither";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || (argc != 4 && argc != 6)) return xsio_fail(env, usage);
  uint8_t *buf;
  size_t len;
  uint32_t at, kind;
  if (napi_get_buffer_info(env, argv[0], (void **)&buf, &len) != napi_ok) return xsio_fail(env, "buf must be a Buffer");
  if (!arg_whole(env, argv[1], 0x7fffffff, &at)) return xsio_fail(env, "at must be an offset");
  if (!arg_whole(env, argv[2], 255, &kind)) return xsio_fail(env, "kind must be a byte");
  int put = argc == 6;
  if ((kind & 0x7f) != (put ? 1u : 2u)) return xsio_fail(env, usage);
  char path[SHORT_FIELD + 2], perms[SHORT_FIELD + 2], value[SHORT_FIELD + 2];
  int pl = short_string(env, argv[3], path), ml = 0, vl = 0;
  if (put) {
    ml = short_string(env, argv[4], perms);
    vl = short_string(env, argv[5], value);
  }
  if (pl < 0 || ml < 0 || vl < 0 || holds_magic(path, pl) || holds_magic(value, vl)) return xsio_number(env, -1);
  size_t size = HEADER + 3 + (size_t)pl + (put ? 6 + (size_t)ml + (size_t)vl : 0);
  if ((size_t)at > len || len - (size_t)at < size) {
    napi_throw_range_error(env, NULL, "no room for the record");
    return NULL;
  }
  uint8_t *r = buf + at, *o = r + HEADER;
  put_u32(r + 4, (uint32_t)(size - HEADER));
  /* The length first, the magic last (below): a daemon killed in between leaves a record that loading skips whole. */
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  *o++ = (uint8_t)kind;
  put_u16(o, (uint32_t)pl);
  memcpy(o + 2, path, (size_t)pl);
  o += 2 + pl;
  if (put) {
    put_u16(o, (uint32_t)ml);
    memcpy(o + 2, perms, (size_t)ml);
    o += 2 + ml;
    put_u32(o, (uint32_t)vl);
    memcpy(o + 4, value, (size_t)vl);
    o += 4 + vl;
  }
  uint32_t c = 0xffffffffu;
  for (const uint8_t *p = r + HEADER; p < o; p++) c = crc_table[(c ^ *p) & 0xff] ^ (c >> 8);
  put_u32(r + 8, c ^ 0xffffffffu);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  put_u32(r, MAGIC);
  return xsio_number(env, (double)(at + size));
}
