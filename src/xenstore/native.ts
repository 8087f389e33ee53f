/**
 * xenstored's native addon (native/xsio.c, built by `npm run build` into dist/native/xsio.node):
 * socket waits and sends for busy-polling (socket-io.ts), the journal's shared mapping
 * (persist.ts) and the state directory's lock (state-lock.ts). Optional at run time: without it
 * the first two fall back to Node.js's own I/O, and the directory goes unlocked (with a warning).
 */
import { createRequire } from "node:module";

export interface XsioAddon {
  /** poll(2) loop over fds[0..count), reading the first ready one of fds[0..readCount). */
  waitRecv(fds: Int32Array, readCount: number, count: number, buf: Buffer, budgetNs: number, out: Int32Array): number;
  /** 1 if the Unix socket's peer process last ran on this thread's CPU, 0 if not, -1 if unknown. */
  besidePeer(fd: number): number;
  /** send(2) without blocking or SIGPIPE: bytes sent, or -errno. */
  sendNow(fd: number, buf: Buffer): number;
  /** posix_fallocate(3): 0, or -errno. */
  reserve(fd: number, offset: number, length: number): number;
  /** A MAP_SHARED read-write mapping of the file's [offset, offset + length) as a Buffer. */
  mapShared(fd: number, offset: number, length: number): Buffer;
  /** flock(2) LOCK_EX | LOCK_NB: 0, or -errno (EWOULDBLOCK: held by another open file). */
  lockExclusive(fd: number): number;
  /**
   * Watch socket `fd` from the event loop (native/reader.c): its bytes are read into `buf` and
   * `onRead(n)` called, n > 0; 0 when the reader stopped for good and the stream should read;
   * -errno when recv(2) failed.
   */
  readStart(fd: number, buf: Buffer, onRead: (n: number) => void): XsioReader;
  /** Stop watching until readResume (no-op once ended or closed). */
  readPause(r: XsioReader): void;
  /** 0, or libuv's (negative) error when the socket cannot be watched again. */
  readResume(r: XsioReader): number;
  /** Stop and close the reader's duplicate descriptor; idempotent. */
  readClose(r: XsioReader): void;
  /** A short plain journal record (persist-records.ts, ShortEncoder), stored in C. */
  encodeShort(buf: Buffer, at: number, kind: number, path: string, perms?: string, value?: string): number;
}

/** A reader handle from readStart (opaque). */
export type XsioReader = { readonly __xsioReader: unique symbol };

function loadAddon(): { addon: XsioAddon | undefined; why: string } {
  try {
    // dist/src/xenstore/native.js -> dist/native/xsio.node
    const raw = createRequire(import.meta.url)("../../native/xsio.node") as XsioAddon;
    const addon: XsioAddon = {
      ...raw,
      // A Buffer made in C (napi_create_external_buffer) has a hidden class of its own, unlike
      // every Buffer made in JavaScript. Handing it to Buffer methods (writeUInt32LE and the
      // rest, shared with the socket code) deoptimised them ("wrong map" under --trace-deopt),
      // the journal's encoder with them, and left them polymorphic. The same memory, wrapped
      // here as an ordinary Buffer (the backing store, and the munmap when it is collected, are
      // shared), keeps every Buffer in the daemon one shape.
      mapShared: (fd, offset, length) => {
        const b = raw.mapShared(fd, offset, length);
        return Buffer.from(b.buffer, b.byteOffset, b.length);
      },
    };
    return { addon, why: "" };
  } catch (e) {
    return { addon: undefined, why: e instanceof Error ? e.message.split("\n")[0]! : String(e) };
  }
}

const loaded = loadAddon();

/** The addon, undefined when it is not built. */
export const xsio: XsioAddon | undefined = loaded.addon;

/** Why native I/O is unavailable ("" when it is available). */
export const nativeIoUnavailable: string = loaded.addon === undefined ? loaded.why : "";
