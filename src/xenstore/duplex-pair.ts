/**
 * Two connected in-process Duplex streams, like the two ends of a socketpair: what one side writes
 * the other reads. Backpressure is real: a write's callback fires only once the peer has pulled
 * the data, so the writer's `writableLength` grows while the reader does not read — exactly what
 * the daemon's bounded-output logic watches on a real socket.
 */
import { Duplex } from "node:stream";

class End extends Duplex {
  peer!: End;
  #waiting: (() => void) | undefined;

  constructor() {
    // A 1-byte readable high-water mark: every write's callback waits until the reader has taken
    // the data, so "written but unread" is exact (the outstanding-request quota relies on it).
    super({ allowHalfOpen: true, readableHighWaterMark: 1 });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.peer.destroyed) {
      cb(new Error("peer closed"));
      return;
    }
    if (this.peer.push(chunk)) cb();
    else this.peer.#waiting = cb;
  }

  override _read(): void {
    const cb = this.#waiting;
    this.#waiting = undefined;
    cb?.();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const peer = this.peer;
    if (!peer.destroyed) {
      peer.push(null);
      process.nextTick(() => peer.destroy());
    }
    cb(err);
  }
}

export function duplexPair(): [Duplex, Duplex] {
  const a = new End();
  const b = new End();
  a.peer = b;
  b.peer = a;
  return [a, b];
}
