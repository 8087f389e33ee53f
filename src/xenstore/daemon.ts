/**
 * The xenstored core: the store, domains, connections, watches, transactions and the journal,
 * tied together. Transports (server.ts for the Unix socket, `openConnection` for in-process
 * endpoints) only move bytes; every request goes through dispatch.ts.
 */
import type { Duplex } from "node:stream";
import { log } from "../lib/log.js";
import { Connection, type ConnectionHost, type ConnectionOptions } from "./connection.js";
import { dispatch } from "./dispatch.js";
import { duplexPair } from "./duplex-pair.js";
import { xsError } from "./errors.js";
import { TreeView, type Applied, type OpEnv } from "./operations.js";
import { DEFAULT_PERMS, withoutDomid, type Perms } from "./permissions.js";
import { Journal, loadState } from "./persist.js";
import { lockStateDir, type StateLock } from "./state-lock.js";
import { DEFAULT_QUOTAS, DEFAULT_WRITE_RATE, TokenBucket, type Quotas, type WriteRate } from "./quota.js";
import { countByOwner, kidEntries, makeNode, type XsNode } from "./store.js";
import { Transaction } from "./transaction.js";
import { WatchRegistry } from "./watch.js";
import type { XsMessage } from "./wire.js";
import { DOMID_MAX } from "./protocol.js";

/**
 * How far a change goes before its reply (persist.ts has the details). "write": into the kernel
 * (survives the daemon being killed), fdatasync'd within SYNC_INTERVAL_MS; "fsync": on disk.
 * "write" is the default because xenstore describes running domains: a power loss that could eat
 * the last second of it also ends every domain it describes, while an fsync per reply costs ~3x
 * the throughput of a client with one request in flight (docs/xenstored.md has the figures).
 */
export type Durability = "write" | "fsync";
export const DURABILITIES: readonly Durability[] = ["write", "fsync"];
/** Longest time a written journal record waits for its fdatasync in "write" mode. */
export const SYNC_INTERVAL_MS = 1000;

export interface XenstoredOptions {
  /** Where the journal and snapshots live; omit for an in-memory daemon (nothing persists). */
  readonly stateDir?: string;
  /** With a state directory: what a reply waits for (default "write"). */
  readonly durability?: Durability;
  /** Bytes of journal reserved and mapped at a time (default JOURNAL_CHUNK; a multiple of the page size). */
  readonly journalChunk?: number;
  /**
   * Take the state directory's lock (default true: state-lock.ts). The warm-up's throwaway
   * instance, whose scratch directory lies inside its daemon's locked one, takes none.
   */
  readonly lock?: boolean;
  /** Overrides of the C daemon's default quotas for unprivileged domains. */
  readonly quotas?: Partial<Quotas>;
  /** Bytes of unread output a connection may accumulate before its watch events are dropped. */
  readonly eventQueueBytes?: number;
  /** Rate of modifying requests per unprivileged domain (XSA-206). */
  readonly writeRate?: WriteRate;
  /** Clock in milliseconds (tests inject one). */
  readonly now?: () => number;
  /**
   * Called once if the journal cannot be written (disk full, I/O error). The daemon has then
   * closed every connection WITHOUT sending the replies that waited for the journal — nothing
   * unrecorded is ever acknowledged — and accepts nothing more. The owner should exit.
   */
  readonly onFatal?: (error: unknown) => void;
}

interface DomainState {
  bucket: TokenBucket;
  target: number | undefined;
  features: number;
  quotas: Partial<Quotas>;
  /** The global quotas with `quotas` over them (every request asks; made once per change). */
  effective: Quotas | undefined;
}

export type SpecialName = "@introduceDomain" | "@releaseDomain";

export class Xenstored implements ConnectionHost, OpEnv {
  root: XsNode;
  #quotas: Quotas;
  readonly watches = new WatchRegistry();
  readonly connections = new Set<Connection>();
  readonly specialPerms = new Map<SpecialName, Perms>([
    ["@introduceDomain", DEFAULT_PERMS],
    ["@releaseDomain", DEFAULT_PERMS],
  ]);
  /** Lines describing what loading the state directory found (and dropped). */
  readonly loadReport: readonly string[];

  readonly #domains = new Map<number, DomainState>();
  readonly #owned: Map<number, number>;
  readonly #held = new Set<Connection>();
  readonly #eventQueueBytes: number;
  readonly #writeRate: WriteRate;
  readonly #now: () => number;
  readonly #onFatal: ((e: unknown) => void) | undefined;
  #journal: Journal | undefined;
  #gen = 1;
  #txCounter = 0;
  #connCounter = 0;
  #flushScheduled = false;
  #syncTimer: NodeJS.Timeout | undefined;
  readonly #durability: Durability;
  #closed = false;
  /** The state directory's lock (state-lock.ts), while this daemon keeps one. */
  #lock: StateLock | undefined;

  constructor(opts: XenstoredOptions = {}) {
    this.#quotas = { ...DEFAULT_QUOTAS, ...opts.quotas };
    this.#eventQueueBytes = opts.eventQueueBytes ?? 1024 * 1024;
    this.#writeRate = opts.writeRate ?? DEFAULT_WRITE_RATE;
    this.#now = opts.now ?? (() => performance.now());
    this.#onFatal = opts.onFatal;
    this.#durability = opts.durability ?? "write";
    if (opts.stateDir !== undefined) {
      if (opts.lock !== false) this.#lock = lockStateDir(opts.stateDir);
      try {
        const loaded = loadState(opts.stateDir);
        this.root = loaded.root;
        this.loadReport = loaded.report;
        this.#gen = loaded.maxSeq + 1; // new children sort after loaded ones
        for (const line of loaded.report) log(loaded.dropped.length > 0 ? "warn" : "info", "xenstored", line);
        // A new journal epoch; after damage, a snapshot at once so the damage never survives.
        this.#journal = Journal.startFrom(opts.stateDir, this.root, loaded, { direct: this.#durability === "write", ...(opts.journalChunk === undefined ? {} : { chunk: opts.journalChunk }) });
        this.#owned = loaded.owners;
        this.#ensureBaseNodes();
      } catch (e) {
        // Nothing was acknowledged: leave the directory as it is, free for the next start.
        this.#journal?.abandon();
        this.#journal = undefined;
        this.#lock?.release();
        throw e;
      }
    } else {
      this.root = makeNode("", DEFAULT_PERMS, 0);
      this.loadReport = [];
      this.#owned = countByOwner(this.root);
      this.#ensureBaseNodes();
    }
  }

  /** `/tool/xenstored` is the only node the C daemon creates at start (notes §1.4). Journaled. */
  #ensureBaseNodes(): void {
    const v = new TreeView(this.root, { domid: 0, privileged: true }, this.quotas, this);
    if (v.mkdir("/tool/xenstored")) {
      this.adopt(v);
      this.#journal?.flush();
    }
  }

  // ---- domains ----

  isIntroduced(domid: number): boolean {
    return domid === 0 || this.#domains.has(domid);
  }

  /** The quotas of domains without overrides of their own. */
  get quotas(): Quotas {
    return this.#quotas;
  }

  set quotas(q: Quotas) {
    this.#quotas = q;
    for (const d of this.#domains.values()) d.effective = undefined;
  }

  quotasFor(domid: number): Quotas {
    const d = this.#domains.get(domid);
    if (d === undefined) return this.#quotas;
    d.effective ??= { ...this.#quotas, ...d.quotas };
    return d.effective;
  }

  setDomainQuota(domid: number, name: keyof Quotas, value: number): void {
    const d = this.#domain(domid);
    d.quotas = { ...d.quotas, [name]: value };
    d.effective = undefined;
  }

  domainFeatures(domid: number): number {
    return this.#domain(domid).features;
  }

  setDomainFeatures(domid: number, features: number): void {
    this.#domain(domid).features = features;
  }

  #domain(domid: number): DomainState {
    const d = this.#domains.get(domid);
    if (d === undefined) throw xsError("ENOENT", `domain ${domid} is not introduced`, { domid });
    return d;
  }

  /** INTRODUCE: a domain exists from now on; fires @introduceDomain the first time. */
  introduce(domid: number): void {
    if (domid < 0 || domid > DOMID_MAX) throw xsError("EINVAL", `bad domid ${domid}`, { domid });
    if (domid === 0 || this.#domains.has(domid)) return;
    this.#domains.set(domid, { bucket: new TokenBucket(this.#writeRate, this.#now()), target: undefined, features: 0, quotas: {}, effective: undefined });
    this.watches.fireSpecial("@introduceDomain", domid, this.specialPerms.get("@introduceDomain")!);
  }

  /**
   * RELEASE: the domain is gone. Its connections close, the nodes it owns are deleted and every
   * ACL entry naming it is dropped (XSA-322/XSA-419, so a reused domid inherits nothing), its
   * quota counters reset (XSA-483), and @releaseDomain fires.
   */
  release(domid: number): void {
    if (domid === 0) throw xsError("EINVAL", "cannot release dom0");
    if (!this.#domains.has(domid)) throw xsError("ENOENT", `domain ${domid} is not introduced`, { domid });
    for (const c of [...this.connections]) if (c.domid === domid) c.close(`domain ${domid} released`);
    const owned: string[] = [];
    const acl: [string, Perms][] = [];
    const stack: [string, XsNode][] = [["/", this.root]];
    while (stack.length > 0) {
      const [p, n] = stack.pop()!;
      if (p !== "/" && n.perms[0]?.domid === domid) {
        owned.push(p);
        continue;
      }
      const stripped = withoutDomid(n.perms, domid);
      if (stripped !== undefined) acl.push([p, stripped]);
      for (const [k, c] of kidEntries(n.kids)) stack.push([p === "/" ? `/${k}` : `${p}/${k}`, c]);
    }
    const v = new TreeView(this.root, { domid: 0, privileged: true }, this.quotas, this);
    for (const p of owned) v.rm(p);
    for (const [p, perms] of acl) v.setPerms(p, perms);
    this.adopt(v);
    this.#owned.delete(domid);
    for (const c of this.connections) if (c.target === domid) c.target = undefined;
    for (const d of this.#domains.values()) if (d.target === domid) d.target = undefined;
    this.#domains.delete(domid);
    this.watches.fireSpecial("@releaseDomain", domid, this.specialPerms.get("@releaseDomain")!);
  }

  setTarget(domid: number, target: number): void {
    const d = this.#domain(domid);
    if (!this.isIntroduced(target)) throw xsError("ENOENT", `domain ${target} is not introduced`, { domid: target });
    d.target = target;
    for (const c of this.connections) if (c.domid === domid) c.target = target;
  }

  resume(domid: number): void {
    this.#domain(domid);
  }

  // ---- connections ----

  /**
   * An in-process connection bound to `domid`, speaking the wire protocol: the toolstack pipes a
   * guest's xenstore channel into it. dom0 is privileged (like a socket connection); any other
   * domid gets unprivileged semantics (permission checks, quotas) and is introduced if needed.
   */
  openConnection(opts: { domid: number }): Duplex {
    const [client, server] = duplexPair();
    this.attach(server, opts.domid, `domain ${opts.domid} connection`);
    return client;
  }

  /** Attach a transport (socket or stream) as a connection of `domid`; `io` is the socket server's native I/O. */
  attach(transport: Duplex, domid: number, label: string, io: Pick<ConnectionOptions, "afterInput" | "write" | "flow"> = {}): Connection {
    if (this.#closed) {
      transport.destroy();
      throw xsError("EIO", "xenstored is closed");
    }
    if (!Number.isInteger(domid) || domid < 0 || domid > DOMID_MAX) throw xsError("EINVAL", `bad domid ${domid}`, { domid });
    this.introduce(domid);
    const q = this.quotasFor(domid);
    const conn = new Connection(this, transport, {
      id: ++this.#connCounter,
      domid,
      privileged: domid === 0,
      outstanding: q.outstanding,
      eventQueueBytes: this.#eventQueueBytes,
      label: `${label} #${this.#connCounter}`,
      ...io,
    });
    conn.target = this.#domains.get(domid)?.target;
    this.connections.add(conn);
    return conn;
  }

  handle(conn: Connection, msg: XsMessage): void {
    dispatch(this, conn, msg);
  }

  writeDelay(conn: Connection): number {
    const d = this.#domains.get(conn.domid);
    return d === undefined ? 0 : d.bucket.take(this.#now());
  }

  closed(conn: Connection): void {
    this.connections.delete(conn);
    this.#held.delete(conn);
    this.dropConnectionState(conn);
  }

  /** Forget a connection's watches and transactions (close, RESET_WATCHES; XSA-330/484: idempotent). */
  dropConnectionState(conn: Connection, keepTransactions = false): void {
    for (const w of conn.watches.values()) this.watches.remove(w);
    conn.watches.clear();
    if (!keepTransactions) conn.transactions.clear();
  }

  // ---- transactions ----

  startTransaction(conn: Connection): Transaction {
    do this.#txCounter = (this.#txCounter + 1) >>> 0;
    while (this.#txCounter === 0);
    const tx = new Transaction(this.#txCounter, this.root, conn.accessor, this.quotasFor(conn.domid), this);
    conn.transactions.set(tx.id, tx);
    return tx;
  }

  commitTransaction(tx: Transaction): void {
    this.adopt(tx.commit(this.root, this));
  }

  /** Make a set of changes current: new root, accounting, journal, then watch events. */
  adopt(a: Applied): void {
    if (a.root === this.root && a.changes.length === 0) return;
    this.root = a.root;
    a.ownerDelta.addTo(this.#owned);
    const j = this.#journal;
    if (j !== undefined && a.journal.length > 0) {
      j.append(a.journal);
      // Records encoded straight into the mapped file are written: nothing is held for them.
      if (!j.dirty) this.#written(j);
    }
    for (const c of a.changes) this.watches.fire(c);
  }

  // The daemon is its views' OpEnv itself. (It was an object of two arrow functions, a pair per
  // instance: the warm-up's throwaway instance called other closures than the daemon's, and
  // optimised code that had inlined the one deoptimised on the other, "wrong call target".)
  nodesOwned(domid: number): number {
    return this.#owned.get(domid) ?? 0;
  }

  nextGen(): number {
    return this.#gen++;
  }

  // ---- durability gate ----

  outputHeld(): boolean {
    return this.#journal?.dirty ?? false;
  }

  flushNow(): boolean {
    if (this.#durability !== "write") return !this.outputHeld();
    this.flushJournal(false);
    return !this.outputHeld();
  }

  noteHeld(conn: Connection): void {
    this.#held.add(conn);
    this.#scheduleFlush();
  }

  batchDone(): void {
    // "write": a write(2) is cheap, so the end of a connection's batch flushes at once and its
    // replies go out in the same turn (a microtask hop here measurably slows a client with one
    // request in flight). "fsync" waits for the rest of the poll phase (group commit).
    if (this.#durability === "write" && (this.#journal?.dirty ?? false)) {
      this.flushJournal(false);
      return;
    }
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || !(this.#journal?.dirty ?? false)) {
      if (!this.#flushScheduled && this.#held.size > 0) this.#release();
      return;
    }
    this.#flushScheduled = true;
    const run = (): void => {
      this.#flushScheduled = false;
      this.flushJournal(this.#durability === "fsync");
    };
    // "fsync": setImmediate, so every connection whose data arrived in this poll phase is handled
    // first and one fsync covers all of them (group commit). "write": frames held outside a
    // connection's batch (events for watchers of an in-process write) go out in a microtask.
    if (this.#durability === "fsync") setImmediate(run);
    else queueMicrotask(run);
  }

  /** Write the journal (and, with `sync`, fdatasync it), then send the frames that waited. */
  flushJournal(sync = true): void {
    const j = this.#journal;
    if (j !== undefined && !this.#closed) {
      try {
        j.flush(sync);
      } catch (e) {
        this.#fatal(e);
        return;
      }
      if (!this.#written(j)) return;
    }
    this.#release();
  }

  /** After records were written: compact if due, and have them fdatasync'd within the interval. False after a fatal error. */
  #written(j: Journal): boolean {
    try {
      if (j.wantsCompaction()) this.#beginCompaction(j);
    } catch (e) {
      this.#fatal(e);
      return false;
    }
    if (j.unsynced) this.#scheduleSync();
    return true;
  }

  /** Compact in the background (Journal.beginCompaction); a failure is fatal, as a journal write's. */
  #beginCompaction(j: Journal): void {
    j.beginCompaction(this.root, (e) => this.#failedLater(j, "compacting", e), { repliesWaitForSync: this.#durability === "fsync" });
  }

  /** An error from disk work off the event loop: fatal for the journal in use, else only logged. */
  #failedLater(j: Journal, what: string, e: Error): void {
    if (!this.#closed && this.#journal === j) this.#fatal(e);
    else log("error", "xenstored", `${what} ${j.dir} after the journal was closed: ${e.message} (what was acknowledged may not be on disk)`);
  }

  #scheduleSync(): void {
    if (this.#syncTimer !== undefined) return;
    this.#syncTimer = setTimeout(() => {
      this.#syncTimer = undefined;
      if (this.#closed) return;
      const j = this.#journal;
      // On the thread pool: a blocking fdatasync stalled every client for a few ms a second.
      j?.syncInBackground((e) => {
        if (e !== null) this.#failedLater(j, "syncing the journal in", e);
      });
    }, SYNC_INTERVAL_MS);
    // A pending sync must not keep a finished process alive; close() syncs anyway.
    this.#syncTimer.unref();
  }

  #fatal(e: unknown): void {
    log("error", "xenstored", `cannot write the journal in ${this.#journal?.dir ?? "its state directory"} (${e instanceof Error ? e.message : String(e)}): closing every connection without acknowledging unrecorded changes`);
    this.#closed = true;
    this.#held.clear();
    for (const c of [...this.connections]) c.close("journal failure");
    // Nothing more is written: the directory is free for a successor.
    this.#journal?.abandon();
    this.#journal = undefined;
    this.#lock?.release();
    this.#onFatal?.(e);
  }

  #release(): void {
    if (this.#held.size === 0) return; // the common case: a lone reply went out without waiting
    const conns = [...this.#held];
    this.#held.clear();
    for (const c of conns) c.releaseHeld();
  }

  /** Write a snapshot now and start a new journal epoch (normally automatic, by journal size, and in the background). */
  compact(): void {
    const j = this.#journal;
    try {
      j?.compact(this.root);
    } catch (e) {
      // The journal may be half rotated: nothing more may be written through it.
      this.#fatal(e);
      throw e;
    }
  }

  /**
   * Start a background compaction, as the journal's growth does (CONTROL compact): "started", or
   * why not (no state directory, one under way, or it failed to start: then fatal).
   */
  compactInBackground(): "started" | "in memory" | "under way" | "failed" {
    const j = this.#journal;
    if (j === undefined) return "in memory";
    if (j.compacting) return "under way";
    try {
      this.#beginCompaction(j);
    } catch (e) {
      this.#fatal(e);
      return "failed";
    }
    return "started";
  }

  /** Flush the journal, close every connection, and stop. */
  close(): void {
    if (this.#closed) return;
    this.flushJournal();
    this.#closed = true;
    clearTimeout(this.#syncTimer);
    for (const c of [...this.connections]) c.close("daemon closing");
    this.#journal?.close();
    this.#journal = undefined;
    this.#lock?.release();
  }
}

export function createXenstored(opts: XenstoredOptions = {}): Xenstored {
  return new Xenstored(opts);
}
