/**
 * The vmstack agent protocol (docs/agent-protocol.md): pure codec, no I/O.
 *
 * Every frame is a 12-byte header and a payload:
 *
 *   0  u8  0xF7   magic (not ASCII, so console text never looks like a frame)
 *   1  u8  0x56   magic ('V')
 *   2  u8  type   FRAME_TYPES below
 *   3  u8  0      reserved
 *   4  u32 id     big-endian; the request/command a frame belongs to (0 = the connection)
 *   8  u32 len    big-endian payload length, at most MAX_PAYLOAD
 *
 * Framing is ours because a virtio-serial port has no message boundaries and a guest close does
 * not reach the host as EOF (docs/qemu-notes.md §3). The magic lets a decoder resynchronise after
 * garbage, e.g. the tail of a frame written to a previous host connection.
 * Payload integers are big-endian u32; a string is u32 length + UTF-8 bytes (no NUL).
 */

export const PROTOCOL_VERSION = 1;
export const MAGIC0 = 0xf7;
export const MAGIC1 = 0x56;
export const HEADER_SIZE = 12;
export const MAX_PAYLOAD = 1 << 20;
/** Stdout, stderr and file data travel in chunks of at most this size. */
export const CHUNK_SIZE = 64 * 1024;
/** Unacknowledged stdin bytes a host may have in flight per command (STDIN_ACK returns credit). */
export const STDIN_WINDOW = 256 * 1024;

/** Wire numbers (house rule 6). 0x01–0x3F travel host→guest, 0x41–0x7E guest→host, 0x7F both. */
export const FRAME_TYPES = {
  hello: 0x01,
  ping: 0x02,
  exec: 0x03,
  stdin: 0x04,
  signal: 0x05,
  writeFile: 0x06,
  fileData: 0x07, // both directions: host→guest for WRITE_FILE, guest→host for READ_FILE
  readFile: 0x08,
  power: 0x09,
  refresh: 0x0a,
  helloReply: 0x41,
  pong: 0x42,
  started: 0x43,
  stdout: 0x44,
  stderr: 0x45,
  exit: 0x46,
  stdinAck: 0x47,
  fileInfo: 0x48,
  ok: 0x49,
  ready: 0x4a,
  error: 0x7f,
} as const;
export type FrameTypeName = keyof typeof FRAME_TYPES;

const typeByNumber = new Map<number, FrameTypeName>(
  Object.entries(FRAME_TYPES).map(([name, n]) => [n, name as FrameTypeName]),
);

/** ERROR codes from 1000 up are the protocol's own; below 1000 they are Linux errno values. */
export const ERROR_CODES = {
  badFrame: 1000,
  tooLarge: 1001,
  unknownType: 1002,
  badPayload: 1003,
  duplicateId: 1004,
  limit: 1005,
} as const;

export const EXEC_FLAGS = { shell: 1, stdin: 2, clearEnv: 4 } as const;
export const EXIT_FLAGS = { timedOut: 1, outputHeldOpen: 2 } as const;
export const POWER_ACTIONS = { poweroff: 0, reboot: 1 } as const;
/** REFRESH seed length bounds (guest/refresh.c checks the same). */
export const REFRESH_SEED_BYTES = { min: 16, max: 512 } as const;
export type PowerAction = keyof typeof POWER_ACTIONS;

export interface ExecFrameFields {
  readonly shell: boolean;
  readonly stdin: boolean;
  readonly clearEnv: boolean;
  readonly timeoutMs: number; // 0 = none
  readonly graceMs: number; // 0 = the agent's default
  readonly cwd: string; // "" = the agent's own
  readonly argv: readonly string[]; // with shell: exactly one element, the script
  readonly env: readonly string[]; // "NAME=value"
}

/** A decoded frame. Unknown types and malformed payloads decode to `invalid`, never throw. */
export type Message =
  | { readonly type: "hello"; readonly id: number; readonly version: number; readonly client: string }
  | { readonly type: "ping" | "pong"; readonly id: number; readonly data: Uint8Array }
  | ({ readonly type: "exec"; readonly id: number } & ExecFrameFields)
  | { readonly type: "stdin" | "stdout" | "stderr" | "fileData"; readonly id: number; readonly data: Uint8Array }
  | { readonly type: "signal"; readonly id: number; readonly signal: number }
  | { readonly type: "writeFile"; readonly id: number; readonly mode: number; readonly mkdirs: boolean; readonly path: string }
  | { readonly type: "readFile"; readonly id: number; readonly path: string }
  | { readonly type: "power"; readonly id: number; readonly action: PowerAction }
  /** After a snapshot restore: the host's wall-clock time and a seed for the guest's CRNG. */
  | { readonly type: "refresh"; readonly id: number; readonly seconds: number; readonly nanoseconds: number; readonly seed: Uint8Array }
  | {
      readonly type: "helloReply";
      readonly id: number;
      readonly version: number;
      readonly maxPayload: number;
      readonly agentVersion: string;
      readonly kernel: string;
    }
  | { readonly type: "started"; readonly id: number; readonly pid: number }
  | {
      readonly type: "exit";
      readonly id: number;
      readonly exitCode: number | null;
      readonly signal: number | null;
      readonly timedOut: boolean;
      readonly outputHeldOpen: boolean;
      readonly durationMs: number;
    }
  | { readonly type: "stdinAck"; readonly id: number; readonly bytes: number }
  | { readonly type: "fileInfo"; readonly id: number; readonly mode: number; readonly size: number }
  | { readonly type: "ok"; readonly id: number }
  | { readonly type: "ready"; readonly id: number; readonly version: number }
  | { readonly type: "error"; readonly id: number; readonly code: number; readonly message: string }
  | { readonly type: "invalid"; readonly id: number; readonly frameType: number; readonly reason: string };

// ---- encoding ----

class PayloadWriter {
  private readonly parts: Buffer[] = [];
  u8(v: number): this {
    this.parts.push(Buffer.from([v]));
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.parts.push(b);
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s, "utf8");
    this.u32(b.length);
    this.parts.push(b);
    return this;
  }
  bytes(b: Uint8Array): this {
    this.parts.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** One frame: header + payload. Throws RangeError for a payload over MAX_PAYLOAD (a caller bug). */
export function encodeFrame(type: number, id: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new RangeError(`frame payload ${payload.length} > ${MAX_PAYLOAD}`);
  const frame = Buffer.alloc(HEADER_SIZE + payload.length);
  frame[0] = MAGIC0;
  frame[1] = MAGIC1;
  frame[2] = type;
  frame[3] = 0;
  frame.writeUInt32BE(id >>> 0, 4);
  frame.writeUInt32BE(payload.length, 8);
  frame.set(payload, HEADER_SIZE);
  return frame;
}

/** Encodes any message (both directions, so tests can play either side). */
export function encodeMessage(m: Exclude<Message, { type: "invalid" }>): Buffer {
  const w = new PayloadWriter();
  switch (m.type) {
    case "hello":
      w.u32(m.version).str(m.client);
      break;
    case "ping":
    case "pong":
    case "stdin":
    case "stdout":
    case "stderr":
    case "fileData":
      w.bytes(m.data);
      break;
    case "exec": {
      const flags =
        (m.shell ? EXEC_FLAGS.shell : 0) | (m.stdin ? EXEC_FLAGS.stdin : 0) | (m.clearEnv ? EXEC_FLAGS.clearEnv : 0);
      w.u32(flags).u32(m.timeoutMs).u32(m.graceMs).str(m.cwd).u32(m.argv.length);
      for (const a of m.argv) w.str(a);
      w.u32(m.env.length);
      for (const e of m.env) w.str(e);
      break;
    }
    case "signal":
      w.u32(m.signal);
      break;
    case "writeFile":
      w.u32(m.mode).u32(m.mkdirs ? 1 : 0).str(m.path);
      break;
    case "readFile":
      w.str(m.path);
      break;
    case "power":
      w.u32(POWER_ACTIONS[m.action]);
      break;
    case "refresh":
      w.u32(Math.floor(m.seconds / 2 ** 32)).u32(m.seconds % 2 ** 32).u32(m.nanoseconds).bytes(m.seed);
      break;
    case "helloReply":
      w.u32(m.version).u32(m.maxPayload).str(m.agentVersion).str(m.kernel);
      break;
    case "started":
      w.u32(m.pid);
      break;
    case "exit": {
      const flags = (m.timedOut ? EXIT_FLAGS.timedOut : 0) | (m.outputHeldOpen ? EXIT_FLAGS.outputHeldOpen : 0);
      w.u8(m.signal === null ? 0 : 1).u8(flags).u8(0).u8(0);
      w.u32(m.signal ?? m.exitCode ?? 0).u32(m.durationMs);
      break;
    }
    case "stdinAck":
      w.u32(m.bytes);
      break;
    case "fileInfo":
      w.u32(m.mode).u32(Math.floor(m.size / 2 ** 32)).u32(m.size % 2 ** 32);
      break;
    case "ok":
      break;
    case "ready":
      w.u32(m.version);
      break;
    case "error":
      w.u32(m.code).str(m.message);
      break;
    default:
      return assertNeverMessage(m);
  }
  return encodeFrame(FRAME_TYPES[m.type], m.id, w.done());
}

function assertNeverMessage(m: never): never {
  throw new Error(`unexpected message ${JSON.stringify(m)}`);
}

// ---- decoding ----

class PayloadReader {
  private pos = 0;
  constructor(private readonly b: Buffer) {}
  u8(): number {
    if (this.pos + 1 > this.b.length) throw new PayloadError("truncated u8");
    return this.b[this.pos++] ?? 0;
  }
  u32(): number {
    if (this.pos + 4 > this.b.length) throw new PayloadError("truncated u32");
    const v = this.b.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  str(): string {
    const len = this.u32();
    if (this.pos + len > this.b.length) throw new PayloadError("string runs past the payload");
    const s = this.b.subarray(this.pos, this.pos + len);
    this.pos += len;
    if (s.includes(0)) throw new PayloadError("string contains NUL");
    return s.toString("utf8");
  }
  rest(): Buffer {
    const r = this.b.subarray(this.pos);
    this.pos = this.b.length;
    return r;
  }
  end(): void {
    if (this.pos !== this.b.length) throw new PayloadError(`${this.b.length - this.pos} trailing bytes`);
  }
}

/** Internal: a payload that does not match its type's layout. Never escapes decodePayload. */
class PayloadError extends Error {}

/** Decodes one frame's payload by its type number; anything wrong yields `invalid`. */
export function decodePayload(frameType: number, id: number, payload: Buffer): Message {
  const name = typeByNumber.get(frameType);
  if (name === undefined) return { type: "invalid", id, frameType, reason: `unknown frame type 0x${hex(frameType)}` };
  const r = new PayloadReader(payload);
  try {
    const m = decodeKnown(name, id, r);
    r.end();
    return m;
  } catch (e) {
    if (!(e instanceof PayloadError)) throw e;
    return { type: "invalid", id, frameType, reason: `malformed ${name} payload: ${e.message}` };
  }
}

function decodeKnown(type: FrameTypeName, id: number, r: PayloadReader): Message {
  switch (type) {
    case "hello":
      return { type, id, version: r.u32(), client: r.str() };
    case "ping":
    case "pong":
    case "stdin":
    case "stdout":
    case "stderr":
    case "fileData":
      return { type, id, data: r.rest() };
    case "exec": {
      const flags = r.u32();
      const timeoutMs = r.u32();
      const graceMs = r.u32();
      const cwd = r.str();
      const argv = Array.from({ length: count(r.u32()) }, () => r.str());
      const env = Array.from({ length: count(r.u32()) }, () => r.str());
      if (flags & ~7) throw new PayloadError(`unknown exec flags 0x${hex(flags)}`);
      return {
        type, id, timeoutMs, graceMs, cwd, argv, env,
        shell: (flags & EXEC_FLAGS.shell) !== 0,
        stdin: (flags & EXEC_FLAGS.stdin) !== 0,
        clearEnv: (flags & EXEC_FLAGS.clearEnv) !== 0,
      };
    }
    case "signal":
      return { type, id, signal: r.u32() };
    case "writeFile":
      return { type, id, mode: r.u32(), mkdirs: (r.u32() & 1) !== 0, path: r.str() };
    case "readFile":
      return { type, id, path: r.str() };
    case "power": {
      const n = r.u32();
      const action = n === 0 ? "poweroff" : n === 1 ? "reboot" : undefined;
      if (action === undefined) throw new PayloadError(`unknown power action ${n}`);
      return { type, id, action };
    }
    case "refresh": {
      const hi = r.u32();
      const seconds = hi * 2 ** 32 + r.u32();
      const nanoseconds = r.u32();
      const seed = r.rest();
      if (nanoseconds >= 1e9) throw new PayloadError(`nanoseconds ${nanoseconds} >= 1e9`);
      if (seed.length < REFRESH_SEED_BYTES.min || seed.length > REFRESH_SEED_BYTES.max) throw new PayloadError(`seed of ${seed.length} bytes`);
      return { type, id, seconds, nanoseconds, seed };
    }
    case "helloReply":
      return { type, id, version: r.u32(), maxPayload: r.u32(), agentVersion: r.str(), kernel: r.str() };
    case "started":
      return { type, id, pid: r.u32() };
    case "exit": {
      const kind = r.u8();
      const flags = r.u8();
      r.u8();
      r.u8();
      const value = r.u32();
      const durationMs = r.u32();
      if (kind > 1) throw new PayloadError(`unknown exit kind ${kind}`);
      return {
        type, id, durationMs,
        exitCode: kind === 0 ? value : null,
        signal: kind === 1 ? value : null,
        timedOut: (flags & EXIT_FLAGS.timedOut) !== 0,
        outputHeldOpen: (flags & EXIT_FLAGS.outputHeldOpen) !== 0,
      };
    }
    case "stdinAck":
      return { type, id, bytes: r.u32() };
    case "fileInfo": {
      const mode = r.u32();
      const hi = r.u32();
      return { type, id, mode, size: hi * 2 ** 32 + r.u32() };
    }
    case "ok":
      return { type, id };
    case "ready":
      return { type, id, version: r.u32() };
    case "error":
      return { type, id, code: r.u32(), message: r.str() };
  }
}

/** An element count must fit in what is left of the payload (each element is >= 4 bytes). */
function count(n: number): number {
  if (n > MAX_PAYLOAD / 4) throw new PayloadError(`count ${n} too large`);
  return n;
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/** What the incremental decoder hands out, in stream order. */
export type DecodeEvent =
  | { readonly kind: "message"; readonly message: Message }
  /** Bytes that were not a frame were skipped up to the next magic. */
  | { readonly kind: "garbage"; readonly bytes: number }
  /** A header announced more than MAX_PAYLOAD; decoding resumed after its magic. */
  | { readonly kind: "oversize"; readonly id: number; readonly length: number };

/**
 * Incremental decoder: feed it chunks as they arrive, in any split; it returns every event the
 * bytes so far complete. It never throws on input.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): DecodeEvent[] {
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
    const events: DecodeEvent[] = [];
    let pos = 0;
    for (;;) {
      const left = this.buf.length - pos;
      if (left === 0) break;
      if (this.buf[pos] !== MAGIC0 || (left > 1 && this.buf[pos + 1] !== MAGIC1)) {
        const skip = this.skipGarbage(pos);
        events.push({ kind: "garbage", bytes: skip });
        pos += skip;
        continue;
      }
      if (left < HEADER_SIZE) break;
      const frameType = this.buf[pos + 2] ?? 0;
      const reserved = this.buf[pos + 3] ?? 0;
      const id = this.buf.readUInt32BE(pos + 4);
      const length = this.buf.readUInt32BE(pos + 8);
      if (length > MAX_PAYLOAD) {
        events.push({ kind: "oversize", id, length });
        pos += 2;
        continue;
      }
      if (left < HEADER_SIZE + length) break;
      // Copy: the message outlives this buffer, which is replaced on the next push.
      const payload = Buffer.from(this.buf.subarray(pos + HEADER_SIZE, pos + HEADER_SIZE + length));
      pos += HEADER_SIZE + length;
      const message: Message =
        reserved !== 0
          ? { type: "invalid", id, frameType, reason: `reserved header byte is ${reserved}, not 0` }
          : decodePayload(frameType, id, payload);
      events.push({ kind: "message", message });
    }
    this.buf = this.buf.subarray(pos);
    return events;
  }

  /** Bytes held while waiting for the rest of a frame. */
  get pending(): number {
    return this.buf.length;
  }

  reset(): void {
    this.buf = Buffer.alloc(0);
  }

  /** Length of the run from `from` that cannot start a frame (a lone trailing 0xF7 may yet). */
  private skipGarbage(from: number): number {
    let i = from + 1;
    while (i < this.buf.length && !(this.buf[i] === MAGIC0 && (i + 1 === this.buf.length || this.buf[i + 1] === MAGIC1))) i++;
    return i - from;
  }
}

/** Linux signal numbers (x86 and arm64 agree for 1–31), for reporting by name. */
const LINUX_SIGNALS = [
  "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
  "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP",
  "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH",
  "SIGIO", "SIGPWR", "SIGSYS",
] as const;

export function signalName(n: number): string {
  return LINUX_SIGNALS[n - 1] ?? (n >= 34 && n <= 64 ? `SIGRTMIN+${n - 34}` : `SIG${n}`);
}

export function signalNumber(name: string): number | undefined {
  const i = LINUX_SIGNALS.findIndex((s) => s === name);
  return i < 0 ? undefined : i + 1;
}
