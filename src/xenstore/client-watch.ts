/** A registered xenstore watch as an async iterator (client.ts has the overview). */
import { VmstackError } from "../lib/errors.js";
import type { RequestOptions } from "./client-node-ops.js";

export interface WatchEvent {
  /** The node that changed (relative if the watch path was relative), or the watch path itself for the initial event. */
  readonly path: string;
  readonly token: string;
}

export interface WatchOptions {
  /** The token sent to the daemon (default: unique per client). */
  readonly token?: string;
  /**
   * Events kept while nobody reads them (default 4096). Beyond that the oldest are dropped and
   * counted in `dropped`: an event only says "look again", so a reader that fell behind re-reads.
   */
  readonly maxQueued?: number;
}

/**
 * One registered watch as an async iterator of events. Events are queued from the moment the
 * WATCH request is sent, so the daemon may deliver them before or after its reply.
 */
export class XenstoreWatch implements AsyncIterable<WatchEvent> {
  readonly path: string;
  readonly token: string;
  /** Events discarded because the queue was full. */
  dropped = 0;
  /** @internal The daemon accepted it (a watch still being set up is not re-sent on reconnect). */
  _registered = false;
  readonly #queue: string[] = [];
  readonly #max: number;
  #waiter: { resolve(r: IteratorResult<WatchEvent>): void; reject(e: unknown): void } | undefined;
  #done = false;
  #error: unknown;
  readonly #unwatch: (w: XenstoreWatch) => Promise<void>;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => {
    this._end(this.#signal?.reason);
    void this.#unwatch(this);
  };

  constructor(path: string, token: string, opts: WatchOptions & RequestOptions, unwatch: (w: XenstoreWatch) => Promise<void>) {
    this.path = path;
    this.token = token;
    this.#max = Math.max(1, opts.maxQueued ?? 4096);
    this.#unwatch = unwatch;
    this.#signal = opts.signal;
    this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** @internal The client delivers an event. */
  _push(path: string): void {
    if (this.#done) return;
    const w = this.#waiter;
    if (w !== undefined) {
      this.#waiter = undefined;
      w.resolve({ done: false, value: { path, token: this.token } });
      return;
    }
    if (this.#queue.length >= this.#max) {
      this.#queue.shift();
      this.dropped++;
    }
    this.#queue.push(path);
  }

  /** @internal No more events: the watch was closed (error undefined) or the connection failed. */
  _end(error: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    const w = this.#waiter;
    this.#waiter = undefined;
    if (w === undefined) return;
    if (error === undefined) w.resolve({ done: true, value: undefined });
    else w.reject(error);
  }

  /** The next event; waits. Resolves done when the watch ended; rejects if it failed. */
  next(): Promise<IteratorResult<WatchEvent>> {
    const path = this.#queue.shift();
    if (path !== undefined) return Promise.resolve({ done: false, value: { path, token: this.token } });
    if (this.#done) {
      return this.#error === undefined ? Promise.resolve({ done: true, value: undefined }) : Promise.reject(this.#error);
    }
    if (this.#waiter !== undefined) return Promise.reject(new VmstackError("XS_WATCH_BUSY", `xenstore watch ${this.path}: next() called while another next() waits`));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Events already received and not yet read (does not wait). */
  drain(): WatchEvent[] {
    return this.#queue.splice(0).map((path) => ({ path, token: this.token }));
  }

  /** Stop watching (UNWATCH) and end the iteration. */
  async close(): Promise<void> {
    this._end(undefined);
    await this.#unwatch(this);
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return {
      next: () => this.next(),
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }
}
