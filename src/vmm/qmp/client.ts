/**
 * A small QMP client over a Unix socket: greeting, capability negotiation, commands matched to
 * replies by id, asynchronous events to listeners and to `waitForEvent`. Every wait takes a
 * deadline and an AbortSignal (house rule 7).
 */
import type { Socket } from "node:net";
import { VmstackError, messageOf } from "../../lib/errors.js";
import { retryUntil } from "../../lib/retry.js";
import { LineSplitter, decodeQmpLine, encodeQmpCommand, type QmpEvent, type QmpGreeting } from "./protocol.js";
import { connectWhenListening } from "../../lib/unix-socket.js";

export interface QmpConnectOptions {
  /** Deadline for the socket to appear and the greeting + qmp_capabilities to complete. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** For messages ("server"). */
  readonly label?: string;
}

export interface QmpCallOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal | undefined;
}

interface Pending {
  readonly command: string;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

export class QmpClient {
  readonly #socket: Socket;
  readonly #label: string;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<(e: QmpEvent) => void>();
  readonly #lines = new LineSplitter();
  #greeting: QmpGreeting | undefined;
  #onGreeting: ((g: QmpGreeting) => void) | undefined;
  #nextId = 1;
  #gone: VmstackError | undefined;

  private constructor(socket: Socket, label: string) {
    this.#socket = socket;
    this.#label = label;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      for (const line of this.#lines.push(chunk)) this.#onLine(line);
    });
    socket.on("error", (e) => this.#lose(`QMP connection failed: ${messageOf(e)}`));
    socket.on("close", () => this.#lose("QMP connection closed (QEMU exited?)"));
  }

  /** Connects (retrying until QEMU listens), reads the greeting and leaves negotiation mode. */
  static async connect(path: string, options: QmpConnectOptions): Promise<QmpClient> {
    const label = options.label ?? "qemu";
    const socket = await retryUntil(() => connectWhenListening(path), {
      what: `${label}: QMP socket ${path}`,
      timeoutMs: options.timeoutMs,
      signal: options.signal,
      initialDelayMs: 5,
      maxDelayMs: 100,
    });
    const client = new QmpClient(socket, label);
    try {
      await client.#awaitGreeting(options);
      await client.execute("qmp_capabilities", undefined, options);
      return client;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  get greeting(): QmpGreeting {
    if (!this.#greeting) throw new Error("QmpClient.greeting used before the greeting arrived");
    return this.#greeting;
  }

  get connected(): boolean {
    return this.#gone === undefined;
  }

  /** Runs a command; a QMP error reply becomes VmstackError("QMP_ERROR") with its class. */
  execute<T = unknown>(command: string, args?: Readonly<Record<string, unknown>>, options: QmpCallOptions = {}): Promise<T> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const cleanup: Array<() => void> = [];
      const settle = (f: () => void): void => {
        this.#pending.delete(id);
        for (const c of cleanup) c();
        f();
      };
      this.#pending.set(id, { command, resolve: (v) => settle(() => resolve(v as T)), reject: (e) => settle(() => reject(e)) });
      watchDeadline(options, `${this.#label}: QMP ${command}`, (e) => settle(() => reject(e)), cleanup);
      this.#socket.write(encodeQmpCommand(command, args, id));
    });
  }

  /** Every event, as it arrives. Returns an unsubscribe function. */
  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The next event named `name` (and matching `filter`), or a timeout/abort error. */
  waitForEvent(name: string, options: QmpCallOptions & { filter?: (e: QmpEvent) => boolean } = {}): Promise<QmpEvent> {
    if (this.#gone) return Promise.reject(this.#gone);
    return new Promise<QmpEvent>((resolve, reject) => {
      const cleanup: Array<() => void> = [];
      const settle = (f: () => void): void => {
        for (const c of cleanup) c();
        f();
      };
      cleanup.push(
        this.onEvent((e) => {
          if (e.event === name && (options.filter?.(e) ?? true)) settle(() => resolve(e));
        }),
      );
      const onGone = (): void => settle(() => reject(this.#gone));
      this.#socket.once("close", onGone);
      cleanup.push(() => this.#socket.off("close", onGone));
      watchDeadline(options, `${this.#label}: QMP event ${name}`, (e) => settle(() => reject(e)), cleanup);
    });
  }

  close(): void {
    this.#lose("QMP client closed");
    this.#socket.destroy();
  }

  #awaitGreeting(options: QmpConnectOptions): Promise<void> {
    if (this.#greeting) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const cleanup: Array<() => void> = [];
      const settle = (f: () => void): void => {
        this.#onGreeting = undefined;
        for (const c of cleanup) c();
        f();
      };
      this.#onGreeting = () => settle(resolve);
      const onGone = (): void => settle(() => reject(this.#gone));
      this.#socket.once("close", onGone);
      cleanup.push(() => this.#socket.off("close", onGone));
      watchDeadline(options, `${this.#label}: QMP greeting`, (e) => settle(() => reject(e)), cleanup);
    });
  }

  #onLine(line: string): void {
    const m = decodeQmpLine(line);
    switch (m.kind) {
      case "greeting":
        this.#greeting = m.greeting;
        this.#onGreeting?.(m.greeting);
        return;
      case "return":
        this.#take(m.id)?.resolve(m.value);
        return;
      case "error":
        this.#take(m.id)?.reject(
          new VmstackError("QMP_ERROR", `${this.#label}: QMP ${this.#pending.get(Number(m.id))?.command ?? "command"} failed: ${m.desc} (${m.errorClass})`, {
            facts: { errorClass: m.errorClass, desc: m.desc },
          }),
        );
        return;
      case "event":
        for (const l of [...this.#listeners]) l(m.event);
        return;
      case "invalid":
        // A line we cannot read is not worth tearing the connection down for; it is dropped.
        return;
    }
  }

  #take(id: unknown): Pending | undefined {
    return typeof id === "number" ? this.#pending.get(id) : undefined;
  }

  #lose(message: string): void {
    if (this.#gone) return;
    this.#gone = new VmstackError("QMP_GONE", `${this.#label}: ${message}`);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(new VmstackError("QMP_GONE", `${this.#label}: QMP ${p.command}: ${message}`));
  }
}

/** Rejects through `fail` when the deadline passes or the signal aborts; registers its own cleanup. */
function watchDeadline(options: QmpCallOptions, what: string, fail: (e: unknown) => void, cleanup: Array<() => void>): void {
  if (options.timeoutMs !== undefined) {
    const ms = options.timeoutMs;
    const timer = setTimeout(() => fail(new VmstackError("TIMEOUT", `${what}: no answer within ${ms} ms`, { facts: { what, timeoutMs: ms } })), ms);
    cleanup.push(() => clearTimeout(timer));
  }
  const signal = options.signal;
  if (signal) {
    const onAbort = (): void => fail(new VmstackError("ABORTED", `${what}: aborted`, { cause: signal.reason }));
    if (signal.aborted) {
      queueMicrotask(onAbort);
      return;
    }
    signal.addEventListener("abort", onAbort, { once: true });
    cleanup.push(() => signal.removeEventListener("abort", onAbort));
  }
}

