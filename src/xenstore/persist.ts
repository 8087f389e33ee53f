/**
 * Durability: an append-only journal plus periodic snapshots in a state directory.
 *
 * Every acknowledged change is on disk before its reply: the daemon appends the journal records
 * of a request, holds every outgoing frame, and once per event-loop turn writes all records that
 * accumulated (from every connection) and fdatasync()s them ONCE, then releases the frames. So a
 * pipelined client (64 requests in one read) pays one fsync for the lot (group commit).
 *
 * Files (epoch N increases at each compaction):
 *   snapshot-N  the whole tree at the start of epoch N (pre-order; written to a temp file,
 *               fsync'd, renamed, directory fsync'd, so it is either complete or absent)
 *   journal-N   changes since snapshot-N
 * Loading takes the newest snapshot K and replays journal-K, journal-K+1, ... in order (a crash
 * between starting journal-N+1 and finishing snapshot-N+1 leaves snapshot-N + both journals).
 *
 * Record format (both files), little-endian:
 *   magic "XSR1" | u32 body length | u32 crc32(body) | body
 *   body: u8 kind (1 put, 2 del, 3 end-of-snapshot) | u16 path length | path |
 *         put: u16 perms length | perms ("n0 r5") | u32 value length | value bytes
 *         end: u32 number of put records in the snapshot
 * A bad checksum, a bad magic or a truncated tail is skipped by scanning for the next magic whose
 * record checks out; every byte range dropped is reported (file, offset, length, reason). After
 * loading, the daemon compacts at once, so damage never survives into the next epoch.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { crc32 } from "node:zlib";
import { permsText, parsePermsText, DEFAULT_PERMS, type Perms } from "./permissions.js";
import { makeNode, orderedKids, type Kids, type XsNode } from "./store.js";
import type { JournalOp } from "./operations.js";

const MAGIC = 0x31525358; // "XSR1" little-endian
const HEADER = 12;
const KIND_PUT = 1;
const KIND_DEL = 2;
const KIND_END = 3;
const MAX_BODY = 16 * 1024 * 1024;

export function encodeRecord(op: JournalOp | { op: "end"; count: number }): Buffer {
  const p = op.op === "end" ? "" : op.path;
  const pathLen = Buffer.byteLength(p, "latin1");
  let bodyLen = 1 + 2 + pathLen;
  let perms = "";
  if (op.op === "put") {
    perms = permsText(op.perms);
    bodyLen += 2 + perms.length + 4 + op.value.length;
  } else if (op.op === "end") bodyLen += 4;
  const b = Buffer.allocUnsafe(HEADER + bodyLen);
  let o = HEADER;
  b[o++] = op.op === "put" ? KIND_PUT : op.op === "del" ? KIND_DEL : KIND_END;
  b.writeUInt16LE(pathLen, o);
  o += 2;
  o += b.write(p, o, "latin1");
  if (op.op === "put") {
    b.writeUInt16LE(perms.length, o);
    o += 2;
    o += b.write(perms, o, "latin1");
    b.writeUInt32LE(op.value.length, o);
    o += 4;
    o += b.write(op.value, o, "latin1");
  } else if (op.op === "end") {
    b.writeUInt32LE(op.count, o);
    o += 4;
  }
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt32LE(bodyLen, 4);
  b.writeUInt32LE(crc32(b.subarray(HEADER)), 8);
  return b;
}

export type LoadedRecord = JournalOp | { readonly op: "end"; readonly count: number };

export interface Dropped {
  readonly file: string;
  readonly offset: number;
  readonly length: number;
  readonly reason: string;
}

function parseBody(body: Buffer): LoadedRecord | undefined {
  if (body.length < 3) return undefined;
  const kind = body[0];
  const pl = body.readUInt16LE(1);
  let o = 3;
  if (o + pl > body.length) return undefined;
  const p = body.toString("latin1", o, o + pl);
  o += pl;
  if (kind === KIND_DEL) return o === body.length ? { op: "del", path: p } : undefined;
  if (kind === KIND_END) return o + 4 === body.length ? { op: "end", count: body.readUInt32LE(o) } : undefined;
  if (kind !== KIND_PUT || o + 2 > body.length) return undefined;
  const permLen = body.readUInt16LE(o);
  o += 2;
  if (o + permLen + 4 > body.length) return undefined;
  const perms = parsePermsText(body.toString("latin1", o, o + permLen));
  o += permLen;
  const vl = body.readUInt32LE(o);
  o += 4;
  if (perms === undefined || o + vl !== body.length) return undefined;
  return { op: "put", path: p, value: body.toString("latin1", o, o + vl), perms };
}

/** Parse every valid record of a file, skipping damage and reporting exactly what was skipped. */
export function parseRecords(buf: Buffer, file: string): { records: LoadedRecord[]; dropped: Dropped[] } {
  const records: LoadedRecord[] = [];
  const dropped = scanRecords(buf, file, (r) => records.push(r));
  return { records, dropped };
}

/** The streaming form of `parseRecords`: each valid record goes to `onRecord`; returns the drops. */
export function scanRecords(buf: Buffer, file: string, onRecord: (r: LoadedRecord) => void): Dropped[] {
  const dropped: Dropped[] = [];
  let o = 0;
  let badStart = -1;
  let badReason = "";
  const endBad = (at: number): void => {
    if (badStart >= 0) dropped.push({ file, offset: badStart, length: at - badStart, reason: badReason });
    badStart = -1;
  };
  while (o < buf.length) {
    let reason = "";
    if (buf.length - o < HEADER) reason = "truncated record header";
    else if (buf.readUInt32LE(o) !== MAGIC) reason = "bad record magic";
    else {
      const len = buf.readUInt32LE(o + 4);
      if (len > MAX_BODY || o + HEADER + len > buf.length) reason = "truncated record";
      else {
        const body = buf.subarray(o + HEADER, o + HEADER + len);
        if (crc32(body) !== buf.readUInt32LE(o + 8)) reason = "checksum mismatch";
        else {
          const rec = parseBody(body);
          if (rec === undefined) reason = "malformed record";
          else {
            endBad(o);
            onRecord(rec);
            o += HEADER + len;
            continue;
          }
        }
      }
    }
    if (badStart < 0) {
      badStart = o;
      badReason = reason;
    }
    // Resynchronise: the next offset holding the magic.
    const next = buf.indexOf("XSR1", o + 1, "latin1");
    o = next < 0 ? buf.length : next;
  }
  endBad(buf.length);
  return dropped;
}

// ---- the tree while loading: mutable, converted once into the immutable store ----

interface MNode {
  value: string;
  perms: Perms;
  kids: Map<string, MNode> | undefined;
  /** Set while freezing (post-order). */
  expanded?: boolean;
  frozen?: XsNode;
}

export interface LoadResult {
  readonly root: XsNode;
  readonly epoch: number;
  readonly dropped: readonly Dropped[];
  /** Human-readable lines: what was loaded and exactly what was dropped or repaired. */
  readonly report: readonly string[];
  readonly nodes: number;
  /** Nodes per owner domid (quota accounting). */
  readonly owners: Map<number, number>;
  /** Highest child seq used: the daemon's generation counter starts above it. */
  readonly maxSeq: number;
  /** Anything dropped or repaired: the daemon then compacts at once so the damage is gone. */
  readonly damaged: boolean;
  readonly snapshotBytes: number;
  readonly journalBytes: number;
}

/**
 * The tree under construction. Records name full paths; snapshots list nodes in pre-order, so the
 * chain of the last record's ancestors (a stack) almost always holds the next record's parent: a
 * lookup costs a few string compares, with no per-path index to allocate and collect. Records out
 * of that order (journals, damage) walk down from the deepest ancestor on the chain.
 */
class LoadTree {
  readonly root: MNode = { value: "", perms: DEFAULT_PERMS, kids: undefined };
  #chain: [string, MNode][] = [["/", this.root]];

  constructor(private readonly repairs: string[]) {}

  apply(rec: JournalOp): void {
    if (rec.op === "del") this.#del(rec.path);
    else this.#put(rec.path, rec.value, rec.perms);
  }

  /** The node at `p` (creating missing ancestors, reported), leaving the chain ending at it. */
  #reach(p: string, forPath: string): MNode {
    const chain = this.#chain;
    for (;;) {
      const [top, node] = chain[chain.length - 1]!;
      if (top === p) return node;
      if (top === "/" || p.startsWith(top + "/")) {
        // Descend one level towards p.
        const rest = top === "/" ? p.slice(1) : p.slice(top.length + 1);
        const slash = rest.indexOf("/");
        const name = slash < 0 ? rest : rest.slice(0, slash);
        const childPath = top === "/" ? `/${name}` : `${top}/${name}`;
        let c = node.kids?.get(name);
        if (c === undefined) {
          if (childPath !== forPath) this.repairs.push(`recreated missing parent ${childPath} of ${forPath}`);
          c = { value: "", perms: node.perms, kids: undefined };
          (node.kids ??= new Map()).set(name, c);
        }
        chain.push([childPath, c]);
        continue;
      }
      chain.pop();
    }
  }

  #put(p: string, value: string, perms: Perms): void {
    // Fast path (pre-order snapshots): the parent is on the chain.
    const cut = p.lastIndexOf("/");
    const parent = cut === 0 ? "/" : p.slice(0, cut);
    const chain = this.#chain;
    while (chain.length > 1) {
      const top = chain[chain.length - 1]![0];
      if (top === parent || (parent.startsWith(top) && parent.charCodeAt(top.length) === 47)) break;
      chain.pop();
    }
    const [top, pn] = chain[chain.length - 1]!;
    if (top === parent && p !== "/") {
      const name = p.slice(cut + 1);
      let c = pn.kids?.get(name);
      if (c === undefined) {
        c = { value, perms, kids: undefined };
        (pn.kids ??= new Map()).set(name, c);
      } else {
        c.value = value;
        c.perms = perms;
      }
      chain.push([p, c]);
      return;
    }
    const n = this.#reach(p, p);
    n.value = value;
    n.perms = perms;
  }

  #del(p: string): void {
    if (p === "/") return;
    this.#chain = [["/", this.root]];
    let n: MNode | undefined = this.root;
    const segs = p.slice(1).split("/");
    for (let i = 0; i < segs.length - 1 && n !== undefined; i++) n = n.kids?.get(segs[i]!);
    if (n?.kids === undefined) return;
    n.kids.delete(segs[segs.length - 1]!);
    if (n.kids.size === 0) n.kids = undefined;
  }
}

/** Cartesian-tree build of a treap from children already sorted by name: O(n). */
function buildKids(sorted: [string, XsNode, number][]): Kids | undefined {
  type K = { key: string; node: XsNode; prio: number; seq: number; left: K | undefined; right: K | undefined };
  const stack: K[] = [];
  for (const [key, node, seq] of sorted) {
    let h = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    const k: K = { key, node, prio: h >>> 0, seq, left: undefined, right: undefined };
    let last: K | undefined;
    while (stack.length > 0 && stack[stack.length - 1]!.prio < k.prio) last = stack.pop();
    k.left = last;
    if (stack.length > 0) stack[stack.length - 1]!.right = k;
    stack.push(k);
  }
  return stack[0];
}

function freeze(root: MNode): { node: XsNode; count: number; maxSeq: number; owners: Map<number, number> } {
  // Iterative post-order (XSA-418). Children get seq numbers in their Map order, which is the
  // order they were created in the snapshot/journal: DIRECTORY order survives a restart.
  let count = 0;
  let seq = 0;
  const owners = new Map<number, number>();
  const stack: MNode[] = [root];
  while (stack.length > 0) {
    const m = stack[stack.length - 1]!;
    if (m.kids !== undefined && m.expanded !== true) {
      m.expanded = true;
      for (const c of m.kids.values()) stack.push(c);
      continue;
    }
    stack.pop();
    let kids: Kids | undefined;
    if (m.kids !== undefined) {
      const arr: [string, XsNode, number][] = [];
      for (const [name, c] of m.kids) arr.push([name, c.frozen!, ++seq]);
      arr.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      kids = buildKids(arr);
    }
    m.frozen = makeNode(m.value, m.perms, 0, kids);
    const owner = m.perms[0]?.domid ?? 0;
    owners.set(owner, (owners.get(owner) ?? 0) + 1);
    count++;
  }
  return { node: root.frozen!, count, maxSeq: seq, owners };
}

function listEpochs(dir: string, prefix: string): number[] {
  const out: number[] = [];
  for (const f of fs.readdirSync(dir)) {
    const m = new RegExp(`^${prefix}-(\\d+)$`).exec(f);
    if (m) out.push(Number(m[1]));
  }
  return out.sort((a, b) => a - b);
}

/** Load the state directory (created if missing). Never throws on damaged files: it reports. */
export function loadState(dir: string): LoadResult {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const report: string[] = [];
  const dropped: Dropped[] = [];
  const repairs: string[] = [];
  const tree = new LoadTree(repairs);
  const root = tree.root;
  const snaps = listEpochs(dir, "snapshot");
  const base = snaps.length > 0 ? snaps[snaps.length - 1]! : 0;
  let snapshotBytes = 0;
  let journalBytes = 0;
  let incomplete = false;
  if (snaps.length > 0) {
    const file = path.join(dir, `snapshot-${base}`);
    const data = fs.readFileSync(file);
    snapshotBytes = data.length;
    let puts = 0;
    let end: number | undefined;
    dropped.push(
      ...scanRecords(data, file, (rec) => {
        if (rec.op === "end") end = rec.count;
        else {
          tree.apply(rec);
          puts++;
        }
      }),
    );
    if (end === undefined) report.push(`${file}: no end marker; the snapshot is incomplete (${puts} nodes read)`);
    else if (end !== puts) report.push(`${file}: ${end - puts} of ${end} nodes lost to damage`);
    incomplete = end !== puts;
  }
  let replayed = 0;
  const journals = listEpochs(dir, "journal").filter((e) => e >= base);
  for (const e of journals) {
    const file = path.join(dir, `journal-${e}`);
    const data = fs.readFileSync(file);
    journalBytes += data.length;
    dropped.push(
      ...scanRecords(data, file, (rec) => {
        if (rec.op === "end") return;
        tree.apply(rec);
        replayed++;
      }),
    );
  }
  for (const d of dropped) report.push(`${d.file}: dropped ${d.length} bytes at offset ${d.offset} (${d.reason})`);
  report.push(...repairs);
  const frozen = freeze(root);
  const epoch = Math.max(base, journals[journals.length - 1] ?? 0);
  report.unshift(`loaded ${frozen.count} nodes from ${dir} (snapshot ${snaps.length > 0 ? base : "none"}, ${replayed} journal records)`);
  const damaged = dropped.length > 0 || repairs.length > 0 || incomplete;
  return { root: frozen.node, epoch, dropped, report, nodes: frozen.count, owners: frozen.owners, maxSeq: frozen.maxSeq, damaged, snapshotBytes, journalBytes };
}

/** Writes records straight into a large buffer (no per-record allocation); `out` gets full chunks. */
class RecordWriter {
  #buf = Buffer.allocUnsafe(1 << 20);
  #off = 0;

  constructor(private readonly out: (b: Buffer) => void) {}

  #room(n: number): void {
    if (this.#off + n <= this.#buf.length) return;
    this.flush();
    if (n > this.#buf.length) this.#buf = Buffer.allocUnsafe(n);
  }

  put(p: string, value: string, perms: string): void {
    const bodyLen = 1 + 2 + p.length + 2 + perms.length + 4 + value.length;
    this.#room(HEADER + bodyLen);
    const b = this.#buf;
    const start = this.#off;
    let o = start + HEADER;
    b[o++] = KIND_PUT;
    b.writeUInt16LE(p.length, o);
    o += 2;
    o += b.write(p, o, "latin1");
    b.writeUInt16LE(perms.length, o);
    o += 2;
    o += b.write(perms, o, "latin1");
    b.writeUInt32LE(value.length, o);
    o += 4;
    o += b.write(value, o, "latin1");
    b.writeUInt32LE(MAGIC, start);
    b.writeUInt32LE(bodyLen, start + 4);
    b.writeUInt32LE(crc32(b.subarray(start + HEADER, o)), start + 8);
    this.#off = o;
  }

  raw(rec: Buffer): void {
    this.#room(rec.length);
    rec.copy(this.#buf, this.#off);
    this.#off += rec.length;
  }

  flush(): void {
    if (this.#off === 0) return;
    this.out(Buffer.from(this.#buf.subarray(0, this.#off)));
    this.#off = 0;
  }
}

/** Serialise a tree as snapshot records (pre-order, children by name, iteratively). */
export function snapshotRecords(root: XsNode, emit: (b: Buffer) => void): number {
  const w = new RecordWriter(emit);
  let count = 0;
  const stack: [string, XsNode][] = [["/", root]];
  while (stack.length > 0) {
    const [p, n] = stack.pop()!;
    w.put(p, n.value, permsText(n.perms));
    count++;
    // Children in creation order (so a reload recreates DIRECTORY order), pushed in reverse.
    if (n.kids !== undefined) {
      const prefix = p === "/" ? "/" : p + "/";
      const kids = orderedKids(n.kids);
      for (let i = kids.length - 1; i >= 0; i--) stack.push([prefix + kids[i]!.key, kids[i]!.node]);
    }
  }
  w.raw(encodeRecord({ op: "end", count }));
  w.flush();
  return count;
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The journal of one epoch. `append` buffers; `flush` writes and fdatasyncs synchronously. Sync on
 * purpose: the event loop is blocked for one fsync per batch, while the kernel keeps queueing
 * requests, so the next batch is bigger (natural group commit) and no frame can overtake its
 * record.
 */
export class Journal {
  #fd: number;
  #pending: Buffer[] = [];
  #bytes = 0;
  #epoch: number;
  #sinceCompact = 0;
  #lastSnapshotBytes = 0;

  private constructor(
    readonly dir: string,
    epoch: number,
  ) {
    this.#epoch = epoch;
    this.#fd = fs.openSync(path.join(dir, `journal-${epoch}`), "a", 0o600);
  }

  /**
   * Continue after loading: a fresh journal epoch. If the state was damaged, `root` is written as
   * that epoch's snapshot at once (and older files deleted) so the damage is gone for good;
   * otherwise the existing snapshot and journals stay valid (the loader replays every journal from
   * the newest snapshot on) and compaction waits until the journal has grown — a clean restart
   * writes nothing.
   */
  static startFrom(dir: string, root: XsNode, loaded: Pick<LoadResult, "epoch" | "damaged" | "snapshotBytes" | "journalBytes">): Journal {
    const j = new Journal(dir, loaded.epoch + 1);
    if (loaded.damaged) j.#writeSnapshot(root);
    else {
      // Empty journals of earlier epochs hold nothing to replay.
      for (const e of listEpochs(dir, "journal")) {
        const f = path.join(dir, `journal-${e}`);
        if (e < j.#epoch && fs.statSync(f).size === 0) fs.rmSync(f);
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

  append(ops: readonly JournalOp[]): void {
    for (const op of ops) {
      const r = encodeRecord(op);
      this.#pending.push(r);
      this.#bytes += r.length;
    }
  }

  /** Write everything appended so far and make it durable. */
  flush(): void {
    if (this.#pending.length === 0) return;
    const bufs = this.#pending;
    this.#pending = [];
    const total = this.#bytes;
    this.#bytes = 0;
    let written = 0;
    const all = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs, total);
    while (written < all.length) written += fs.writeSync(this.#fd, all, written);
    fs.fdatasyncSync(this.#fd);
    this.#sinceCompact += total;
  }

  /** True when the journal has grown enough that a compaction pays off. */
  wantsCompaction(): boolean {
    return this.#sinceCompact > Math.max(8 * 1024 * 1024, 2 * this.#lastSnapshotBytes);
  }

  /** Rotate to a new epoch whose snapshot is `root` (call with the journal flushed). */
  compact(root: XsNode): void {
    this.flush();
    fs.closeSync(this.#fd);
    this.#epoch++;
    this.#fd = fs.openSync(path.join(this.dir, `journal-${this.#epoch}`), "a", 0o600);
    this.#writeSnapshot(root);
  }

  #writeSnapshot(root: XsNode): void {
    const file = path.join(this.dir, `snapshot-${this.#epoch}`);
    const tmp = `${file}.tmp`;
    const fd = fs.openSync(tmp, "w", 0o600);
    let total = 0;
    try {
      snapshotRecords(root, (b) => {
        let w = 0;
        while (w < b.length) w += fs.writeSync(fd, b, w);
        total += b.length;
      });
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    fs.fsyncSync(this.#fd);
    fsyncDir(this.dir);
    this.#lastSnapshotBytes = total;
    this.#sinceCompact = 0;
    // Older epochs are now redundant.
    for (const f of fs.readdirSync(this.dir)) {
      const m = /^(snapshot|journal)-(\d+)(\.tmp)?$/.exec(f);
      if (m && Number(m[2]) < this.#epoch) fs.rmSync(path.join(this.dir, f), { force: true });
    }
  }

  close(): void {
    this.flush();
    fs.closeSync(this.#fd);
  }
}
