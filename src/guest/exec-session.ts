/**
 * One command running in the guest, seen from the host: its output streams, its stdin (with the
 * protocol's credit window), and its result. Created by AgentClient.exec.
 */
import { Readable } from "node:stream";
import { VmstackError, messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";
import type { ParsedExec } from "./exec-request.js";
import type { Message } from "./protocol.js";
import { CHUNK_SIZE, ERROR_CODES, STDIN_WINDOW, encodeMessage, signalName, signalNumber } from "./protocol.js";

/** What AgentClient lends a session: a way to send frames and to receive those with its id. */
export interface FrameChannel {
  /** Queues a frame; throws the connection's VmstackError once the guest is gone. */
  send(frame: Buffer): void;
  route(id: number, handler: RouteHandler): void;
  unroute(id: number): void;
}

export interface RouteHandler {
  onMessage(m: Message): void;
  onGone(error: VmstackError): void;
}

export interface ExecResult {
  /** The exit status, or null when a signal ended the command. */
  readonly exitCode: number | null;
  /** The terminating signal's name ("SIGKILL"), or null. */
  readonly signal: string | null;
  /** The guest-side timeout fired and killed the process group. */
  readonly timedOut: boolean;
  /**
   * The command exited but something it started still held stdout/stderr open after the grace
   * period; output after that point was not streamed.
   */
  readonly outputHeldOpen: boolean;
  /** Measured in the guest, from fork to exit report. */
  readonly durationMs: number;
  readonly pid: number;
}

export interface ExecHandle {
  /** The protocol id of this command (for logs). */
  readonly id: number;
  /** The guest pid once started; rejects like `result` when the command could not start. */
  readonly pid: Promise<number>;
  /** Ends at EOF, or when the exit is reported (outputHeldOpen), or when the guest goes away. */
  readonly stdout: Readable;
  readonly stderr: Readable;
  /**
   * Sends stdin (stdin: "pipe"); resolves once the guest has room for it. Rejects with
   * GUEST_STDIN_CLOSED once the command has ended (like EPIPE), so a feeder loop knows to stop.
   */
  writeStdin(data: string | Uint8Array): Promise<void>;
  closeStdin(): Promise<void>;
  /** Sends a signal to the command's process group. */
  kill(signal?: string): void;
  readonly result: Promise<ExecResult>;
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export function startExec(ch: FrameChannel, id: number, req: ParsedExec): ExecHandle {
  const what = req.fields.argv.join(" ");
  const stdout = new Readable({ read() {} });
  const stderr = new Readable({ read() {} });
  const pid = deferred<number>();
  const result = deferred<ExecResult>();
  // A caller who only awaits `result` (or awaits it late, after other work) must not crash the
  // process with an unhandled rejection; awaiting either promise still sees the error.
  pid.promise.catch(() => undefined);
  result.promise.catch(() => undefined);
  let startedPid = 0;
  let done = false;
  let failure: VmstackError | undefined;
  let credit = STDIN_WINDOW;
  let creditWaiters: Array<() => void> = [];
  let stdinChain: Promise<void> = Promise.resolve();

  const wake = (): void => {
    const w = creditWaiters;
    creditWaiters = [];
    for (const f of w) f();
  };
  const finish = (): void => {
    done = true;
    ch.unroute(id);
    if (!stdout.readableEnded) stdout.push(null);
    if (!stderr.readableEnded) stderr.push(null);
    req.signal?.removeEventListener("abort", onAbort);
    wake();
  };
  const fail = (e: VmstackError): void => {
    failure = e;
    finish();
    pid.reject(e);
    result.reject(e);
  };
  const onAbort = (): void => {
    try {
      kill("SIGKILL");
    } catch (e) {
      // Only possible when the guest is already gone, which `result` reports.
      log("debug", "guest", `abort of ${what}: ${messageOf(e)}`);
    }
  };

  ch.route(id, {
    onMessage(m) {
      switch (m.type) {
        case "started":
          startedPid = m.pid;
          pid.resolve(m.pid);
          break;
        case "stdout":
        case "stderr": {
          const s = m.type === "stdout" ? stdout : stderr;
          if (!s.readableEnded) s.push(m.data.length === 0 ? null : m.data);
          break;
        }
        case "stdinAck":
          credit += m.bytes;
          wake();
          break;
        case "exit":
          finish();
          result.resolve({
            exitCode: m.exitCode,
            signal: m.signal === null ? null : signalName(m.signal),
            timedOut: m.timedOut,
            outputHeldOpen: m.outputHeldOpen,
            durationMs: m.durationMs,
            pid: startedPid,
          });
          break;
        case "error": {
          const protocol = m.code >= ERROR_CODES.badFrame;
          fail(
            new VmstackError(protocol ? "GUEST_PROTOCOL" : "GUEST_EXEC_FAILED", `guest: ${what}: ${m.message}`, {
              facts: { id, argv: req.fields.argv, guestCode: m.code },
            }),
          );
          break;
        }
        case "invalid":
          fail(new VmstackError("GUEST_PROTOCOL", `guest sent a bad frame for ${what}: ${m.reason}`, { facts: { id } }));
          break;
        default:
          break; // frames of other kinds never carry a command's id; ignore rather than guess
      }
    },
    onGone(e) {
      fail(
        new VmstackError("GUEST_GONE", `the guest went away while running ${what}`, {
          cause: e,
          facts: { id, argv: req.fields.argv, pid: startedPid },
        }),
      );
    },
  });

  function kill(signal = "SIGTERM"): void {
    const n = signalNumber(signal);
    if (n === undefined) throw new VmstackError("GUEST_BAD_SIGNAL", `unknown signal ${signal}`, { facts: { signal } });
    if (!done) ch.send(encodeMessage({ type: "signal", id, signal: n }));
  }

  function writeStdin(data: string | Uint8Array): Promise<void> {
    if (!req.fields.stdin) {
      return Promise.reject(new VmstackError("GUEST_STDIN_NOT_PIPED", `${what} was started without stdin: "pipe"`));
    }
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    stdinChain = stdinChain.then(async () => {
      for (let off = 0; off < bytes.length; off += CHUNK_SIZE) {
        const chunk = bytes.subarray(off, off + CHUNK_SIZE);
        // Flow control: never more than STDIN_WINDOW unacknowledged bytes, so a command that
        // reads slowly cannot make the guest buffer without bound.
        while (credit < chunk.length && !done) await new Promise<void>((r) => creditWaiters.push(r));
        if (done) throw failure ?? new VmstackError("GUEST_STDIN_CLOSED", `${what} has ended; its stdin is closed`, { facts: { id } });
        credit -= chunk.length;
        ch.send(encodeMessage({ type: "stdin", id, data: chunk }));
      }
    });
    return stdinChain;
  }

  function closeStdin(): Promise<void> {
    if (!req.fields.stdin) return Promise.resolve();
    // After a failed write the caller has its error already; closing is still well-defined.
    stdinChain = stdinChain
      .catch(() => undefined)
      .then(() => {
        if (!done) ch.send(encodeMessage({ type: "stdin", id, data: new Uint8Array(0) }));
      });
    return stdinChain;
  }

  try {
    ch.send(encodeMessage({ type: "exec", id, ...req.fields }));
  } catch (e) {
    ch.unroute(id);
    throw e;
  }
  if (req.signal?.aborted) queueMicrotask(onAbort);
  else req.signal?.addEventListener("abort", onAbort, { once: true });
  if (req.stdinData !== undefined) {
    // Failures here mean the guest went away; `result` reports that, so nothing is lost.
    writeStdin(req.stdinData)
      .then(closeStdin)
      .catch(() => undefined);
  }
  return { id, pid: pid.promise, stdout, stderr, writeStdin, closeStdin, kill, result: result.promise };
}
