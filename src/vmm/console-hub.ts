/**
 * A domain's serial console, shared. QEMU's socket chardev takes one client at a time, so vmstackd
 * is that client and fans the bytes out: to every attached viewer (`vmstack console`, several at
 * once) and to a per-domain log that is rotated by size and outlives the domain. Viewer input
 * goes back to QEMU. A restarted vmstackd reconnects; bytes the guest wrote while no one was
 * connected are lost (QEMU drops them with wait=off rather than stall the guest).
 */
import type { Socket } from "node:net";
import { closeSync, existsSync, fstatSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { retryUntil } from "../lib/retry.js";
import { log } from "../lib/log.js";
import { messageOf } from "../lib/errors.js";
import { connectWhenListening } from "../lib/unix-socket.js";

export interface ConsoleLogOptions {
  readonly path: string;
  /** Rotate when the log passes this size (default 1 MiB). */
  readonly maxBytes?: number;
  /** Rotated generations kept: path.1 … path.N (default 3). */
  readonly keep?: number;
}

/** An append-only log rotated by size: path → path.1 → … → path.keep (dropped). */
export class RotatingLog {
  #fd: number;
  #size: number;
  readonly #max: number;
  readonly #keep: number;
  constructor(readonly options: ConsoleLogOptions) {
    this.#max = options.maxBytes ?? 1 << 20;
    this.#keep = options.keep ?? 3;
    this.#fd = openSync(options.path, "a");
    this.#size = fstatSync(this.#fd).size;
  }
  write(chunk: Buffer): void {
    if (this.#size + chunk.length > this.#max && this.#size > 0) this.#rotate();
    writeSync(this.#fd, chunk);
    this.#size += chunk.length;
  }
  #rotate(): void {
    closeSync(this.#fd);
    const p = this.options.path;
    rmSync(`${p}.${this.#keep}`, { force: true });
    for (let i = this.#keep - 1; i >= 1; i--) if (existsSync(`${p}.${i}`)) renameSync(`${p}.${i}`, `${p}.${i + 1}`);
    renameSync(p, `${p}.1`);
    this.#fd = openSync(p, "a");
    this.#size = 0;
  }
  close(): void {
    closeSync(this.#fd);
  }
}

export class ConsoleHub {
  #qemu: Socket | undefined;
  readonly #viewers = new Set<Socket>();
  readonly #log: RotatingLog;
  #closed = false;
  /** Called on every byte from the guest (e.g. "first console line" timing). */
  onData: ((chunk: Buffer) => void) | undefined;

  private constructor(readonly socketPath: string, logOptions: ConsoleLogOptions, readonly label: string) {
    this.#log = new RotatingLog(logOptions);
  }

  /** Connects to QEMU's console socket (retrying while QEMU starts listening). */
  static async open(socketPath: string, logOptions: ConsoleLogOptions, label: string, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<ConsoleHub> {
    const hub = new ConsoleHub(socketPath, logOptions, label);
    try {
      const s = await retryUntil(() => connectWhenListening(socketPath), { what: `${label}: console socket`, timeoutMs: opts.timeoutMs, signal: opts.signal, initialDelayMs: 5, maxDelayMs: 100 });
      hub.#attach(s);
      return hub;
    } catch (e) {
      hub.#log.close();
      throw e;
    }
  }

  #attach(s: Socket): void {
    this.#qemu = s;
    s.on("data", (c: Buffer) => {
      try {
        this.#log.write(c);
      } catch (e) {
        log("warn", this.label, `console log: ${messageOf(e)}`);
      }
      this.onData?.(c);
      for (const v of this.#viewers) v.write(c);
    });
    s.on("error", (e) => log("debug", this.label, `console socket: ${messageOf(e)}`));
    s.on("close", () => {
      this.#qemu = undefined;
      // QEMU went away: every viewer's session ends with it.
      for (const v of this.#viewers) v.end();
      this.#viewers.clear();
    });
  }

  /** Adds a viewer: its bytes are typed on the console, the console's bytes are written to it. */
  addViewer(v: Socket): void {
    if (this.#closed || !this.#qemu) {
      v.end();
      return;
    }
    this.#viewers.add(v);
    v.on("data", (c: Buffer) => this.#qemu?.write(c));
    const drop = (): void => {
      this.#viewers.delete(v);
    };
    v.on("close", drop);
    v.on("error", drop);
  }

  get viewers(): number {
    return this.#viewers.size;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const v of this.#viewers) v.end();
    this.#viewers.clear();
    this.#qemu?.destroy();
    this.#log.close();
  }
}

