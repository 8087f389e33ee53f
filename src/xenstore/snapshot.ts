/**
 * Snapshots: the whole tree as records (persist-records.ts), pre-order, children in creation
 * order (so a reload recreates DIRECTORY order), walked iteratively (XSA-418).
 *
 * A running daemon writes one a slice at a time (SnapshotWriter; Journal.beginCompaction drives
 * it, SNAPSHOT_SLICE nodes per turn of the event loop): the tree is immutable, so the
 * root taken when the compaction starts is the snapshot however the store changes meanwhile, and
 * no request waits for the whole tree. Written at once, 100,000 nodes stalled every client for
 * 140-175 ms here (encoding is most of it; the fsync took 10 ms), each time the journal had grown
 * to twice the snapshot.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";
import { permsText } from "./permissions.js";
import { RecordWriter } from "./persist-records.js";
import { writeAt } from "./journal-file.js";
import { orderedKids, type XsNode } from "./store.js";

/** Nodes of a background snapshot written per turn of the event loop (1.5-2 ms of work here). */
export const SNAPSHOT_SLICE = 1000;

/** The tree's records, resumable: each next() encodes some more into a RecordWriter. */
export class SnapshotWalk {
  readonly #stack: [string, XsNode][];
  #count = 0;
  #ended = false;

  constructor(root: XsNode) {
    this.#stack = [["/", root]];
  }

  /** Encode up to `records` more nodes (and, after the last, the end record); true once the end record is encoded. */
  next(w: RecordWriter, records = Infinity): boolean {
    const stack = this.#stack;
    for (let left = records; left > 0 && stack.length > 0; left--) {
      const [p, n] = stack.pop()!;
      w.put(p, n.value, permsText(n.perms));
      this.#count++;
      if (n.kids !== undefined) {
        const prefix = p === "/" ? "/" : p + "/";
        const kids = orderedKids(n.kids);
        // Pushed in reverse, so they come off the stack in creation order.
        for (let i = kids.length - 1; i >= 0; i--) stack.push([prefix + kids[i]!.key, kids[i]!.node]);
      }
    }
    if (stack.length > 0) return false;
    if (!this.#ended) w.record({ op: "end", count: this.#count });
    this.#ended = true;
    return true;
  }

  get count(): number {
    return this.#count;
  }
}

/**
 * Serialise a tree as snapshot records at once. `emit` gets views into one reused buffer: it must
 * consume (write out or copy) each before returning. Returns the number of nodes.
 */
export function snapshotRecords(root: XsNode, emit: (b: Buffer) => void): number {
  const w = new RecordWriter(1 << 20, emit);
  const walk = new SnapshotWalk(root);
  walk.next(w);
  if (w.length > 0) emit(w.take());
  return walk.count;
}

/**
 * `snapshot-N` written a slice at a time into `snapshot-N.tmp`, then fsync'd (off the event
 * loop) and renamed into place, so the file is complete or absent. Until then the loader ignores
 * it and replays the journals from the previous snapshot on (persist.ts).
 */
export class SnapshotWriter {
  readonly file: string;
  readonly #tmp: string;
  readonly #fd: number;
  readonly #walk: SnapshotWalk;
  readonly #w: RecordWriter;
  #bytes = 0;
  /** open → writing; finishing (an fsync under way) → done, or abandoned from either. */
  #state: "writing" | "finishing" | "done" | "abandoned" = "writing";

  constructor(dir: string, epoch: number, root: XsNode) {
    this.file = path.join(dir, `snapshot-${epoch}`);
    this.#tmp = `${this.file}.tmp`;
    this.#fd = fs.openSync(this.#tmp, "w", 0o600);
    this.#walk = new SnapshotWalk(root);
    this.#w = new RecordWriter(256 * 1024, (b) => this.#write(b));
  }

  #write(b: Buffer): void {
    writeAt(this.#fd, b, this.#bytes);
    this.#bytes += b.length;
  }

  /** Bytes written so far (all of the snapshot once step() returned true). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Encode and write up to `records` more nodes; true when the whole snapshot is written. */
  step(records: number): boolean {
    if (this.#state !== "writing") throw new Error(`snapshot ${this.file}: step() while ${this.#state}`);
    const done = this.#walk.next(this.#w, records);
    if (done && this.#w.length > 0) this.#write(this.#w.take());
    return done;
  }

  /**
   * After the last step: fsync on libuv's thread pool, then close and rename into place (the
   * caller fsyncs the directory). `done` is not called if the writer was abandoned meanwhile.
   */
  finish(done: (error: Error | null) => void): void {
    this.#state = "finishing";
    fs.fsync(this.#fd, (e) => {
      if (this.#state === "abandoned") {
        this.#discard();
        return;
      }
      if (e !== null) {
        this.#state = "abandoned";
        this.#discard();
        done(e);
        return;
      }
      try {
        this.#state = "done";
        fs.closeSync(this.#fd);
        fs.renameSync(this.#tmp, this.file);
      } catch (err) {
        this.#state = "abandoned";
        this.#removeTmp();
        done(err as Error);
        return;
      }
      done(null);
    });
  }

  /** After the last step: fsync, close and rename into place now (the caller fsyncs the directory). */
  finishNow(): void {
    try {
      fs.fsyncSync(this.#fd);
    } catch (e) {
      this.abandon();
      throw e;
    }
    this.#state = "done";
    fs.closeSync(this.#fd);
    fs.renameSync(this.#tmp, this.file);
  }

  /** Stop and remove the temporary file (at once, or when an fsync under way returns). */
  abandon(): void {
    const was = this.#state;
    if (was === "done" || was === "abandoned") return;
    this.#state = "abandoned";
    // An fsync on the pool still holds the descriptor: its callback closes it (closing it here
    // could hand the number to another file while that fsync runs).
    if (was === "writing") this.#discard();
  }

  /** Close and remove; never throws (it runs in fs callbacks). */
  #discard(): void {
    try {
      fs.closeSync(this.#fd);
    } catch (e) {
      log("warn", "xenstored", `closing the abandoned ${this.#tmp}: ${messageOf(e)}`);
    }
    this.#removeTmp();
  }

  #removeTmp(): void {
    try {
      fs.rmSync(this.#tmp, { force: true });
    } catch (e) {
      // Nothing depends on the abandoned file: the next compaction removes what is left.
      log("warn", "xenstored", `removing the abandoned ${this.#tmp}: ${messageOf(e)}`);
    }
  }
}
