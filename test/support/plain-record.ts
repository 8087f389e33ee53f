/**
 * A journal record in the plain format, built field by field (src/xenstore/persist-records.ts's
 * header comment), whatever it holds: what a daemon from before masking wrote for a path or value
 * holding the record magic, or a record today's encoder would never write.
 */
import { crc32 } from "node:zlib";

/** A put (with `perms` text and `value`) or, without them, a del; `path` is taken as latin1. */
export function plainRecord(path: string, perms?: string, value?: Buffer): Buffer {
  const p = Buffer.from(path, "latin1");
  const fields = [Buffer.from([value === undefined ? 2 : 1]), u16(p.length), p];
  if (value !== undefined) fields.push(u16(perms?.length ?? 0), Buffer.from(perms ?? "", "latin1"), u32(value.length), value);
  const body = Buffer.concat(fields);
  return Buffer.concat([Buffer.from("XSR1", "latin1"), u32(body.length), u32(crc32(body)), body]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
