/**
 * Little-endian 32-bit integers stored into and read from a Buffer a byte at a time (frames in
 * wire.ts, record headers in persist-records.ts). Buffer's own writeUInt32LE and readUInt32LE were
 * each a generic property load (V8's LoadIC) in optimised code, on the path of every request.
 */

export function getU32(b: Buffer, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

export function putU32(b: Buffer, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}
