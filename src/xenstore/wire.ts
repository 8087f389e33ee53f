/**
 * xenstore framing (xs_wire.h `struct xsd_sockmsg`): a 16-byte header of four uint32 in host byte
 * order — little-endian on every platform vmstack runs on — `type, req_id, tx_id, len`, then `len`
 * payload bytes. The same framing is used on the Unix socket and on a guest's ring.
 *
 * Pure and synchronous. `FrameDecoder` is incremental: feed it chunks as they arrive; it splits a
 * chunk holding several frames and joins frames split across chunks. It never throws on unknown
 * types (they decode with op "INVALID") and reports an oversized length (> 4096, XSA-420: compared
 * as unsigned 32-bit) as a distinct result so the caller can close the connection as the C daemon
 * does; after that the stream cannot be resynchronised and the decoder yields nothing more.
 */
import { VmstackError } from "../lib/errors.js";
import { getU32, putU32 } from "./le-bytes.js";
import { XENSTORE_PAYLOAD_MAX, XS_HEADER_SIZE, XS_OPS, opOf, type XsErrorName, type XsOp } from "./protocol.js";

export interface XsMessage {
  /** The raw wire type number (kept so replies can echo what was sent). */
  readonly type: number;
  /** The decoded op; "INVALID" for any number not in the table. */
  readonly op: XsOp;
  readonly reqId: number;
  readonly txId: number;
  readonly payload: Buffer;
}

export interface OutgoingMessage {
  /** A type number or an op name. */
  readonly type: number | XsOp;
  readonly reqId?: number;
  readonly txId?: number;
  readonly payload?: Buffer | string;
}

/**
 * Encode one frame. Throws VmstackError XS_E2BIG if the payload exceeds `maxPayload` (default
 * XENSTORE_PAYLOAD_MAX): callers that deliberately produce oversized frames (fuzzers) pass Infinity.
 */
export function encodeMessage(msg: OutgoingMessage, opts: { maxPayload?: number } = {}): Buffer {
  const payload = msg.payload === undefined ? Buffer.alloc(0) : typeof msg.payload === "string" ? Buffer.from(msg.payload, "utf8") : msg.payload;
  const max = opts.maxPayload ?? XENSTORE_PAYLOAD_MAX;
  if (payload.length > max) {
    throw new VmstackError("XS_E2BIG", `xenstore payload of ${payload.length} bytes exceeds ${max}`, { facts: { length: payload.length, max } });
  }
  return frameOf(typeof msg.type === "number" ? msg.type : XS_OPS[msg.type], msg.reqId ?? 0, msg.txId ?? 0, payload);
}

/**
 * One frame: the daemon's replies and events (the caller has checked the payload's size). Stored
 * a byte at a time (le-bytes.ts): Buffer's own methods (writeUInt32LE, copy) were each a generic
 * property load in optimised code, about a sixth of this function's instructions.
 */
export function frameOf(type: number, reqId: number, txId: number, payload: Buffer): Buffer {
  const n = payload.length;
  const out = Buffer.allocUnsafe(XS_HEADER_SIZE + n);
  putU32(out, 0, type);
  putU32(out, 4, reqId);
  putU32(out, 8, txId);
  putU32(out, 12, n);
  if (n <= SHORT_COPY) for (let i = 0; i < n; i++) out[XS_HEADER_SIZE + i] = payload[i]!;
  else out.set(payload, XS_HEADER_SIZE);
  return out;
}

/** Payloads up to this long are copied in a loop: cheaper than a native copy's call. */
const SHORT_COPY = 64;

/** Decode exactly one complete frame from a buffer (for tests and tools); undefined if incomplete or oversized. */
export function decodeOne(buf: Buffer): XsMessage | undefined {
  const d = new FrameDecoder();
  const r = d.push(buf)[0];
  return r?.kind === "message" ? r.message : undefined;
}

export type DecodeResult =
  | { readonly kind: "message"; readonly message: XsMessage }
  | { readonly kind: "oversized"; readonly type: number; readonly reqId: number; readonly txId: number; readonly length: number };

export class FrameDecoder {
  readonly #maxPayload: number;
  #pending: Buffer | undefined;
  #dead = false;

  constructor(opts: { maxPayload?: number } = {}) {
    this.#maxPayload = opts.maxPayload ?? XENSTORE_PAYLOAD_MAX;
  }

  /** True once an oversized frame was seen: the stream can no longer be framed. */
  get dead(): boolean {
    return this.#dead;
  }

  /** Bytes held waiting for the rest of a frame. */
  get buffered(): number {
    return this.#pending?.length ?? 0;
  }

  /**
   * Feed one chunk; returns every frame it completes, in order. Payloads are copies when they
   * span chunks and views of the chunk otherwise (callers that keep them long should copy).
   */
  push(chunk: Buffer): DecodeResult[] {
    if (this.#dead) return [];
    let buf = chunk;
    if (this.#pending !== undefined) {
      buf = Buffer.concat([this.#pending, chunk]);
      this.#pending = undefined;
    }
    const out: DecodeResult[] = [];
    let off = 0;
    while (buf.length - off >= XS_HEADER_SIZE) {
      const type = getU32(buf, off);
      const reqId = getU32(buf, off + 4);
      const txId = getU32(buf, off + 8);
      const len = getU32(buf, off + 12); // unsigned: a "negative" length is just huge (XSA-420)
      if (len > this.#maxPayload) {
        out.push({ kind: "oversized", type, reqId, txId, length: len });
        this.#dead = true;
        return out;
      }
      if (buf.length - off < XS_HEADER_SIZE + len) break;
      const payload = buf.subarray(off + XS_HEADER_SIZE, off + XS_HEADER_SIZE + len);
      out.push({ kind: "message", message: { type, op: opOf(type), reqId, txId, payload } });
      off += XS_HEADER_SIZE + len;
    }
    // A copy: the chunk may be a lent buffer, read into again (Connection.input), or a big one.
    if (off < buf.length) this.#pending = Buffer.from(buf.subarray(off));
    return out;
  }
}

/**
 * Node.js's own slicers behind Buffer#toString, one per encoding (on Buffer.prototype since its
 * first releases, though not in its typings). Called directly, a request's path and value skip
 * toString's argument handling and dispatch: about 400 of a WRITE's 22.7k instructions.
 */
interface Slicers {
  utf8Slice(start: number, end: number): string;
  latin1Slice(start: number, end: number): string;
}

/** Whether this Node.js has them; if a release drops them, toString does the same work. */
const HAS_SLICERS = typeof (Buffer.prototype as Buffer & Partial<Slicers>).utf8Slice === "function" && typeof (Buffer.prototype as Buffer & Partial<Slicers>).latin1Slice === "function";

/** `b`'s bytes [start, end) as UTF-8 text (toString("utf8", start, end)). */
export function utf8Of(b: Buffer, start: number, end: number): string {
  return HAS_SLICERS ? (b as Buffer & Slicers).utf8Slice(start, end) : b.toString("utf8", start, end);
}

/** `b`'s bytes [start, end), one char per byte (toString("latin1", start, end)). */
export function latin1Of(b: Buffer, start: number, end: number): string {
  return HAS_SLICERS ? (b as Buffer & Slicers).latin1Slice(start, end) : b.toString("latin1", start, end);
}

// ---- payload helpers (xenstore.txt notation: `|` is NUL) ----

/** `a|b|c|`: every argument followed by one NUL (one buffer, no intermediate copies). */
export function nulTerminated(...args: readonly (string | Buffer)[]): Buffer {
  let n = args.length;
  for (const a of args) n += typeof a === "string" ? Buffer.byteLength(a, "utf8") : a.length;
  const out = Buffer.allocUnsafe(n);
  let o = 0;
  for (const a of args) {
    o += typeof a === "string" ? out.write(a, o, "utf8") : a.copy(out, o);
    out[o++] = 0;
  }
  return out;
}

/** `path|value`: WRITE's payload (the value is the rest, with no terminator). */
export function pathAndValue(path: string, value: string | Buffer): Buffer {
  const pl = Buffer.byteLength(path, "utf8");
  const vl = typeof value === "string" ? Buffer.byteLength(value, "utf8") : value.length;
  const out = Buffer.allocUnsafe(pl + 1 + vl);
  out.write(path, 0, "utf8");
  out[pl] = 0;
  if (typeof value === "string") out.write(value, pl + 1, "utf8");
  else value.copy(out, pl + 1);
  return out;
}

/**
 * Split a payload of NUL-terminated strings (`a|b|`) into ["a","b"]. A trailing unterminated
 * remainder is returned as a last element too; use `strictArgs` for the C daemon's exact checks.
 */
export function splitNul(payload: Buffer): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === 0) {
      out.push(payload.toString("utf8", start, i));
      start = i + 1;
    }
  }
  if (start < payload.length) out.push(payload.toString("utf8", start));
  return out;
}

/**
 * Exactly `n` NUL-terminated arguments and nothing after them (C xenstored `onearg()` /
 * `get_strings()` as used by each handler); undefined otherwise (→ EINVAL).
 */
export function strictArgs(payload: Buffer, n: number): string[] | undefined {
  if (payload.length === 0 || payload[payload.length - 1] !== 0) return undefined;
  const parts = splitNul(payload);
  return parts.length === n ? parts : undefined;
}

/** The payload of an XS_ERROR reply: the name and one NUL. */
export function errorPayload(name: XsErrorName): Buffer {
  return Buffer.from(name + "\0", "latin1");
}

/** `OK\0`, the reply of every op that returns nothing else. */
export const OK_PAYLOAD: Buffer = Buffer.from("OK\0", "latin1");
