/**
 * The record format of the journal and the snapshots (see persist.ts for the files), little-endian:
 *   magic "XSR1" | u32 body length | u32 crc32(body) | body
 *   body: u8 kind (1 put, 2 del, 3 end-of-snapshot) | u16 path length | path |
 *         put: u16 perms length | perms ("n0 r5") | u32 value length | value bytes
 *         end: u32 number of put records in the snapshot
 * A bad checksum, a bad magic or a truncated tail is skipped by scanning for the next magic whose
 * record checks out; every byte range dropped is reported (file, offset, length, reason).
 */
import { crc32 } from "node:zlib";
import { permsText, parsePermsText } from "./permissions.js";
import { orderedKids, type XsNode } from "./store.js";
import type { JournalOp } from "./operations.js";

export const MAGIC = 0x31525358; // "XSR1" little-endian
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
