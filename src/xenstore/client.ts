/**
 * vmstack's xenstore client: Xen's wire protocol over any Duplex (a Unix socket to any xenstored,
 * or an in-process connection from vmstack's daemon).
 *
 * - Pipelined: every request gets its own req_id and many may be in flight; replies are matched by
 *   req_id, not by order (xenstore.txt: "replies may come in any order"), unlike libxenstore,
 *   which sends req_id 0 with one request in flight (xs.c `request_mutex`).
 * - Errors: an XS_ERROR reply becomes an `XsError` (code `XS_<ERRNO>`, facts errno, op, path).
 * - Watches are async iterators keyed by token. A watch's events are queued from the moment the
 *   WATCH is sent, because the C daemon sends the event caused by a request before that request's
 *   reply and the OCaml daemon after it (xenstore-notes §1.7).
 * - Reconnect: with a connector, a lost connection is re-opened with backoff; requests in flight
 *   fail with XS_DISCONNECTED (whether they took effect is unknown), open transactions are dead,
 *   and every watch is registered again (which fires its initial event: readers re-read).
 */
import type { Duplex } from "node:stream";
import { VmstackError } from "../lib/errors.js";
import { retryUntil } from "../lib/retry.js";
import { log } from "../lib/log.js";
import { XS_OPS, XENSTORE_PAYLOAD_MAX, isXsErrorName, type XsOp } from "./protocol.js";
import { FrameDecoder, encodeMessage, nulTerminated, splitNul, type XsMessage } from "./wire.js";
import { XsError } from "./errors.js";
import { defaultXenstoreSocket, socketConnector, type XenstoreConnector } from "./client-socket.js";
import { NodeOps, disconnected, isRetryable, stripNul, type ClientOptions, type RawReply, type RequestOptions, type TransactionOptions } from "./client-node-ops.js";
import { XenstoreTransaction } from "./client-transaction.js";
import { XenstoreWatch, type WatchOptions } from "./client-watch.js";
export { parsePermissions, formatPermissions, type ClientOptions, type RawReply, type RequestOptions, type TransactionOptions, type XenstoreOps } from "./client-node-ops.js";
export { XenstoreTransaction } from "./client-transaction.js";
export { walkTree, type TreeEntry } from "./client-tree.js";
export { XenstoreWatch, type WatchEvent, type WatchOptions } from "./client-watch.js";
export type { PermEntry } from "./permissions.js";
export { defaultXenstoreSocket, socketConnector, type XenstoreConnector } from "./client-socket.js";

interface Pending {
  readonly op: XsOp;
  resolve(reply: XsMessage): void;
  reject(e: unknown): void;
}

const DEFAULT_MAX_ATTEMPTS = 32;

/** Connect to a xenstored socket (default: libxenstore's choice); reconnects unless `reconnect: false`. */
export async function connectXenstore(opts: { socket?: string; signal?: AbortSignal; reconnect?: boolean; reconnectTimeoutMs?: number } = {}): Promise<XenstoreClient> {
  const connector = socketConnector(opts.socket ?? defaultXenstoreSocket());
  // A Unix socket's connect fails with EAGAIN while the daemon's listen backlog is full (Xen's C
  // daemon has a short one): that is worth waiting out; anything else is reported at once.
  const duplex = await retryUntil(
    async () => {
      try {
        return await connector(opts.signal);
      } catch (e) {
        if (e instanceof VmstackError && (e.cause as NodeJS.ErrnoException | undefined)?.code === "EAGAIN") return undefined;
        throw e;
      }
    },
    { what: "xenstored to accept the connection", timeoutMs: 5000, initialDelayMs: 2, maxDelayMs: 100, signal: opts.signal },
  );
  return new XenstoreClient(duplex, {
    ...(opts.reconnect === false ? {} : { reconnect: connector }),
    ...(opts.reconnectTimeoutMs === undefined ? {} : { reconnectTimeoutMs: opts.reconnectTimeoutMs }),
  });
}

/**
 * Requests per write when many are made in one tick (see #queue). Measured with 64 writes in
 * flight, 2 s runs: against a daemon that fsyncs before replying 104–167k writes/s with slices of
 * 16, 57–86k with the whole tick in one write (the daemon's group commit and this side took
 * turns); against the default daemon both ~300k.
 */
const OUTBOX_SLICE = 16;

export class XenstoreClient extends NodeOps {
  #duplex: Duplex | undefined;
  #decoder = new FrameDecoder();
  #pending = new Map<number, Pending>();
  #outbox: Buffer[] = [];
  #flushQueued = false;
  #nextReqId = 1;
  #closed = false;
  /** Bumped on every new connection: transactions from an older epoch are dead. */
  #epoch = 0;
  #reconnecting: Promise<void> | undefined;
  readonly #options: ClientOptions;
  readonly #watches = new Map<string, XenstoreWatch>();
  #nextToken = 1;
  readonly #tokenPrefix = `vmstack-${process.pid}-${Math.random().toString(36).slice(2, 8)}-`;

  constructor(duplex: Duplex, options: ClientOptions = {}) {
    super();
    this.#options = options;
    this.#attach(duplex);
  }

  /** Connection generation (starts at 1; +1 per reconnect). */
  get epoch(): number {
    return this.#epoch;
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  #attach(duplex: Duplex): void {
    this.#duplex = duplex;
    this.#decoder = new FrameDecoder();
    this.#epoch++;
    const epoch = this.#epoch;
    duplex.on("data", (chunk: Buffer) => {
      if (epoch === this.#epoch) this.#onData(chunk);
    });
    duplex.on("error", (e: Error) => {
      log("debug", "xenstore-client", `connection error: ${e.message}`);
    });
    duplex.on("close", () => {
      if (epoch === this.#epoch) this.#onLost();
    });
    duplex.on("end", () => {
      duplex.end();
    });
  }

  #onData(chunk: Buffer): void {
    for (const r of this.#decoder.push(chunk)) {
      if (r.kind === "oversized") {
        // libxenstore closes the fd on a reply over 4096 bytes (xs.c read_message → E2BIG).
        log("warn", "xenstore-client", `xenstored sent a ${r.length}-byte payload (max ${XENSTORE_PAYLOAD_MAX}); closing`);
        const p = this.#pending.get(r.reqId);
        this.#pending.delete(r.reqId);
        p?.reject(
          new VmstackError("XS_PROTOCOL", `xenstore ${p.op}: xenstored sent a ${r.length}-byte reply, over the ${XENSTORE_PAYLOAD_MAX}-byte limit`, {
            facts: { op: p.op, length: r.length },
          }),
        );
        this.#duplex?.destroy();
        return;
      }
      const m = r.message;
      if (m.op === "WATCH_EVENT") {
        this.#onEvent(m.payload);
        continue;
      }
      const p = this.#pending.get(m.reqId);
      if (p === undefined) {
        // Normally the reply to a request whose caller gave up (AbortSignal).
        log("debug", "xenstore-client", `reply ${m.op} for unknown req_id ${m.reqId}; ignored`);
        continue;
      }
      this.#pending.delete(m.reqId);
      if (m.op !== p.op && m.op !== "ERROR") {
        // xs.c: a reply of another type is EBADF and the library gives up on the connection.
        p.reject(new VmstackError("XS_PROTOCOL", `xenstore ${p.op}: daemon replied with ${m.op}`, { facts: { op: p.op, reply: m.op } }));
        this.#duplex?.destroy();
        return;
      }
      // Payloads may be views into a chunk the decoder reuses nothing of, but copy anyway: cheap, and safe to keep.
      p.resolve({ type: m.type, op: m.op, reqId: m.reqId, txId: m.txId, payload: Buffer.from(m.payload) });
    }
  }

  #onEvent(payload: Buffer): void {
    // `<path>\0<token>\0`; a path may not contain NUL, so split at the first NUL.
    const parts = splitNul(payload);
    const path = parts[0];
    const token = parts[1];
    if (path === undefined || token === undefined) return;
    const w = this.#watches.get(token);
    if (w) w._push(path);
    else log("debug", "xenstore-client", `event for unknown token ${token}`);
  }

  #onLost(): void {
    this.#duplex = undefined;
    this.#outbox = [];
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(disconnected(p.op, undefined));
    if (this.#closed) {
      for (const w of this.#watches.values()) w._end(undefined);
      return;
    }
    if (this.#options.reconnect === undefined) {
      this.#closed = true;
      for (const w of this.#watches.values()) w._end(disconnected("WATCH", w.path));
      return;
    }
    this.#reconnecting ??= this.#reconnect().finally(() => {
      this.#reconnecting = undefined;
    });
  }

  async #reconnect(): Promise<void> {
    const connector = this.#options.reconnect;
    if (connector === undefined) return;
    try {
      const duplex = await retryUntil(
        async () => {
          if (this.#closed) throw new VmstackError("XS_CLOSED", "xenstore client closed");
          try {
            return await connector(undefined);
          } catch (e) {
            log("debug", "xenstore-client", `reconnect failed: ${e instanceof Error ? e.message : String(e)}`);
            return undefined;
          }
        },
        { what: "xenstored to accept a connection again", timeoutMs: this.#options.reconnectTimeoutMs ?? 10_000, initialDelayMs: 20, maxDelayMs: 1000 },
      );
      if (this.#closed) {
        duplex.destroy();
        return;
      }
      this.#attach(duplex);
      log("debug", "xenstore-client", `reconnected (epoch ${this.#epoch})`);
      // Register every watch again; each fires its initial event, which tells readers to re-read.
      await Promise.all(
        [...this.#watches.values()].filter((w) => w._registered).map((w) =>
          this.request("WATCH", nulTerminated(w.path, w.token), 0, w.path, undefined).catch((e: unknown) => {
            w._end(e);
          }),
        ),
      );
    } catch (e) {
      this.#closed = true;
      for (const w of this.#watches.values()) w._end(e);
    }
  }

  async #connection(op: XsOp): Promise<Duplex> {
    if (this.#duplex !== undefined) return this.#duplex;
    if (this.#reconnecting !== undefined) await this.#reconnecting;
    if (this.#duplex !== undefined) return this.#duplex;
    throw this.#closed ? new VmstackError("XS_CLOSED", `xenstore ${op}: client is closed`, { facts: { op } }) : disconnected(op, undefined);
  }

  /** Send one request and resolve with its reply frame (ERROR included). */
  #send(op: XsOp, payload: Buffer, txId: number, signal: AbortSignal | undefined): Promise<XsMessage> {
    if (signal?.aborted === true) return Promise.reject(signal.reason);
    if (payload.length > XENSTORE_PAYLOAD_MAX) {
      // Xen's C daemon would drop the connection (xenstore.txt: such a client is "immediately killed").
      return Promise.reject(new XsError("E2BIG", `xenstore ${op}: request of ${payload.length} bytes exceeds the ${XENSTORE_PAYLOAD_MAX}-byte limit`, { op, length: payload.length }));
    }
    const duplex = this.#duplex;
    if (duplex === undefined) return this.#connection(op).then(() => this.#send(op, payload, txId, signal));
    const reqId = this.#nextReqId;
    this.#nextReqId = this.#nextReqId >= 0xffffffff ? 1 : this.#nextReqId + 1;
    const frame = encodeMessage({ type: op, reqId, txId, payload });
    if (signal === undefined) {
      // The common case: nothing to unhook when the reply comes.
      return new Promise<XsMessage>((resolve, reject) => {
        this.#pending.set(reqId, { op, resolve, reject });
        this.#queue(duplex, frame);
      });
    }
    return new Promise<XsMessage>((resolve, reject) => {
      const onAbort = (): void => {
        // The reply may still come; it is dropped as "unknown req_id".
        this.#pending.delete(reqId);
        reject(signal?.reason);
      };
      this.#pending.set(reqId, {
        op,
        resolve: (m) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(m);
        },
        reject: (e) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue(duplex, frame);
    });
  }

  /**
   * Requests made in the same tick (many callers, or a caller with several in flight) leave
   * together: one write(2) per OUTBOX_SLICE requests instead of one each, and the daemon reads them
   * together. The rest of a tick's requests go in a microtask, so a lone request is not delayed by
   * an event-loop turn. Writing every OUTBOX_SLICE rather than all at the end lets the daemon start
   * on the first requests while this side is still making the others.
   */
  #queue(duplex: Duplex, frame: Buffer): void {
    this.#outbox.push(frame);
    if (this.#outbox.length >= OUTBOX_SLICE) this.#flushOutbox(duplex);
    else if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => {
        this.#flushQueued = false;
        this.#flushOutbox(duplex);
      });
    }
  }

  #flushOutbox(duplex: Duplex): void {
    const frames = this.#outbox;
    if (frames.length === 0) return;
    this.#outbox = [];
    // A connection lost or closed meanwhile rejects these requests (or already has).
    if (duplex === this.#duplex && !duplex.destroyed) duplex.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
  }

  /**
   * Send any request and return the reply as sent, without turning XS_ERROR into an exception.
   * `payload` is sent verbatim (no NUL added); `txId` defaults to 0.
   */
  async raw(op: XsOp, payload: Buffer | string, txId = 0, opts: RequestOptions = {}): Promise<RawReply> {
    const buf = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
    const m = await this.#send(op, buf, txId, opts.signal);
    return m.op === "ERROR"
      ? { op: m.op, type: m.type, txId: m.txId, payload: m.payload, error: m.payload.toString("latin1").replace(/\0$/, "") }
      : { op: m.op, type: m.type, txId: m.txId, payload: m.payload };
  }

  /** A request whose XS_ERROR reply is thrown as XsError naming the op and path. */
  async request(op: XsOp, payload: Buffer, txId: number, path: string | undefined, signal: AbortSignal | undefined): Promise<Buffer> {
    const m = await this.#send(op, payload, txId, signal);
    if (m.op !== "ERROR") return m.payload;
    const name = m.payload.toString("latin1").replace(/\0$/, "");
    const facts = { op, ...(path === undefined ? {} : { path }), ...(txId === 0 ? {} : { txId }) };
    if (!isXsErrorName(name)) {
      // libxenstore maps an unknown error string to EINVAL (xs.c get_error); keep the real text as a fact.
      throw new XsError("EINVAL", `xenstore ${op}${path === undefined ? "" : " " + path}: unknown error '${name}'`, { ...facts, reply: name });
    }
    throw new XsError(name, `xenstore ${op}${path === undefined ? "" : " " + path}: ${name}`, facts);
  }

  protected nodeRequest(op: XsOp, payload: Buffer, path: string, signal: AbortSignal | undefined): Promise<Buffer> {
    return this.request(op, payload, 0, path, signal);
  }

  // ---- domains and the rest ----

  async getDomainPath(domid: number, opts: RequestOptions = {}): Promise<string> {
    return stripNul(await this.request("GET_DOMAIN_PATH", nulTerminated(String(domid)), 0, undefined, opts.signal));
  }
  async introduce(domid: number, gfn: number | bigint, evtchn: number, opts: RequestOptions = {}): Promise<void> {
    await this.request("INTRODUCE", nulTerminated(String(domid), String(gfn), String(evtchn)), 0, undefined, opts.signal);
  }
  async release(domid: number, opts: RequestOptions = {}): Promise<void> {
    await this.request("RELEASE", nulTerminated(String(domid)), 0, undefined, opts.signal);
  }
  async isDomainIntroduced(domid: number, opts: RequestOptions = {}): Promise<boolean> {
    return stripNul(await this.request("IS_DOMAIN_INTRODUCED", nulTerminated(String(domid)), 0, undefined, opts.signal)) === "T";
  }
  async setTarget(domid: number, target: number, opts: RequestOptions = {}): Promise<void> {
    await this.request("SET_TARGET", nulTerminated(String(domid), String(target)), 0, undefined, opts.signal);
  }
  async resume(domid: number, opts: RequestOptions = {}): Promise<void> {
    await this.request("RESUME", nulTerminated(String(domid)), 0, undefined, opts.signal);
  }
  /** Drop every watch and transaction of this connection on the daemon side, and end local watches. */
  async resetWatches(opts: RequestOptions = {}): Promise<void> {
    await this.request("RESET_WATCHES", nulTerminated(""), 0, undefined, opts.signal);
    for (const w of [...this.#watches.values()]) {
      this.#watches.delete(w.token);
      w._end(undefined);
    }
  }
  /** CONTROL (alias DEBUG): implementation-specific commands; the reply text. */
  async control(args: readonly string[], opts: RequestOptions = {}): Promise<string> {
    return stripNul(await this.request("CONTROL", nulTerminated(...args), 0, undefined, opts.signal));
  }

  // ---- transactions ----

  /** Start a transaction; prefer `transaction(fn)`, which retries on EAGAIN. */
  async startTransaction(opts: RequestOptions = {}): Promise<XenstoreTransaction> {
    const reply = stripNul(await this.request("TRANSACTION_START", nulTerminated(""), 0, undefined, opts.signal));
    const id = Number(reply);
    if (!/^\d+$/.test(reply) || id === 0 || id > 0xffffffff) {
      throw new VmstackError("XS_PROTOCOL", `xenstore TRANSACTION_START: bad transaction id '${reply}'`, { facts: { reply } });
    }
    return new XenstoreTransaction(this, id, this.#epoch);
  }

  /**
   * Run `fn` in a transaction and commit; on EAGAIN (a conflicting commit, xenstore-notes §1.8)
   * run it again, up to `maxAttempts` times with a short growing backoff. `fn` must be safe to
   * repeat and should only touch xenstore through `tx`. If `fn` throws, the transaction is aborted
   * and the error passes through.
   */
  async transaction<T>(fn: (tx: XenstoreTransaction) => Promise<T>, opts: TransactionOptions = {}): Promise<T> {
    const maxAttempts = opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    let attempts = 0;
    const out = await retryUntil(
      async () => {
        attempts++;
        let tx: XenstoreTransaction;
        try {
          tx = await this.startTransaction({ signal: opts.signal });
        } catch (e) {
          if (isRetryable(e) && attempts < maxAttempts) return undefined;
          throw e;
        }
        let value: T;
        try {
          value = await fn(tx);
        } catch (e) {
          await tx.abort().catch((abortError: unknown) => {
            log("debug", "xenstore-client", `abort after a failed transaction body: ${String(abortError)}`);
          });
          // Nothing was committed: a conflict or a lost connection just means "run it again".
          if (isRetryable(e) && attempts < maxAttempts) return undefined;
          throw e;
        }
        try {
          await tx.commit({ signal: opts.signal });
        } catch (e) {
          if (e instanceof XsError && e.errno === "EAGAIN") {
            if (attempts < maxAttempts) return undefined;
            throw new XsError("EAGAIN", `xenstore transaction still conflicting after ${attempts} attempts`, { attempts });
          }
          // Lost while the commit was in flight: it may or may not have been applied, so running
          // the body again could apply it twice. The caller has to look.
          if (e instanceof VmstackError && e.code === "XS_DISCONNECTED") {
            throw new VmstackError("XS_DISCONNECTED", "xenstore transaction: connection lost during commit; whether it was applied is unknown", {
              cause: e,
              facts: { attempts, outcome: "unknown" },
            });
          }
          throw e;
        }
        return { value };
      },
      { what: "a xenstore transaction to commit", timeoutMs: 60_000, initialDelayMs: 1, maxDelayMs: 100, signal: opts.signal },
    );
    return out.value;
  }

  // ---- watches ----

  /**
   * Watch `path` (and everything below it). Resolves once the daemon accepted the watch; iterate
   * the result for events. The first event is the daemon's initial event for `path` itself.
   * `break`, `close()` or the signal ends it (and sends UNWATCH).
   */
  async watch(path: string, opts: WatchOptions & RequestOptions = {}): Promise<XenstoreWatch> {
    const token = opts.token ?? `${this.#tokenPrefix}${this.#nextToken++}`;
    if (this.#watches.has(token)) throw new XsError("EEXIST", `xenstore WATCH ${path}: token '${token}' already in use by this client`, { path, token });
    const w = new XenstoreWatch(path, token, opts, (watch) => this.#unwatch(watch));
    // Registered before sending: the initial event may come before the reply (C daemon).
    this.#watches.set(token, w);
    try {
      await this.request("WATCH", nulTerminated(path, token), 0, path, opts.signal);
      w._registered = true;
    } catch (e) {
      this.#watches.delete(token);
      w._end(undefined);
      throw e;
    }
    return w;
  }

  async #unwatch(w: XenstoreWatch): Promise<void> {
    if (this.#watches.get(w.token) !== w) return;
    this.#watches.delete(w.token);
    if (this.#duplex === undefined) return;
    try {
      await this.request("UNWATCH", nulTerminated(w.path, w.token), 0, w.path, undefined);
    } catch (e) {
      // Gone already (RESET_WATCHES, or a reconnect lost it): nothing left to undo.
      log("debug", "xenstore-client", `UNWATCH ${w.path}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Close the connection. Requests in flight fail with XS_DISCONNECTED; watches end. */
  async close(): Promise<void> {
    if (this.#closed && this.#duplex === undefined) return;
    this.#closed = true;
    const d = this.#duplex;
    if (d === undefined) {
      for (const w of this.#watches.values()) w._end(undefined);
      return;
    }
    await new Promise<void>((resolve) => {
      d.once("close", () => resolve());
      d.end();
      d.destroy();
    });
  }
}

/** Op numbers, re-exported for callers building raw requests. */
export const XENSTORE_OPS = XS_OPS;
