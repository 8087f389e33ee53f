/**
 * The xenstore wire protocol's tables: message types, error names and limits.
 *
 * Source: Xen `xen/include/public/io/xs_wire.h` (enum xsd_sockmsg_type, xsd_errors[],
 * XENSTORE_PAYLOAD_MAX, XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX) and `docs/misc/xenstore.txt`
 * ("Defined Xenstore message types"). Numbers are wire facts: never renumber.
 *
 * House rule 6: this table is exhaustive and `as const`; a number that is not in it decodes to the
 * op "INVALID" (xs_wire.h XS_INVALID = 0xffff), never to an exception.
 */

/** Every message type number of xs_wire.h (Xen 4.17 plus the 4.21 GET/SET_FEATURE and GET/SET_QUOTA). */
export const XS_OPS = {
  CONTROL: 0, // alias XS_DEBUG
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15, // server → client only
  ERROR: 16, // server → client only
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  // 20 was XS_RESTRICT, removed from Xen in 2017 (commit dbc84d2983): now ENOSYS like any unknown type.
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
  GET_FEATURE: 23,
  SET_FEATURE: 24,
  GET_QUOTA: 25,
  SET_QUOTA: 26,
  INVALID: 0xffff,
} as const;

export type XsOp = keyof typeof XS_OPS;
export type XsOpNumber = (typeof XS_OPS)[XsOp];

/** xs_wire.h XS_TYPE_COUNT at Xen HEAD: every number below it except 20 is a defined type. */
export const XS_TYPE_COUNT = 27;

const opByNumber: ReadonlyMap<number, XsOp> = new Map(
  (Object.entries(XS_OPS) as [XsOp, number][]).map(([name, n]) => [n, name]),
);

/** The op for a wire type number; anything unknown (including 20, RESTRICT) is "INVALID". */
export function opOf(type: number): XsOp {
  return opByNumber.get(type) ?? "INVALID";
}

/**
 * xs_wire.h `xsd_errors[]`, in its order ("new errors only at the end"). On the wire an error is
 * an XS_ERROR message whose payload is the name followed by one NUL, never the number.
 */
export const XS_ERRORS = [
  "EINVAL",
  "EACCES",
  "EEXIST",
  "EISDIR",
  "ENOENT",
  "ENOMEM",
  "ENOSPC",
  "EIO",
  "ENOTEMPTY",
  "ENOSYS",
  "EROFS",
  "EBUSY",
  "EAGAIN",
  "EISCONN",
  "E2BIG",
  "EPERM",
] as const;

export type XsErrorName = (typeof XS_ERRORS)[number];

const errorNames: ReadonlySet<string> = new Set(XS_ERRORS);

export function isXsErrorName(s: string): s is XsErrorName {
  return errorNames.has(s);
}

/** Size of the fixed header: uint32 type, req_id, tx_id, len in host byte order (little-endian on x86). */
export const XS_HEADER_SIZE = 16;
/** Largest payload in either direction (xs_wire.h XENSTORE_PAYLOAD_MAX). */
export const XENSTORE_PAYLOAD_MAX = 4096;
/** Longest absolute path (xs_wire.h XENSTORE_ABS_PATH_MAX). */
export const XENSTORE_ABS_PATH_MAX = 3072;
/** Longest path relative to a domain's home (xs_wire.h XENSTORE_REL_PATH_MAX). */
export const XENSTORE_REL_PATH_MAX = 2048;
/** DIRECTORY_PART chunks hold at most this many bytes of names (C daemon: payload max minus the gencnt room). */
export const DIRECTORY_PART_CHUNK_MAX = XENSTORE_PAYLOAD_MAX - 8;

/** Feature bits (xs_wire.h XENSTORE_SERVER_FEATURE_*), as reported by GET_FEATURE. */
export const XS_FEATURES = {
  RECONNECTION: 1,
  ERROR: 2,
  WATCHDEPTH: 4,
  DOMID_ANY: 8,
} as const;

/** The special watch paths (xenstore.txt "Watches"): never real nodes. */
export const SPECIAL_WATCH_INTRODUCE = "@introduceDomain";
export const SPECIAL_WATCH_RELEASE = "@releaseDomain";

/** DOMID_SELF etc. are not xenstore concepts; domids on the wire are decimal 0..65535 (DOMID_FIRST_RESERVED 0x7ff0). */
export const DOMID_MAX = 0x7fef;
