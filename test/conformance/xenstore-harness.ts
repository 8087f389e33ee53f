/**
 * The xenstore conformance harness: raw wire connections that record every frame (replies and
 * watch events, in arrival order) so a case can compare exact replies — payload and errno — and
 * the order of events against replies. Uses the project's codec (src/xenstore/wire.ts).
 *
 * A "barrier" is a side-effect-free request (GET_DOMAIN_PATH 0): every daemon queues the events
 * caused by an earlier, completed request before the reply to a later one on the same
 * connection, so after the barrier's reply all such events have arrived. No timing involved.
 */
import assert from "node:assert/strict";
import type { Duplex } from "node:stream";
import { FrameDecoder, encodeMessage, nulTerminated, splitNul, type XsMessage } from "../../src/xenstore/wire.js";
import { XS_OPS, type XsOp } from "../../src/xenstore/protocol.js";

export type Flavour = "vmstack" | "c" | "ocaml";

/** A daemon under test. */
export interface XsTarget {
  readonly name: string;
  readonly flavour: Flavour;
  /** A new dom0 connection (socket or in-process). */
  open(): Promise<Duplex>;
  /** A connection bound to an unprivileged domid (vmstack only). */
  openDomain?: (domid: number) => Promise<Duplex>;
  stop(): Promise<void>;
}

export class Reply {
  readonly request: string;
  readonly msg: XsMessage;

  constructor(request: string, msg: XsMessage) {
    this.request = request;
    this.msg = msg;
  }

  get op(): XsOp {
    return this.msg.op;
  }
  get errno(): string | undefined {
    return this.msg.op === "ERROR" ? this.msg.payload.toString("latin1").replace(/\0$/, "") : undefined;
  }
  get text(): string {
    return this.msg.payload.toString("utf8");
  }
  #describe(): string {
    return `${this.request} → ${this.msg.op} ${JSON.stringify(this.msg.payload.toString("latin1"))}`;
  }
  /** `OK\0` */
  ok(): this {
    assert.equal(this.errno, undefined, `expected OK: ${this.#describe()}`);
    assert.equal(this.msg.payload.toString("latin1"), "OK\0", `expected OK: ${this.#describe()}`);
    return this;
  }
  error(name: string): this {
    assert.equal(this.errno, name, `expected ${name}: ${this.#describe()}`);
    return this;
  }
  /** The exact payload (READ values have no terminator). */
  value(v: string | Buffer): this {
    assert.equal(this.errno, undefined, `expected a value: ${this.#describe()}`);
    assert.deepEqual(this.msg.payload, typeof v === "string" ? Buffer.from(v) : v, `value of ${this.#describe()}`);
    return this;
  }
  /** A list of NUL-terminated strings, compared as a set unless `ordered`. */
  list(items: readonly string[], ordered = false): this {
    assert.equal(this.errno, undefined, `expected a list: ${this.#describe()}`);
    const got = splitNul(this.msg.payload);
    if (items.length > 0) assert.equal(this.msg.payload[this.msg.payload.length - 1], 0, `list ends with NUL: ${this.#describe()}`);
    else assert.equal(this.msg.payload.length, 0, `empty list is an empty payload: ${this.#describe()}`);
    assert.deepEqual(ordered ? got : [...got].sort(), ordered ? [...items] : [...items].sort(), this.#describe());
    return this;
  }
}

export interface CallOptions {
  readonly tx?: number;
  readonly reqId?: number;
  /** Appended after the NUL-terminated args without a terminator (WRITE's value). */
  readonly value?: string | Buffer;
  /** Send exactly this payload instead of args+value. */
  readonly payload?: Buffer;
}

let nextReqId = 1000;

export class RawConn {
  readonly label: string;
  readonly frames: XsMessage[] = [];
  readonly #duplex: Duplex;
  readonly #decoder = new FrameDecoder({ maxPayload: 1 << 20 }); // see what a daemon sends, even oversized
  #waiters: (() => void)[] = [];
  #closed = false;
  #events: [string, string][] = [];

  constructor(label: string, duplex: Duplex) {
    this.label = label;
    this.#duplex = duplex;
    duplex.on("data", (chunk: Buffer) => {
      for (const r of this.#decoder.push(chunk)) {
        if (r.kind !== "message") continue;
        const m = { ...r.message, payload: Buffer.from(r.message.payload) };
        this.frames.push(m);
        if (m.op === "WATCH_EVENT") {
          const [path = "", token = ""] = splitNul(m.payload);
          this.#events.push([path, token]);
        }
      }
      this.#wake();
    });
    duplex.on("error", () => {
      this.#closed = true;
      this.#wake();
    });
    duplex.on("close", () => {
      this.#closed = true;
      this.#wake();
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Resolves when something arrives or the connection closes. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Write raw bytes (fuzzing, oversized frames). */
  sendRaw(bytes: Buffer): void {
    this.#duplex.write(bytes);
  }

  /** Send one request without waiting; returns its req_id. */
  post(op: XsOp | number, args: readonly (string | Buffer)[], o: CallOptions = {}): number {
    const reqId = o.reqId ?? nextReqId++;
    const payload = o.payload ?? Buffer.concat([nulTerminated(...args), typeof o.value === "string" ? Buffer.from(o.value) : (o.value ?? Buffer.alloc(0))]);
    this.#duplex.write(encodeMessage({ type: typeof op === "number" ? op : XS_OPS[op], reqId, txId: o.tx ?? 0, payload }, { maxPayload: Infinity }));
    return reqId;
  }

  /** Wait for the reply (not an event) carrying `reqId`; fails if the connection closes first. */
  async replyTo(reqId: number, request: string): Promise<Reply> {
    for (;;) {
      const m = this.frames.find((f) => f.reqId === reqId && f.op !== "WATCH_EVENT");
      if (m) return new Reply(request, m);
      if (this.#closed) throw new Error(`${this.label}: connection closed before the reply to ${request}`);
      await this.changed();
    }
  }

  async call(op: XsOp | number, args: readonly (string | Buffer)[] = [], o: CallOptions = {}): Promise<Reply> {
    const req = `${this.label} ${typeof op === "number" ? `type ${op}` : op}(${args.map((a) => JSON.stringify(a.toString())).join(", ")}${o.value === undefined ? "" : ", " + JSON.stringify(o.value.toString())})${o.tx ? ` tx ${o.tx}` : ""}`;
    return this.replyTo(this.post(op, args, o), req);
  }

  /** Round trip with no side effects: events from completed requests are in after it. */
  async barrier(): Promise<void> {
    await this.call("GET_DOMAIN_PATH", ["0"]);
  }

  /** Events received so far (path, token), then forgets them. */
  takeEvents(): [string, string][] {
    return this.#events.splice(0);
  }

  /** After a barrier, the events received since the last check must be exactly `expected`, in order. */
  async expectEvents(expected: readonly (readonly [string, string])[], what = ""): Promise<void> {
    await this.barrier();
    assert.deepEqual(this.takeEvents(), expected.map(([p, t]) => [p, t]), `${this.label} events${what ? " " + what : ""}`);
  }

  /** Start a transaction; its id. */
  async begin(): Promise<number> {
    const r = await this.call("TRANSACTION_START", [""]);
    assert.equal(r.errno, undefined, `TRANSACTION_START failed: ${r.errno ?? ""}`);
    assert.match(r.text, /^\d+\0$/, "TRANSACTION_START replies a decimal id and NUL");
    return Number(r.text.slice(0, -1));
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#duplex.once("close", () => resolve());
      this.#duplex.destroy();
    });
  }
}

/** What a case gets: connections to one daemon and a private subtree. */
export class Session {
  readonly target: XsTarget;
  /** This case's private absolute base path, e.g. /conformance/c12. */
  readonly base: string;
  /** This case's private relative base, e.g. conformance-rel/c12 (= /local/domain/0/conformance-rel/c12). */
  readonly relBase: string;
  readonly #conns: RawConn[] = [];

  constructor(target: XsTarget, caseIndex: number) {
    this.target = target;
    this.base = `/conformance/c${caseIndex}`;
    this.relBase = `conformance-rel/c${caseIndex}`;
  }

  /** `p("a/b")` → `/conformance/cN/a/b`; `p()` → the base itself. */
  p(sub = ""): string {
    return sub === "" ? this.base : `${this.base}/${sub}`;
  }

  async conn(label = `conn${this.#conns.length}`): Promise<RawConn> {
    const c = new RawConn(label, await this.target.open());
    this.#conns.push(c);
    return c;
  }

  async domain(domid: number): Promise<RawConn> {
    if (this.target.openDomain === undefined) throw new Error(`${this.target.name} cannot open unprivileged connections`);
    const c = new RawConn(`dom${domid}`, await this.target.openDomain(domid));
    this.#conns.push(c);
    return c;
  }

  /** Remove the case's subtrees (before and after each case). */
  async clean(): Promise<void> {
    const c = new RawConn("cleaner", await this.target.open());
    await c.call("RM", [this.base]);
    await c.call("RM", [this.relBase]);
    await c.close();
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.#conns.map((c) => c.close()));
  }
}

export interface Case {
  /** A sentence: what every conforming daemon does. */
  readonly name: string;
  /** Flavours that behave differently on purpose or by a documented difference (notes §6), with why. */
  readonly differs?: Partial<Record<Flavour, string>>;
  /** Needs unprivileged connections (only vmstack's daemon offers them to tests). */
  readonly unprivileged?: boolean;
  run(s: Session): Promise<void>;
}

/** Run every case as a subtest of `t`, skipping documented differences with their reason. */
export async function runCases(t: import("node:test").TestContext, target: XsTarget, cases: readonly Case[]): Promise<void> {
  for (const [i, c] of cases.entries()) {
    await t.test(c.name, async (tt) => {
      const reason = c.differs?.[target.flavour];
      if (reason !== undefined) {
        tt.skip(`${target.name}: ${reason}`);
        return;
      }
      if (c.unprivileged === true && target.openDomain === undefined) {
        tt.skip(`${target.name} treats every socket connection as dom0 (notes §1.5)`);
        return;
      }
      const s = new Session(target, i);
      await s.clean();
      try {
        await c.run(s);
      } finally {
        await s.closeAll();
        await s.clean();
      }
    });
  }
}
