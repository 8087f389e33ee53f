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
import { connect as netConnect } from "node:net";
import { VmstackError } from "../lib/errors.js";
import { retryUntil } from "../lib/retry.js";
import { log } from "../lib/log.js";
import { XS_OPS, XENSTORE_PAYLOAD_MAX, isXsErrorName, type XsOp } from "./protocol.js";
import { FrameDecoder, encodeMessage, nulTerminated, splitNul, type XsMessage } from "./wire.js";
import { XsError } from "./errors.js";
import { defaultSocketPath } from "./paths-default.js";
import { parsePermEntry, formatPerms, type PermEntry } from "./permissions.js";

export type { PermEntry } from "./permissions.js";

/** Opens a fresh connection; used at start and on reconnect. */
export type XenstoreConnector = (signal: AbortSignal | undefined) => Promise<Duplex>;

export interface ClientOptions {
  /** Re-open with this after the connection is lost. Without it the client fails once closed. */
  readonly reconnect?: XenstoreConnector | undefined;
  /** How long one reconnect may keep trying (default 10 s). */
  readonly reconnectTimeoutMs?: number;
}

export interface RequestOptions {
  readonly signal?: AbortSignal | undefined;
}

/** One reply exactly as the daemon sent it: for conformance tests and tools that show errnos. */
export interface RawReply {
  readonly op: XsOp;
  readonly type: number;
  readonly txId: number;
  readonly payload: Buffer;
  /** The errno name when the reply is XS_ERROR. */
  readonly error?: string;
}

interface Pending {
  readonly op: XsOp;
  resolve(reply: XsMessage): void;
  reject(e: unknown): void;
}

/** The reads and writes that work both outside and inside a transaction. */
export interface XenstoreOps {
  read(path: string, opts?: RequestOptions): Promise<string>;
  readBytes(path: string, opts?: RequestOptions): Promise<Buffer>;
  /** The value, or undefined when the node does not exist (ENOENT). */
  tryRead(path: string, opts?: RequestOptions): Promise<string | undefined>;
  write(path: string, value: string | Buffer, opts?: RequestOptions): Promise<void>;
  mkdir(path: string, opts?: RequestOptions): Promise<void>;
  rm(path: string, opts?: RequestOptions): Promise<void>;
  directory(path: string, opts?: RequestOptions): Promise<string[]>;
  exists(path: string, opts?: RequestOptions): Promise<boolean>;
  getPerms(path: string, opts?: RequestOptions): Promise<PermEntry[]>;
  setPerms(path: string, perms: readonly PermEntry[], opts?: RequestOptions): Promise<void>;
}

export interface TransactionOptions {
  readonly signal?: AbortSignal | undefined;
  /** Attempts before giving up on EAGAIN (default 32). */
  readonly maxAttempts?: number;
}

const DEFAULT_MAX_ATTEMPTS = 32;

/**
 * `$XENSTORED_PATH`, else `$XENSTORED_RUNDIR/socket` (libxenstore's variables, xs_lib.c), else
 * vmstack's own daemon socket (paths-default.ts), where libxenstore would use /var/run/xenstored.
 */
export function defaultXenstoreSocket(env: NodeJS.ProcessEnv = process.env): string {
  const p = env["XENSTORED_PATH"];
  if (p !== undefined && p !== "") return p;
  const rundir = env["XENSTORED_RUNDIR"];
  if (rundir !== undefined && rundir !== "") return `${rundir}/socket`;
  return defaultSocketPath(env);
}

/** A connector for a Unix socket path. */
export function socketConnector(path: string): XenstoreConnector {
  return (signal) =>
    new Promise<Duplex>((resolve, reject) => {
      const s = netConnect({ path, ...(signal ? { signal } : {}) });
      const onError = (e: Error): void => {
        reject(new VmstackError("XS_CONNECT", `cannot connect to xenstored at ${path}: ${e.message}`, { cause: e, facts: { socket: path } }));
      };
      s.once("error", onError);
      s.once("connect", () => {
        s.off("error", onError);
        s.setNoDelay(true);
        resolve(s);
      });
    });
}

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

function disconnected(op: string, path: string | undefined): VmstackError {
  return new VmstackError("XS_DISCONNECTED", `xenstore ${op}${path === undefined ? "" : " " + path}: connection to xenstored lost`, {
    facts: { op, ...(path === undefined ? {} : { path }) },
  });
}

/**
 * The node operations, written once for both a client (tx_id 0) and a transaction (its tx_id):
 * a subclass says how one request is sent.
 */
abstract class NodeOps implements XenstoreOps {
  protected abstract nodeRequest(op: XsOp, payload: Buffer, path: string, signal: AbortSignal | undefined): Promise<Buffer>;

  async read(path: string, opts: RequestOptions = {}): Promise<string> {
    return (await this.nodeRequest("READ", nulTerminated(path), path, opts.signal)).toString("utf8");
  }
  readBytes(path: string, opts: RequestOptions = {}): Promise<Buffer> {
    return this.nodeRequest("READ", nulTerminated(path), path, opts.signal);
  }
  async tryRead(path: string, opts: RequestOptions = {}): Promise<string | undefined> {
    try {
      return await this.read(path, opts);
    } catch (e) {
      if (e instanceof XsError && e.errno === "ENOENT") return undefined;
      throw e;
    }
  }
  async write(path: string, value: string | Buffer, opts: RequestOptions = {}): Promise<void> {
    // The value is the rest of the payload, with no terminator (xenstore.txt WRITE).
    const v = typeof value === "string" ? Buffer.from(value, "utf8") : value;
    await this.nodeRequest("WRITE", Buffer.concat([nulTerminated(path), v]), path, opts.signal);
  }
  async mkdir(path: string, opts: RequestOptions = {}): Promise<void> {
    await this.nodeRequest("MKDIR", nulTerminated(path), path, opts.signal);
  }
  async rm(path: string, opts: RequestOptions = {}): Promise<void> {
    await this.nodeRequest("RM", nulTerminated(path), path, opts.signal);
  }
  async directory(path: string, opts: RequestOptions = {}): Promise<string[]> {
    try {
      return splitNul(await this.nodeRequest("DIRECTORY", nulTerminated(path), path, opts.signal));
    } catch (e) {
      // Over 4096 bytes of names: the C daemon says E2BIG and offers DIRECTORY_PART (XSA-72).
      if (e instanceof XsError && e.errno === "E2BIG") return directoryInParts((op, payload) => this.nodeRequest(op, payload, path, opts.signal), path);
      throw e;
    }
  }
  async exists(path: string, opts: RequestOptions = {}): Promise<boolean> {
    // xenstore-exists reads the node; any answer but ENOENT means it is there (EACCES included).
    try {
      await this.nodeRequest("READ", nulTerminated(path), path, opts.signal);
      return true;
    } catch (e) {
      if (e instanceof XsError && e.errno === "ENOENT") return false;
      if (e instanceof XsError && e.errno === "EACCES") return true;
      throw e;
    }
  }
  async getPerms(path: string, opts: RequestOptions = {}): Promise<PermEntry[]> {
    return parsePermissions(splitNul(await this.nodeRequest("GET_PERMS", nulTerminated(path), path, opts.signal)));
  }
  async setPerms(path: string, perms: readonly PermEntry[], opts: RequestOptions = {}): Promise<void> {
    await this.nodeRequest("SET_PERMS", nulTerminated(path, ...formatPerms(perms)), path, opts.signal);
  }
}

export class XenstoreClient extends NodeOps {
  #duplex: Duplex | undefined;
  #decoder = new FrameDecoder();
  #pending = new Map<number, Pending>();
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
      p.resolve({ ...m, payload: Buffer.from(m.payload) });
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
  async #send(op: XsOp, payload: Buffer, txId: number, signal: AbortSignal | undefined): Promise<XsMessage> {
    signal?.throwIfAborted();
    if (payload.length > XENSTORE_PAYLOAD_MAX) {
      // Xen's C daemon would drop the connection (xenstore.txt: such a client is "immediately killed").
      throw new XsError("E2BIG", `xenstore ${op}: request of ${payload.length} bytes exceeds the ${XENSTORE_PAYLOAD_MAX}-byte limit`, { op, length: payload.length });
    }
    const duplex = this.#duplex ?? (await this.#connection(op));
    const reqId = this.#nextReqId;
    this.#nextReqId = this.#nextReqId >= 0xffffffff ? 1 : this.#nextReqId + 1;
    const frame = encodeMessage({ type: op, reqId, txId, payload });
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
      duplex.write(frame);
    });
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

/** True for errors after which a whole transaction is worth running again. */
function isRetryable(e: unknown): boolean {
  return (e instanceof XsError && e.errno === "EAGAIN") || (e instanceof VmstackError && e.code === "XS_DISCONNECTED");
}

function stripNul(b: Buffer): string {
  const end = b.length > 0 && b[b.length - 1] === 0 ? b.length - 1 : b.length;
  return b.toString("utf8", 0, end);
}

/** Parse GET_PERMS entries like `n0`,`r5`. */
export function parsePermissions(entries: readonly string[]): PermEntry[] {
  return entries.map((s) => {
    const e = parsePermEntry(s);
    if (e === undefined) throw new VmstackError("XS_PROTOCOL", `bad xenstore permission '${s}' (want n|r|w|b followed by a domid)`, { facts: { entry: s } });
    return e;
  });
}

export { formatPerms as formatPermissions };

/**
 * DIRECTORY_PART: `<path>\0<offset>\0` → `<gencnt>\0<name>\0…`, the last chunk ending in an
 * extra NUL. If the generation changes between chunks the directory changed: start over
 * (xs.c `xs_directory_part`).
 */
async function directoryInParts(req: (op: XsOp, payload: Buffer) => Promise<Buffer>, path: string): Promise<string[]> {
  for (let restart = 0; restart < 16; restart++) {
    const chunks: Buffer[] = [];
    let offset = 0;
    let gen: string | undefined;
    for (;;) {
      const reply = await req("DIRECTORY_PART", nulTerminated(path, String(offset)));
      const nul = reply.indexOf(0);
      if (nul < 0) throw new VmstackError("XS_PROTOCOL", `xenstore DIRECTORY_PART ${path}: reply without a generation`, { facts: { path } });
      const g = reply.toString("latin1", 0, nul);
      if (gen === undefined) gen = g;
      else if (g !== gen) break;
      const rest = reply.subarray(nul + 1);
      const last = rest.length === 0 || (rest.length >= 1 && rest[rest.length - 1] === 0 && (rest.length === 1 || rest[rest.length - 2] === 0));
      if (last) {
        chunks.push(rest.subarray(0, Math.max(0, rest.length - 1)));
        return splitNul(Buffer.concat(chunks));
      }
      chunks.push(rest);
      offset += rest.length;
    }
  }
  throw new XsError("EAGAIN", `xenstore DIRECTORY_PART ${path}: directory kept changing while being read`, { path });
}

/** A transaction: the node operations with its tx_id, then commit or abort exactly once. */
export class XenstoreTransaction extends NodeOps {
  readonly id: number;
  readonly #client: XenstoreClient;
  readonly #epoch: number;
  #ended = false;

  constructor(client: XenstoreClient, id: number, epoch: number) {
    super();
    this.id = id;
    this.#client = client;
    this.#epoch = epoch;
  }

  protected nodeRequest(op: XsOp, payload: Buffer, path: string, signal: AbortSignal | undefined): Promise<Buffer> {
    if (this.#ended) return Promise.reject(new VmstackError("XS_TX_ENDED", `xenstore transaction ${this.id} has already ended`, { facts: { txId: this.id } }));
    // The id means nothing to a new connection (it could even name someone else's transaction).
    if (this.#client.epoch !== this.#epoch) return Promise.reject(disconnected("TRANSACTION", undefined));
    return this.#client.request(op, payload, this.id, path, signal);
  }

  /** Commit; throws XsError EAGAIN on a conflict (nothing was applied). */
  async commit(opts: RequestOptions = {}): Promise<void> {
    await this.#end(true, opts);
  }

  /** Abort: nothing is applied and no watch fires. */
  async abort(opts: RequestOptions = {}): Promise<void> {
    await this.#end(false, opts);
  }

  async #end(commit: boolean, opts: RequestOptions): Promise<void> {
    if (this.#client.epoch !== this.#epoch) {
      this.#ended = true;
      throw disconnected("TRANSACTION_END", undefined);
    }
    if (this.#ended) throw new VmstackError("XS_TX_ENDED", `xenstore transaction ${this.id} has already ended`, { facts: { txId: this.id } });
    this.#ended = true;
    await this.#client.request("TRANSACTION_END", nulTerminated(commit ? "T" : "F"), this.id, undefined, opts.signal);
  }
}

export interface TreeEntry {
  readonly path: string;
  /** Depth below the starting node (0 = the node itself). */
  readonly depth: number;
  readonly value: Buffer;
  readonly perms?: PermEntry[];
}

/**
 * Every node at and below `path`, parents before children, children in the daemon's order
 * (like `xenstore-ls`). Iterative, with an explicit stack, so deep trees cannot exhaust the
 * call stack (XSA-418's lesson applies to clients too). Nodes removed while walking are skipped.
 */
export async function* walkTree(ops: XenstoreOps, path: string, opts: RequestOptions & { perms?: boolean } = {}): AsyncGenerator<TreeEntry> {
  const stack: { path: string; depth: number }[] = [{ path, depth: 0 }];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    let value: Buffer;
    let children: string[];
    let perms: PermEntry[] | undefined;
    try {
      [value, children, perms] = await Promise.all([
        ops.readBytes(next.path, opts),
        ops.directory(next.path, opts),
        opts.perms === true ? ops.getPerms(next.path, opts) : Promise.resolve(undefined),
      ]);
    } catch (e) {
      if (e instanceof XsError && e.errno === "ENOENT" && next.depth > 0) continue;
      throw e;
    }
    yield { path: next.path, depth: next.depth, value, ...(perms === undefined ? {} : { perms }) };
    const base = next.path.endsWith("/") ? next.path : next.path + "/";
    for (let i = children.length - 1; i >= 0; i--) stack.push({ path: base + (children[i] ?? ""), depth: next.depth + 1 });
  }
}

/** Op numbers, re-exported for callers building raw requests. */
export const XENSTORE_OPS = XS_OPS;

export interface WatchEvent {
  /** The node that changed (relative if the watch path was relative), or the watch path itself for the initial event. */
  readonly path: string;
  readonly token: string;
}

export interface WatchOptions {
  /** The token sent to the daemon (default: unique per client). */
  readonly token?: string;
  /**
   * Events kept while nobody reads them (default 4096). Beyond that the oldest are dropped and
   * counted in `dropped`: an event only says "look again", so a reader that fell behind re-reads.
   */
  readonly maxQueued?: number;
}

/**
 * One registered watch as an async iterator of events. Events are queued from the moment the
 * WATCH request is sent, so the daemon may deliver them before or after its reply.
 */
export class XenstoreWatch implements AsyncIterable<WatchEvent> {
  readonly path: string;
  readonly token: string;
  /** Events discarded because the queue was full. */
  dropped = 0;
  /** @internal The daemon accepted it (a watch still being set up is not re-sent on reconnect). */
  _registered = false;
  readonly #queue: string[] = [];
  readonly #max: number;
  #waiter: { resolve(r: IteratorResult<WatchEvent>): void; reject(e: unknown): void } | undefined;
  #done = false;
  #error: unknown;
  readonly #unwatch: (w: XenstoreWatch) => Promise<void>;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => {
    this._end(this.#signal?.reason);
    void this.#unwatch(this);
  };

  constructor(path: string, token: string, opts: WatchOptions & RequestOptions, unwatch: (w: XenstoreWatch) => Promise<void>) {
    this.path = path;
    this.token = token;
    this.#max = Math.max(1, opts.maxQueued ?? 4096);
    this.#unwatch = unwatch;
    this.#signal = opts.signal;
    this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** @internal The client delivers an event. */
  _push(path: string): void {
    if (this.#done) return;
    const w = this.#waiter;
    if (w !== undefined) {
      this.#waiter = undefined;
      w.resolve({ done: false, value: { path, token: this.token } });
      return;
    }
    if (this.#queue.length >= this.#max) {
      this.#queue.shift();
      this.dropped++;
    }
    this.#queue.push(path);
  }

  /** @internal No more events: the watch was closed (error undefined) or the connection failed. */
  _end(error: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    const w = this.#waiter;
    this.#waiter = undefined;
    if (w === undefined) return;
    if (error === undefined) w.resolve({ done: true, value: undefined });
    else w.reject(error);
  }

  /** The next event; waits. Resolves done when the watch ended; rejects if it failed. */
  next(): Promise<IteratorResult<WatchEvent>> {
    const path = this.#queue.shift();
    if (path !== undefined) return Promise.resolve({ done: false, value: { path, token: this.token } });
    if (this.#done) {
      return this.#error === undefined ? Promise.resolve({ done: true, value: undefined }) : Promise.reject(this.#error);
    }
    if (this.#waiter !== undefined) return Promise.reject(new VmstackError("XS_WATCH_BUSY", `xenstore watch ${this.path}: next() called while another next() waits`));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Events already received and not yet read (does not wait). */
  drain(): WatchEvent[] {
    return this.#queue.splice(0).map((path) => ({ path, token: this.token }));
  }

  /** Stop watching (UNWATCH) and end the iteration. */
  async close(): Promise<void> {
    this._end(undefined);
    await this.#unwatch(this);
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return {
      next: () => this.next(),
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }
}
