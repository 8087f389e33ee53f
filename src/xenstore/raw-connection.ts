/**
 * A minimal frame-level peer for tests and tools: send raw requests over any Duplex and get the
 * replies (in order, as the daemon sends them) and watch events exactly as they arrive. Unlike
 * client.ts it interprets nothing, so tests can check every byte the daemon sends.
 */
import type { Duplex } from "node:stream";
import { FrameDecoder, encodeMessage, type XsMessage } from "./wire.js";
import { XS_OPS, type XsOp } from "./protocol.js";

export interface RawReply {
  readonly op: XsOp;
  readonly payload: Buffer;
  readonly reqId: number;
  readonly txId: number;
  /** The error name if the reply is XS_ERROR. */
  readonly error: string | undefined;
  /** Payload as text, NULs shown as `|` (xenstore.txt notation). */
  readonly text: string;
}

export class RawConnection {
  readonly events: { path: string; token: string }[] = [];
  /** Every frame in arrival order (events included), to check ordering. */
  readonly frames: XsMessage[] = [];
  #decoder = new FrameDecoder();
  #waiters: ((m: XsMessage) => void)[] = [];
  #eventWaiters: (() => void)[] = [];
  #frameWaiters: (() => void)[] = [];
  #closed = false;
  #closeWaiters: (() => void)[] = [];
  #nextReq = 1;

  constructor(readonly stream: Duplex) {
    stream.on("data", (chunk: Buffer) => {
      for (const r of this.#decoder.push(chunk)) {
        if (r.kind !== "message") continue;
        const m = r.message;
        this.frames.push(m);
        for (const w of this.#frameWaiters.splice(0)) w();
        if (m.type === XS_OPS.WATCH_EVENT) {
          const parts = m.payload.toString("utf8").split("\0");
          this.events.push({ path: parts[0] ?? "", token: parts[1] ?? "" });
          for (const w of this.#eventWaiters.splice(0)) w();
        } else this.#waiters.shift()?.(m);
      }
    });
    const onClose = (): void => {
      this.#closed = true;
      for (const w of this.#closeWaiters.splice(0)) w();
    };
    stream.on("close", onClose);
    stream.on("end", onClose);
    stream.on("error", onClose);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Send raw bytes (e.g. a malformed frame). */
  sendBytes(b: Buffer): void {
    this.stream.write(b);
  }

  /** Send one request; resolves with its reply. `payload` strings use `|` for NUL unless `exact`. */
  request(type: XsOp | number, payload: string | Buffer = "", txId = 0): Promise<RawReply> {
    const body = typeof payload === "string" ? Buffer.from(payload.replaceAll("|", "\0"), "utf8") : payload;
    const reqId = this.#nextReq++;
    const p = new Promise<RawReply>((resolve, reject) => {
      if (this.#closed) {
        reject(new Error("connection closed"));
        return;
      }
      const onClose = (): void => reject(new Error("connection closed"));
      this.#closeWaiters.push(onClose);
      this.#waiters.push((m) => {
        const i = this.#closeWaiters.indexOf(onClose);
        if (i >= 0) this.#closeWaiters.splice(i, 1);
        const error = m.type === XS_OPS.ERROR ? m.payload.toString("latin1").replace(/\0$/, "") : undefined;
        resolve({ op: m.op, payload: m.payload, reqId: m.reqId, txId: m.txId, error, text: m.payload.toString("latin1").replaceAll("\0", "|") });
      });
    });
    this.stream.write(encodeMessage({ type, reqId, txId, payload: body }, { maxPayload: Infinity }));
    return p;
  }

  /** Resolves once at least `n` events have arrived in total. */
  async waitEvents(n: number): Promise<void> {
    while (this.events.length < n) await new Promise<void>((r) => this.#eventWaiters.push(r));
  }

  /** Resolves once at least `n` frames (replies to `sendBytes` included) have arrived in total. */
  async waitFrames(n: number): Promise<void> {
    while (this.frames.length < n) await new Promise<void>((r) => this.#frameWaiters.push(r));
  }

  waitClosed(): Promise<void> {
    return this.#closed ? Promise.resolve() : new Promise((r) => this.#closeWaiters.push(r));
  }

  close(): void {
    this.stream.destroy();
  }
}
