/** A xenstore transaction on vmstack's client (client.ts has the overview). */
import { VmstackError } from "../lib/errors.js";
import type { XsOp } from "./protocol.js";
import { nulTerminated } from "./wire.js";
import { NodeOps, disconnected, type RequestOptions } from "./client-node-ops.js";

/** What a transaction needs of its client: the connection epoch and a way to send. */
export interface TransactionHost {
  /** Increases at each reconnect: a transaction id means nothing on a new connection. */
  readonly epoch: number;
  request(op: XsOp, payload: Buffer, txId: number, path: string | undefined, signal: AbortSignal | undefined): Promise<Buffer>;
}

/** A transaction: the node operations with its tx_id, then commit or abort exactly once. */
export class XenstoreTransaction extends NodeOps {
  readonly id: number;
  readonly #client: TransactionHost;
  readonly #epoch: number;
  #ended = false;

  constructor(client: TransactionHost, id: number, epoch: number) {
    super();
    this.id = id;
    this.#client = client;
    this.#epoch = epoch;
  }

  protected nodeRequest(op: XsOp, payload: Buffer, path: string, signal: AbortSignal | undefined): Promise<Buffer> {
    if (this.#ended) return Promise.reject(new VmstackError("XS_TX_ENDED", `xenstore transaction ${this.id} has already ended`, { facts: { txId: this.id } }));
    // The id means nothing to a new connection (it could even name someone else's transaction).
    if (this.#client.epoch !== this.#epoch) return Promise.reject(disconnected("TRANSACTION", undefined));
    return this.#client.request(op, payload, this.id, path, signal);
  }

  /** Commit; throws XsError EAGAIN on a conflict (nothing was applied). */
  async commit(opts: RequestOptions = {}): Promise<void> {
    await this.#end(true, opts);
  }

  /** Abort: nothing is applied and no watch fires. */
  async abort(opts: RequestOptions = {}): Promise<void> {
    await this.#end(false, opts);
  }

  async #end(commit: boolean, opts: RequestOptions): Promise<void> {
    if (this.#client.epoch !== this.#epoch) {
      this.#ended = true;
      throw disconnected("TRANSACTION_END", undefined);
    }
    if (this.#ended) throw new VmstackError("XS_TX_ENDED", `xenstore transaction ${this.id} has already ended`, { facts: { txId: this.id } });
    this.#ended = true;
    await this.#client.request("TRANSACTION_END", nulTerminated(commit ? "T" : "F"), this.id, undefined, opts.signal);
  }
}
