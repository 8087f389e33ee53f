/* Shared by the addon's source files (xsio.c, reader.c). */
#ifndef XSIO_H
#define XSIO_H
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>

napi_value xsio_number(napi_env env, double v);
/* Throws a TypeError with `msg`; returns NULL for the caller to return. */
napi_value xsio_fail(napi_env env, const char *msg);
/* A descriptor: an integer from 0 to INT32_MAX. 1, or 0 if `v` is not one. */
int xsio_arg_fd(napi_env env, napi_value v, int32_t *out);

napi_value xsio_read_start(napi_env env, napi_callback_info info);
napi_value xsio_read_pause(napi_env env, napi_callback_info info);
napi_value xsio_read_resume(napi_env env, napi_callback_info info);
napi_value xsio_read_close(napi_env env, napi_callback_info info);
napi_value xsio_encode_short(napi_env env, napi_callback_info info);
void xsio_record_init(void);
#endif
