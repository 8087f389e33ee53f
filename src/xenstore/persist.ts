/**
 * Durability: an append-only journal plus periodic snapshots in a state directory.
 *
 * Every acknowledged change is in the journal before its reply: the daemon appends the journal
 * records of a request, holds every outgoing frame while records wait to be written, and once
 * per batch writes all records that accumulated (from every connection), then releases the
 * frames. How far "in the journal" goes is the daemon's durability mode (daemon.ts, `Durability`):
 *   "write"  in the page cache before the reply, fdatasync at most SYNC_INTERVAL_MS later.
 *            Where the journal file is mapped (journal-file.ts), a change's records are encoded
 *            straight into the mapping when the change is made, so almost nothing waits (only
 *            a record spanning two chunks, once per MiB, and what follows it in its batch);
 *            otherwise they are written with write(2) at the end of the batch. A
 *            killed or crashed daemon loses nothing acknowledged (the kernel holds the data);
 *            a host power loss may lose the last interval — when every domain the store
 *            describes is gone too.
 *   "fsync"  fdatasync before the reply. A pipelined client (64 requests in one read) pays one
 *            fsync for the lot (group commit), but one request in flight pays one fsync each.
 *
 * Files (epoch N increases at each compaction):
 *   snapshot-N  the whole tree at the start of epoch N (pre-order; written to a temp file,
 *               fsync'd, renamed, directory fsync'd, so it is either complete or absent)
 *   journal-N   changes since snapshot-N
 *   lock        the directory's lock, holding the daemon's pid (state-lock.ts)
 *   .warm-up-*  a warm-up's scratch directory while it runs (warmup.ts); never loaded
 * Loading takes the newest snapshot K and replays journal-K, journal-K+1, ... in order (a crash
 * between starting journal-N+1 and finishing snapshot-N+1 leaves snapshot-N + both journals).
 * A running daemon compacts in the background (beginCompaction; snapshot.ts writes the file a
 * slice at a time), so that window lasts as long as the snapshot takes to write.
 *
 * The record format and its damage handling are in persist-records.ts. A start that found damage
 * writes a fresh snapshot at once, so the damage never survives into the next epoch; a clean start
 * writes nothing and just opens the next journal epoch.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";
import { permsText } from "./permissions.js";
import type { XsNode } from "./store.js";
import type { JournalOp } from "./operations.js";
import { RecordWriter, encodeRecordAt, encodeShortWith, recordSize, shortRecordSize, type ShortEncoder } from "./persist-records.js";
import { listEpochs, type LoadResult } from "./load-state.js";
import { SNAPSHOT_SLICE, SnapshotWriter } from "./snapshot.js";
import { xsio, type XsioAddon } from "./native.js";
import { JOURNAL_CHUNK, onlyZeros, openJournalFile, type JournalFile } from "./journal-file.js";

export { JOURNAL_CHUNK, journalMaps } from "./journal-file.js";

export { encodeRecord, parseRecords, scanRecords, type Dropped, type LoadedRecord } from "./persist-records.js";
export { snapshotRecords } from "./snapshot.js";
export { loadState, type LoadResult } from "./load-state.js";


function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsyncDir on the thread pool; `done` gets the first error. */
function fsyncDirInBackground(dir: string, done: (error: Error | null) => void): void {
  fs.open(dir, "r", (e, fd) => {
    if (e !== null) {
      done(e);
      return;
    }
    fs.fsync(fd, (e2) => fs.close(fd, (e3) => done(e2 ?? e3 ?? null)));
  });
}

export interface JournalOptions {
  /** Bytes reserved and mapped at a time (JOURNAL_CHUNK). */
  readonly chunk?: number;
  /** The native addon (native.ts), or undefined for write(2) only; tests pass stand-ins. */
  readonly addon?: XsioAddon | undefined;
  /**
   * Encode records straight into a mapped journal file as they are appended, so they are in the
   * page cache at once and nothing waits for flush() (durability "write"). Without it, or where
   * the file is not mapped, records wait in memory for flush().
   */
  readonly direct?: boolean;
}

/**
 * The journal of one epoch. `append` buffers (or, `direct`, stores into the mapped file at once);
 * `flush` writes what was buffered and fdatasyncs, synchronously. Sync on
 * purpose: the event loop is blocked for one fsync per batch, while the kernel keeps queueing
 * requests, so the next batch is bigger (natural group commit) and no frame can overtake its
 * record.
 */
export class Journal {
  #file: JournalFile;
  /** Records appended and not yet written (a batch is typically a few KiB). */
  readonly #pending = new RecordWriter(64 * 1024);
  #epoch: number;
  /** False once #file's descriptor was closed (or handed to close()): abandon() leaves it. */
  #fileOpen = true;
  #sinceCompact = 0;
  #lastSnapshotBytes = 0;

  private constructor(
    readonly dir: string,
    epoch: number,
    private readonly opts: JournalOptions,
  ) {
    this.#epoch = epoch;
    this.#file = this.#open();
    this.#encodeShort = this.#addon?.encodeShort;
  }

  get #addon(): XsioAddon | undefined {
    return "addon" in this.opts ? this.opts.addon : xsio;
  }

  #open(): JournalFile {
    const file = path.join(this.dir, `journal-${this.#epoch}`);
    return openJournalFile(file, this.opts.chunk ?? JOURNAL_CHUNK, this.#addon);
  }

  /**
   * Continue after loading: a fresh journal epoch. If the state was damaged, `root` is written as
   * that epoch's snapshot at once (and older files deleted) so the damage is gone for good;
   * otherwise the existing snapshot and journals stay valid (the loader replays every journal from
   * the newest snapshot on) and compaction waits until the journal has grown — a clean restart
   * writes nothing.
   */
  static startFrom(dir: string, root: XsNode, loaded: Pick<LoadResult, "epoch" | "damaged" | "snapshotBytes" | "journalBytes">, opts: JournalOptions = {}): Journal {
    const j = new Journal(dir, loaded.epoch + 1, opts);
    if (loaded.damaged) j.#writeSnapshot(root);
    else {
      // Journals of earlier epochs with nothing to replay: empty, or only the reserve a killed
      // daemon left (so a crash loop cannot pile them up until the next compaction).
      for (const e of listEpochs(dir, "journal")) {
        const f = path.join(dir, `journal-${e}`);
        if (e < j.#epoch && onlyZeros(f)) fs.rmSync(f);
      }
      fsyncDir(dir);
      j.#lastSnapshotBytes = loaded.snapshotBytes;
      j.#sinceCompact = loaded.journalBytes;
    }
    return j;
  }

  get dirty(): boolean {
    return this.#pending.length > 0;
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** Append the records of one change (all but the last are flagged "more follow": persist-records.ts). */
  append(ops: readonly JournalOp[]): void {
    const direct = this.opts.direct === true;
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      const perms = op.op === "put" ? permsText(op.perms) : "";
      const more = i < ops.length - 1;
      // In order: once one record waits in memory (it spans two chunks, or no room), the rest wait behind it.
      if (direct && this.#pending.length === 0 && this.#place(op, perms, more)) continue;
      this.#pending.record(op, perms, more);
    }
  }

  /**
   * The addon's encoder of short plain records, when there is one: in JavaScript their CRC and
   * stores took about a tenth of a one-in-flight write's instructions (native/record.c).
   */
  readonly #encodeShort: ShortEncoder | undefined;

  /** Encode `op` straight into the mapped file; false if it has no place there. */
  #place(op: JournalOp, perms: string, more: boolean): boolean {
    const encoder = this.#encodeShort;
    const short = encoder === undefined ? -1 : shortRecordSize(op, perms);
    if (encoder !== undefined && short > 0) {
      const map = this.#file.place(short);
      if (map === undefined) return false;
      if (encodeShortWith(encoder, map, this.#file.placeAt, op, perms, more) > 0) return this.#placed(short);
      // It holds the magic: masked, by the encoder below (place() reserves nothing until placed()).
    }
    const size = recordSize(op, perms);
    const map = this.#file.place(size);
    if (map === undefined) return false;
    encodeRecordAt(map, this.#file.placeAt, op, perms, more);
    return this.#placed(size);
  }

  #placed(size: number): true {
    this.#file.placed(size);
    this.#sinceCompact += size;
    this.#unsynced = true;
    return true;
  }

  #unsynced = false;

  /** True when written records still wait for their fdatasync. */
  get unsynced(): boolean {
    return this.#unsynced;
  }

  /** Write everything appended so far; `sync` also makes it durable against power loss now. */
  flush(sync = true): void {
    if (this.#pending.length === 0) {
      if (sync) this.sync();
      return;
    }
    const all = this.#pending.take();
    this.#file.append(all);
    this.#sinceCompact += all.length;
    this.#unsynced = true;
    if (sync) this.sync();
  }

  /** fdatasync what has been written (a no-op when nothing waits). */
  sync(): void {
    // Files with one under way on the thread pool (this epoch's, and the one before after a
    // rotation) may not be synced yet: close() must not return first. Their descriptors are open
    // until those return (#closeFile).
    for (const f of this.#syncing.keys()) if (f !== this.#file) fs.fdatasyncSync(f.fd);
    if (!this.#unsynced && !this.#syncing.has(this.#file)) return;
    fs.fdatasyncSync(this.#file.fd);
    this.#unsynced = false;
  }

  /**
   * fdatasync what has been written, on libuv's thread pool (the periodic sync of durability
   * "write": a blocking one stalled every client for a few ms a second under a write load).
   * Records stored meanwhile wait for the next. `done` gets the error, if any.
   */
  syncInBackground(done: (error: Error | null) => void): void {
    if (!this.#unsynced) {
      done(null);
      return;
    }
    this.#unsynced = false;
    this.#fdatasyncOf(this.#file, done);
  }

  /** Files with an fdatasync on the thread pool, and how to close each once the last returns. */
  readonly #syncing = new Map<JournalFile, { count: number; close: (() => void) | undefined }>();

  #fdatasyncOf(file: JournalFile, done: (error: Error | null) => void): void {
    const entry = this.#syncing.get(file) ?? { count: 0, close: undefined };
    entry.count++;
    this.#syncing.set(file, entry);
    fs.fdatasync(file.fd, (e) => {
      let error: Error | null = e;
      if (--entry.count === 0) {
        this.#syncing.delete(file);
        try {
          entry.close?.();
        } catch (err) {
          error ??= err as Error;
        }
      }
      done(error);
    });
  }

  /** Close `file` now, or when its fdatasyncs under way return (the descriptor must outlive them). */
  #closeFile(file: JournalFile, close: () => void = () => file.close()): void {
    const entry = this.#syncing.get(file);
    if (entry === undefined) close();
    else entry.close = close;
  }

  /** True when the journal has grown enough that a compaction pays off (and none is under way). */
  wantsCompaction(): boolean {
    return this.#snapshot === undefined && this.#sinceCompact > Math.max(8 * 1024 * 1024, 2 * this.#lastSnapshotBytes);
  }

  /** A snapshot being written a slice at a time (beginCompaction), if any. */
  #snapshot: SnapshotWriter | undefined;

  get compacting(): boolean {
    return this.#snapshot !== undefined;
  }

  /** Rotate to a new epoch whose snapshot is `root`, written at once. */
  compact(root: XsNode): void {
    this.#rotate();
    this.#writeSnapshot(root);
  }

  /**
   * Rotate to a new epoch and write its snapshot of `root` in the background: SNAPSHOT_SLICE nodes
   * per turn of the event loop, then fsync'd on the thread pool and put in place. Until then a
   * crash leaves the previous snapshot and both journals, which load as well. `failed` gets any
   * error; nothing is called once the compaction was abandoned (close(), abandon(), compact()).
   */
  beginCompaction(root: XsNode, failed: (error: Error) => void, o: { readonly repliesWaitForSync: boolean }): void {
    this.#rotate(o.repliesWaitForSync ? undefined : failed);
    const s = new SnapshotWriter(this.dir, this.#epoch, root);
    this.#snapshot = s;
    const slice = (): void => {
      if (this.#snapshot !== s) return;
      try {
        if (s.step(SNAPSHOT_SLICE)) this.#finish(s, failed);
        else setImmediate(slice);
      } catch (e) {
        failed(e as Error);
      }
    };
    setImmediate(slice);
  }

  /** The written snapshot's fsync, rename and directory fsync, all off the event loop, then the cleanup. */
  #finish(s: SnapshotWriter, failed: (error: Error) => void): void {
    s.finish((e) => {
      if (this.#snapshot !== s) return;
      if (e !== null) {
        this.#snapshot = undefined;
        failed(e);
        return;
      }
      // Older files go only once the rename is durable.
      fsyncDirInBackground(this.dir, (e2) => {
        if (this.#snapshot !== s) return;
        this.#snapshot = undefined;
        try {
          if (e2 !== null) throw e2;
          this.#snapshotWritten(s.bytes, true);
        } catch (err) {
          failed(err as Error);
        }
      });
    });
  }

  /**
   * Flush into this epoch's journal and start the next epoch's (a compaction under way is
   * abandoned). The old journal and the directory are fsync'd now, or `inBackground` on the
   * thread pool, errors to that callback: only a power loss before the new snapshot is in place
   * could need the old journal's last records. Not where replies wait for the disk (durability
   * "fsync"): the batch flushed here may hold records whose replies go once this returns.
   */
  #rotate(inBackground?: (error: Error) => void): void {
    this.#snapshot?.abandon();
    this.#snapshot = undefined;
    this.flush(inBackground === undefined);
    const old = this.#file;
    if (inBackground !== undefined && this.#unsynced) {
      this.#fdatasyncOf(old, (e) => {
        if (e !== null) inBackground(e);
      });
    }
    this.#unsynced = false;
    // Marked closed first: if closing or opening fails, abandon() must not close the number
    // again (it may belong to another file by then).
    this.#fileOpen = false;
    this.#closeFile(old);
    this.#epoch++;
    this.#file = this.#open();
    this.#fileOpen = true;
    this.#sinceCompact = 0;
    // The new journal's name, durable before any reply can depend on a record in it (an
    // fdatasync of the file does not make its directory entry durable).
    if (inBackground === undefined) fsyncDir(this.dir);
    else {
      fsyncDirInBackground(this.dir, (e) => {
        if (e !== null) inBackground(e);
      });
    }
  }

  #writeSnapshot(root: XsNode): void {
    const s = new SnapshotWriter(this.dir, this.#epoch, root);
    try {
      s.step(Infinity);
      s.finishNow();
    } catch (e) {
      s.abandon();
      throw e;
    }
    this.#snapshotWritten(s.bytes, false);
  }

  /** The epoch's snapshot is in place: make that durable and delete what it supersedes. */
  #snapshotWritten(bytes: number, inBackground: boolean): void {
    // The directory's fsync makes the rename durable (#finish's, in the background).
    if (!inBackground) fsyncDir(this.dir);
    this.#lastSnapshotBytes = bytes;
    // Older epochs are now redundant (and a temporary file an abandoned compaction left). In the
    // background, removed off the event loop (unlinking a 10 MB snapshot took 3.7 ms here): until
    // then the loader ignores them, as it ignores everything before the newest snapshot.
    const epoch = this.#epoch;
    for (const f of fs.readdirSync(this.dir)) {
      const m = /^(snapshot|journal)-(\d+)(\.tmp)?$/.exec(f);
      if (!m || Number(m[2]) >= epoch) continue;
      if (!inBackground) fs.rmSync(path.join(this.dir, f), { force: true });
      else {
        fs.rm(path.join(this.dir, f), { force: true }, (e) => {
          if (e !== null) log("warn", "xenstored", `removing ${f}, which the snapshot of epoch ${epoch} replaces: ${messageOf(e)}`);
        });
      }
    }
  }

  close(): void {
    this.#snapshot?.abandon();
    this.#snapshot = undefined;
    this.flush();
    this.#fileOpen = false;
    this.#closeFile(this.#file);
  }

  /** After a failure: close the file and write nothing more (not even the pending records). */
  abandon(): void {
    this.#snapshot?.abandon();
    this.#snapshot = undefined;
    if (!this.#fileOpen) return;
    this.#fileOpen = false;
    const fd = this.#file.fd;
    this.#closeFile(this.#file, () => {
      try {
        fs.closeSync(fd);
      } catch (e) {
        log("warn", "xenstored", `closing the failed journal in ${this.dir}: ${messageOf(e)}`);
      }
    });
  }
}
