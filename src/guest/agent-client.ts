/**
 * The host side of the agent protocol over any Duplex: in production a net.Socket connected to
 * QEMU's chardev socket for the virtio-serial port org.vmstack.agent; in tests a Unix socket to
 * the agent binary running on the host.
 *
 * Handshake: the host usually connects before the guest has booted, and what the guest writes
 * while no host is connected may be lost, so the host repeats HELLO (backing off) until a
 * HELLO_REPLY arrives; a READY from the guest (sent whenever it sees a host arrive) triggers an
 * immediate HELLO. Either order of connecting works.
 */
import type { Duplex } from "node:stream";
import { finished } from "node:stream/promises";
import { VmstackError, messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";
import { parseExecRequest, type ExecRequest } from "./exec-request.js";
import { startExec, type ExecHandle, type ExecResult, type FrameChannel, type RouteHandler } from "./exec-session.js";
import type { DecodeEvent, Message, PowerAction } from "./protocol.js";
import { CHUNK_SIZE, ERROR_CODES, FrameDecoder, PROTOCOL_VERSION, REFRESH_SEED_BYTES, encodeMessage } from "./protocol.js";

export interface AgentInfo {
  readonly protocolVersion: number;
  readonly agentVersion: string;
  /** `uname -s -r -m` of the guest. */
  readonly kernel: string;
  readonly maxPayload: number;
}

export interface ConnectOptions {
  /** Deadline for the handshake (scale it with the accelerator: a TCG boot takes seconds). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** First HELLO repeat interval; doubles up to 1 s. Default 50 ms. */
  readonly helloIntervalMs?: number;
  /** Shown in the guest's logs. */
  readonly clientName?: string;
}

export interface RunOutput extends ExecResult {
  readonly stdout: Buffer;
  readonly stderr: Buffer;
}

export interface FileOptions {
  readonly signal?: AbortSignal;
}

export interface WriteFileOptions extends FileOptions {
  /** Permission bits; default 0o644. */
  readonly mode?: number;
  /** Create missing parent directories (mode 0755). */
  readonly mkdirs?: boolean;
}

export class AgentClient {
  #info: AgentInfo | undefined;
  #nextId = 1;
  #gone: VmstackError | undefined;
  #onReady: (() => void) | undefined;
  readonly #routes = new Map<number, RouteHandler>();
  readonly #decoder = new FrameDecoder();
  readonly #stream: Duplex;
  readonly #channel: FrameChannel;

  private constructor(stream: Duplex) {
    this.#stream = stream;
    this.#channel = {
      send: (frame) => this.#send(frame),
      route: (id, h) => this.#routes.set(id, h),
      unroute: (id) => this.#routes.delete(id),
    };
    stream.on("data", (chunk: Buffer) => {
      for (const ev of this.#decoder.push(chunk)) this.#onEvent(ev);
    });
    stream.on("error", (e) => this.#lose(new VmstackError("GUEST_GONE", `guest agent channel failed: ${messageOf(e)}`, { cause: e })));
    stream.on("end", () => this.#lose(new VmstackError("GUEST_GONE", "the guest agent channel closed")));
    stream.on("close", () => this.#lose(new VmstackError("GUEST_GONE", "the guest agent channel closed")));
  }

  /** Attaches to the channel and completes the handshake, or throws (and destroys the stream). */
  static async connect(stream: Duplex, options: ConnectOptions): Promise<AgentClient> {
    const client = new AgentClient(stream);
    try {
      client.#info = await client.#handshake(options);
      return client;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  get info(): AgentInfo {
    if (!this.#info) throw new Error("AgentClient used before its handshake");
    return this.#info;
  }

  /** False once the channel has closed or failed. */
  get connected(): boolean {
    return this.#gone === undefined;
  }

  /** Starts a command. Request errors throw at once; everything later arrives through the handle. */
  exec(request: ExecRequest): ExecHandle {
    return startExec(this.#channel, this.#allocId(), parseExecRequest(request));
  }

  /** Runs a command to completion and collects its output. */
  async run(request: ExecRequest): Promise<RunOutput> {
    const h = this.exec(request);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    h.stdout.on("data", (c: Buffer) => out.push(c));
    h.stderr.on("data", (c: Buffer) => err.push(c));
    const result = await h.result;
    await Promise.all([finished(h.stdout), finished(h.stderr)]);
    return { ...result, stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
  }

  /** Round trip time in ms. */
  async ping(options: FileOptions = {}): Promise<number> {
    const t0 = performance.now();
    await this.#request({ type: "ping", id: 0, data: new Uint8Array(0) }, "ping", options.signal, (m, done) => {
      if (m.type === "pong") done(undefined);
    });
    return performance.now() - t0;
  }

  async readFile(path: string, options: FileOptions = {}): Promise<{ data: Buffer; mode: number }> {
    const chunks: Buffer[] = [];
    let mode = 0;
    return this.#request({ type: "readFile", id: 0, path }, `read ${path}`, options.signal, (m, done) => {
      if (m.type === "fileInfo") mode = m.mode;
      else if (m.type === "fileData" && m.data.length > 0) chunks.push(Buffer.from(m.data));
      else if (m.type === "fileData") done({ data: Buffer.concat(chunks), mode });
    });
  }

  /** Writes a file in the guest atomically (temporary name, then rename). */
  async writeFile(path: string, data: string | Uint8Array, options: WriteFileOptions = {}): Promise<void> {
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    const mode = options.mode ?? 0o644;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      throw new VmstackError("GUEST_BAD_FILE_REQUEST", `write ${path}: mode ${mode} is not a permission mode`);
    }
    let failed = false;
    const reply = this.#request(
      { type: "writeFile", id: 0, path, mode, mkdirs: options.mkdirs ?? false },
      `write ${path}`,
      options.signal,
      (m, done) => {
        if (m.type === "ok") done(undefined);
      },
      (id) => {
        // Stream the data right behind the request; waiting on 'drain' keeps a big file from
        // piling up in memory. An early ERROR stops the loop.
        void (async () => {
          for (let off = 0; off <= bytes.length && !failed && this.#gone === undefined; off += CHUNK_SIZE) {
            const chunk = bytes.subarray(off, off + CHUNK_SIZE);
            if (chunk.length > 0 && !this.#stream.write(encodeMessage({ type: "fileData", id, data: chunk }))) {
              await new Promise<void>((r) => {
                const done = (): void => {
                  this.#stream.off("drain", done);
                  this.#stream.off("close", done);
                  r();
                };
                this.#stream.on("drain", done);
                this.#stream.on("close", done);
              });
            }
          }
          if (!failed && this.#gone === undefined) this.#stream.write(encodeMessage({ type: "fileData", id, data: new Uint8Array(0) }));
        })();
      },
    );
    try {
      await reply;
    } finally {
      failed = true;
    }
  }

  /**
   * After a restore from a snapshot: gives the guest's CRNG a fresh seed (mixed in and reseeded
   * at once) and sets its wall clock to `nowMs` (the host's, by default). Every guest restored
   * from the same state would otherwise produce the same "random" bytes and live in the past.
   * An agent that predates REFRESH answers ERROR 1002 (GUEST_PROTOCOL, facts.guestCode 1002).
   */
  async refresh(options: FileOptions & { readonly seed: Uint8Array; readonly nowMs?: number }): Promise<void> {
    if (options.seed.length < REFRESH_SEED_BYTES.min || options.seed.length > REFRESH_SEED_BYTES.max) {
      throw new VmstackError("GUEST_BAD_REFRESH", `refresh: a seed of ${REFRESH_SEED_BYTES.min}..${REFRESH_SEED_BYTES.max} bytes is needed, got ${options.seed.length}`);
    }
    // Read the clock as late as possible: the guest sets exactly this instant.
    const now = options.nowMs ?? Date.now();
    const seconds = Math.floor(now / 1000);
    const nanoseconds = Math.round((now - seconds * 1000) * 1e6);
    await this.#request({ type: "refresh", id: 0, seconds, nanoseconds, seed: options.seed }, "refresh", options.signal, (m, done) => {
      if (m.type === "ok") done(undefined);
    });
  }

  /** Asks the guest to power off; resolves once acknowledged (or once the channel closes). */
  poweroff(options: FileOptions = {}): Promise<void> {
    return this.#power("poweroff", options);
  }

  reboot(options: FileOptions = {}): Promise<void> {
    return this.#power("reboot", options);
  }

  /** Closes the channel; commands still running are reported as GUEST_GONE. */
  close(): void {
    this.#lose(new VmstackError("GUEST_GONE", "the agent client was closed"));
    this.#stream.destroy();
  }

  async #power(action: PowerAction, options: FileOptions): Promise<void> {
    try {
      await this.#request({ type: "power", id: 0, action }, action, options.signal, (m, done) => {
        if (m.type === "ok") done(undefined);
      });
    } catch (e) {
      // The guest may power off before its OK reaches us: the channel closing is the answer.
      if (!(e instanceof VmstackError && e.code === "GUEST_GONE")) throw e;
    }
  }

  /** One request with a reply sequence; ERROR and channel loss reject it. */
  #request<T>(
    message: Exclude<Message, { type: "invalid" }>,
    what: string,
    signal: AbortSignal | undefined,
    onMessage: (m: Message, done: (v: T) => void) => void,
    afterSend?: (id: number) => void,
  ): Promise<T> {
    const id = this.#allocId();
    return new Promise<T>((resolve, reject) => {
      const settle = (f: () => void): void => {
        this.#routes.delete(id);
        signal?.removeEventListener("abort", onAbort);
        f();
      };
      const onAbort = (): void =>
        settle(() => reject(new VmstackError("ABORTED", `${what} in the guest was aborted`, { cause: signal?.reason })));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#routes.set(id, {
        onMessage: (m) => {
          if (m.type === "error") {
            const code = m.code >= ERROR_CODES.badFrame ? "GUEST_PROTOCOL" : "GUEST_REQUEST_FAILED";
            settle(() => reject(new VmstackError(code, `guest: ${m.message}`, { facts: { what, guestCode: m.code } })));
          } else if (m.type === "invalid") {
            settle(() => reject(new VmstackError("GUEST_PROTOCOL", `guest sent a bad frame for ${what}: ${m.reason}`)));
          } else {
            onMessage(m, (v) => settle(() => resolve(v)));
          }
        },
        onGone: (e) =>
          settle(() => reject(new VmstackError("GUEST_GONE", `the guest went away during ${what}`, { cause: e }))),
      });
      try {
        this.#send(encodeMessage({ ...message, id }));
        afterSend?.(id);
      } catch (e) {
        settle(() => reject(e));
      }
    });
  }

  #handshake(options: ConnectOptions): Promise<AgentInfo> {
    const deadline = AbortSignal.timeout(options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
    return new Promise<AgentInfo>((resolve, reject) => {
      let interval = options.helloIntervalMs ?? 50;
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const ids: number[] = [];
      const end = (f: () => void): void => {
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        for (const id of ids) this.#routes.delete(id);
        this.#onReady = undefined;
        f();
      };
      const onAbort = (): void => {
        const timedOut = deadline.aborted && !options.signal?.aborted;
        end(() =>
          reject(
            timedOut
              ? new VmstackError("GUEST_HANDSHAKE_TIMEOUT", `no answer from the guest agent within ${options.timeoutMs} ms`, {
                  facts: { timeoutMs: options.timeoutMs, hellos: ids.length },
                })
              : new VmstackError("ABORTED", "guest agent handshake aborted", { cause: options.signal?.reason }),
          ),
        );
      };
      const hello = (): void => {
        const id = this.#allocId();
        ids.push(id);
        this.#routes.set(id, {
          onMessage: (m) => {
            if (m.type !== "helloReply") return;
            if (m.version !== PROTOCOL_VERSION) {
              end(() =>
                reject(
                  new VmstackError("GUEST_PROTOCOL_VERSION", `guest agent speaks protocol ${m.version}, vmstack ${PROTOCOL_VERSION}`, {
                    facts: { guest: m.version, host: PROTOCOL_VERSION, agentVersion: m.agentVersion },
                  }),
                ),
              );
              return;
            }
            const info = { protocolVersion: m.version, agentVersion: m.agentVersion, kernel: m.kernel, maxPayload: m.maxPayload };
            end(() => resolve(info));
          },
          onGone: (e) => end(() => reject(e)),
        });
        try {
          this.#send(encodeMessage({ type: "hello", id, version: PROTOCOL_VERSION, client: options.clientName ?? "vmstack" }));
        } catch (e) {
          end(() => reject(e));
        }
      };
      // A repeat timer, not a poll: each HELLO is a fresh question to a peer that may not have
      // been listening for the previous one.
      const tick = (): void => {
        hello();
        if (settled) return; // answered (or failed) synchronously, e.g. over an in-memory stream
        interval = Math.min(interval * 2, 1000);
        timer = setTimeout(tick, interval);
      };
      this.#onReady = hello;
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      tick();
    });
  }

  #onEvent(ev: DecodeEvent): void {
    switch (ev.kind) {
      case "garbage":
        // Expected once after (re)connecting: the tail of a frame meant for an earlier host.
        log("debug", "guest", `skipped ${ev.bytes} bytes that were not a frame`);
        return;
      case "oversize":
        log("warn", "guest", `guest sent a frame header announcing ${ev.length} bytes (id ${ev.id}); skipped`);
        return;
      case "message":
        break;
    }
    const m = ev.message;
    if (m.id === 0) {
      if (m.type === "ready") this.#onReady?.();
      else if (m.type === "error") log("debug", "guest", `agent reports: ${m.message} (code ${m.code})`);
      else log("debug", "guest", `unexpected connection-level frame ${m.type}`);
      return;
    }
    // Unknown ids are normal: replies to repeated HELLOs, output of a command already reported.
    this.#routes.get(m.id)?.onMessage(m);
  }

  #send(frame: Buffer): void {
    if (this.#gone) throw this.#gone;
    this.#stream.write(frame);
  }

  #allocId(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffff_ffff ? 1 : this.#nextId + 1;
    return id;
  }

  #lose(e: VmstackError): void {
    if (this.#gone) return;
    this.#gone = e;
    const routes = [...this.#routes.values()];
    this.#routes.clear();
    for (const r of routes) r.onGone(e);
    if (!this.#stream.destroyed) this.#stream.destroy();
  }
}
