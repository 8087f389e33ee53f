/**
 * Native socket I/O for a busy-polling xenstored (native/xsio.c, a Node-API addon).
 *
 * With one request in flight, throughput is the round trip. On the machines vmstack was measured
 * on, Node.js's own socket path was most of the daemon's part of it: about 8 µs from a
 * client's write to the request reaching JavaScript while busy-polling through the event loop
 * (setImmediate turns and epoll_wait), and about 4.5 µs from there until the reply's write
 * returned, where a C server needs 3.5 µs and 2 µs. So the stream never reads a client's socket
 * (the server pauses it on accept): the event loop only watches it, and the addon reads its bytes
 * straight into a buffer (readStart, native/reader.c); while a connection is busy-polled, the
 * daemon waits for its next request in the addon (a poll(2) loop over the polled sockets); and a
 * reply leaves with one send(2) when nothing is queued ahead of it. Everything else stays with the
 * stream: accepting, closing, errors, and any write that cannot go out at once. At end of stream
 * (or a hang-up) the reader stops and the stream reads from then on, to report the end its way.
 *
 * Ordering: every byte is read here, by the reader or by a wait, one after the other on the one
 * thread; replies are sent here only when the stream holds nothing unsent and is not corked, so
 * neither direction can overtake the other path. The event loop turns between waits (each wait
 * lasts at most WAIT_SLICE_MS), so timers, other sockets and microtasks still run while a client
 * is polled, and there is no wait at all while some socket has output the event loop has yet to
 * write.
 *
 * If the addon is missing (not built) the daemon reads through the streams and busy-polls through
 * the event loop, as with `--no-native-io`: slower, and without the rule below.
 *
 * No polling for a client that runs on the daemon's CPU (this clock's BusyPollClock.beside).
 * Polling there only keeps the client from running, and a daemon that sleeps does better: the
 * client's write wakes it and the scheduler hands it the CPU at once, preempting the client
 * instead of putting it to sleep, so the reply finds the client ready to run. Measured with the
 * daemon and a client pinned to one CPU (a /tmp script, 10 rounds of 5,000 reads, one in flight,
 * daemons side by side, five runs): polling 35.9-38.2k reads/s; not polling 37.4-40.2k, the
 * client preempted at 0.82-0.91 of its requests rather than asleep, as beside Xen's C daemon
 * (40.5-42.5k, 0.98). Where a client runs is asked of the addon (besidePeer: the socket's peer
 * process, its main thread's last CPU) at most once per PLACEMENT_TTL_MS per connection. A client
 * in this very process (the warm-up's) is not known to be anywhere, and is polled for as before.
 */
import type * as net from "node:net";
import { getSystemErrorName } from "node:util";
import type { BusyPollClock } from "../lib/busy-poll.js";
import { log } from "../lib/log.js";
import { xsio, type XsioAddon, type XsioReader } from "./native.js";

/** Longest single wait in the addon; then the event loop gets a turn. */
export const WAIT_SLICE_MS = 0.05;
/** How long a look at which CPU a client runs on holds. */
const PLACEMENT_TTL_MS = 10;
/** The addon polls at most this many sockets at once (MAX_FDS in xsio.c). */
const MAX_WAIT_FDS = 64;

/**
 * A socket's or server's file descriptor, or -1 (closed). Node.js has no public accessor;
 * `_handle.fd` is its libuv handle's, and the handle is gone once the descriptor is closed.
 */
export function fdOf(sock: net.Socket | net.Server): number {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : -1;
}

/** One connection of a NativeSocketIo. */
export interface NativeIoEntry {
  readonly sock: net.Socket;
  readonly fd: number;
  /**
   * Feed bytes read here to the connection (what its 'data' handler does). The chunk is the
   * reader's buffer, lent until this returns: it is read into again (Connection.input's `borrowed`).
   */
  readonly input: (chunk: Buffer) => void;
  /** False once the connection is closing: leave it to the event loop. */
  readonly live: () => boolean;
  /**
   * The last chunk from this client held several requests: it pipelines, its next requests are
   * usually there already, and the event loop reads them as cheaply (and writes the replies it
   * could not send at once). The addon waits only for clients with one request at a time.
   */
  pipelining: boolean;
  /** The poller's callback for the next turn while it polls (undefined: not polling). */
  due: (() => void) | undefined;
  /** When the poller's window ends (ms). */
  untilMs: number;
  /** Whether the client ran on the daemon's CPU at the last look, and until when that look holds (ms). */
  beside: boolean;
  besideUntilMs: number;
  /** The addon's reader of this socket; undefined once the stream reads it (end of stream) or it is closed. */
  reader: XsioReader | undefined;
  /** The connection asked to stop reading (back-pressure: NativeSocketIo.flow). */
  paused: boolean;
}

export interface NativeIoStats {
  /** Chunks of requests read while waiting in the addon (busy-polling). */
  nativeReads: number;
  /** Chunks of requests read by the addon's reader, when the event loop found the socket readable. */
  readerReads: number;
  /** Clients served through their stream because no reader could be started for them (EMFILE). */
  streamServed: number;
  /** Replies and events sent by the addon. */
  nativeSends: number;
}

/**
 * Runs the busy-poll turns of all of a server's connections: one setImmediate per event-loop
 * turn, in which the addon waits on every connection still polling.
 */
export class NativeSocketIo {
  readonly stats: NativeIoStats = { nativeReads: 0, readerReads: 0, streamServed: 0, nativeSends: 0 };
  readonly #addon: XsioAddon;
  readonly #buf = Buffer.allocUnsafe(64 * 1024);
  readonly #out = new Int32Array(1);
  readonly #fds = new Int32Array(MAX_WAIT_FDS);
  readonly #waitOn: NativeIoEntry[] = [];
  readonly #entries = new Set<NativeIoEntry>();
  #scheduled = false;
  /** Set when poll(2) itself failed: waits stay with the event loop from then on. */
  #broken = false;
  /** The listening socket: a new connection ends a wait too. */
  listenFd = -1;

  private constructor(addon: XsioAddon) {
    this.#addon = addon;
  }

  /** An instance, or undefined when the addon is not available (`addon`: tests' stand-in). */
  static create(addon: XsioAddon | undefined = xsio): NativeSocketIo | undefined {
    return addon === undefined ? undefined : new NativeSocketIo(addon);
  }

  /**
   * The socket's entry, or undefined if its descriptor is not known or cannot be read here (the
   * caller's stream serves it then). `sock` must not be read by its stream (paused since it was
   * accepted: pauseOnConnect): from here on the addon reads it, and `input` gets its bytes.
   */
  entry(sock: net.Socket, input: (chunk: Buffer) => void, live: () => boolean): NativeIoEntry | undefined {
    const fd = fdOf(sock);
    if (fd < 0) return undefined;
    const e: NativeIoEntry = { sock, fd, input, live, pipelining: false, due: undefined, untilMs: 0, beside: false, besideUntilMs: 0, reader: undefined, paused: false };
    try {
      e.reader = this.#addon.readStart(fd, this.#buf, (n) => this.#readerSaid(e, n));
    } catch (err) {
      // A reader takes a second descriptor: at the descriptor limit (EMFILE) the client is still
      // served, through its stream.
      this.stats.streamServed++;
      if (this.stats.streamServed === 1) log("warn", "xenstored", `a client is served through Node.js's stream, not native I/O: ${(err as Error).message} (${(err as NodeJS.ErrnoException).code ?? "?"}); said once, for the first such client`);
      return undefined;
    }
    this.#entries.add(e);
    sock.once("close", () => {
      this.#entries.delete(e);
      this.#stopReader(e);
    });
    return e;
  }

  /** Back-pressure for `e`'s connection (ConnectionOptions.flow): stop reading its client, and start again. */
  flow(e: NativeIoEntry): { pause(): void; resume(): void } {
    return {
      pause: () => {
        e.paused = true;
        if (e.reader === undefined) e.sock.pause();
        else this.#addon.readPause(e.reader);
      },
      resume: () => {
        e.paused = false;
        if (e.reader !== undefined && this.#addon.readResume(e.reader) !== 0) this.#stopReader(e);
        if (e.reader === undefined) e.sock.resume();
      },
    };
  }

  /** The reader's callback: bytes, or it has stopped (0: end of stream or hang-up; -errno). */
  #readerSaid(e: NativeIoEntry, n: number): void {
    if (n > 0) {
      this.stats.readerReads++;
      e.input(this.#buf.subarray(0, n));
      return;
    }
    this.#stopReader(e);
    if (n < 0) this.#readFailed(e, n);
    // The stream reads from now on: it finds the end of stream (or the error) and reports it.
    else if (!e.paused) e.sock.resume();
  }

  #stopReader(e: NativeIoEntry): void {
    if (e.reader === undefined) return;
    this.#addon.readClose(e.reader);
    e.reader = undefined;
  }

  /** recv(2) returns a socket's error once: report it as the stream would have. */
  #readFailed(e: NativeIoEntry, errno: number): void {
    const name = getSystemErrorName(errno);
    e.sock.destroy(Object.assign(new Error(`read ${name}`), { code: name, errno, syscall: "read" }));
  }

  /** A BusyPoll clock whose polling turns wait on `e`'s socket in the addon. */
  clock(e: NativeIoEntry): BusyPollClock {
    return {
      now: () => performance.now(),
      defer: (fn, untilMs) => {
        e.due = fn;
        e.untilMs = untilMs ?? 0;
        if (!this.#scheduled) {
          this.#scheduled = true;
          setImmediate(this.#turn);
        }
      },
      beside: (now) => {
        if (now >= e.besideUntilMs) {
          e.beside = this.#addon.besidePeer(e.fd) === 1;
          e.besideUntilMs = now + PLACEMENT_TTL_MS;
        }
        // A poll under way for this client ends now: no wait in the addon at the next turn.
        if (e.beside) e.untilMs = Math.min(e.untilMs, now);
        return e.beside;
      },
    };
  }

  /** Write `frame` to `e`'s socket: at once with send(2) when nothing is queued, else through the stream. */
  write(e: NativeIoEntry, frame: Buffer): void {
    const s = e.sock;
    if (s.writableLength === 0 && s.writableCorked === 0 && s.writable) {
      const n = this.#addon.sendNow(e.fd, frame);
      if (n === frame.length) {
        this.stats.nativeSends++;
        return;
      }
      // Partly sent (socket buffer full): the stream sends the rest. An error (EAGAIN, EPIPE, ...)
      // sent nothing: the stream tries again and reports a real error itself.
      if (n > 0) frame = frame.subarray(n);
    }
    s.write(frame);
  }

  /** True if `e`'s socket is open, still has the descriptor it was registered with, and is read here (not paused, not ended). */
  #readable(e: NativeIoEntry): boolean {
    return e.reader !== undefined && !e.paused && e.live() && !e.sock.destroyed && fdOf(e.sock) === e.fd;
  }

  readonly #turn = (): void => {
    this.#scheduled = false;
    const now = performance.now();
    const waitOn = this.#waitOn;
    let untilMs = now;
    let outputPending = false;
    // The sockets to wait on: clients with one request at a time, read here, that have not hung up.
    for (const e of this.#entries) {
      if (e.sock.writableLength > 0) outputPending = true;
      if (e.due === undefined || e.pipelining || e.untilMs <= now || waitOn.length === MAX_WAIT_FDS) continue;
      if (!this.#readable(e)) continue;
      this.#fds[waitOn.length] = e.fd;
      waitOn.push(e);
      if (e.untilMs > untilMs) untilMs = e.untilMs;
    }
    const budgetMs = Math.min(untilMs - now, WAIT_SLICE_MS);
    // Output waiting for a socket to drain is written by the event loop: waiting here would hold
    // it back (and its client with it). Such turns poll through the event loop instead.
    if (waitOn.length > 0 && budgetMs > 0 && !outputPending && !this.#broken) {
      // Every other client read here, and the listening socket, is watched: activity there ends
      // the wait, so the event loop serves it at once. (Not a paused one: it is not served, and
      // its pending bytes would end every wait at once.)
      let count = waitOn.length;
      for (const e of this.#entries) {
        if (count === MAX_WAIT_FDS) break;
        if (!waitOn.includes(e) && this.#readable(e)) this.#fds[count++] = e.fd;
      }
      if (this.listenFd >= 0 && count < MAX_WAIT_FDS) this.#fds[count++] = this.listenFd;
      const i = this.#addon.waitRecv(this.#fds, waitOn.length, count, this.#buf, budgetMs * 1e6, this.#out);
      const n = this.#out[0]!;
      if (i >= 0 && i < waitOn.length && n > 0) {
        this.stats.nativeReads++;
        waitOn[i]!.input(this.#buf.subarray(0, n));
      } else if (i >= 0 && i < waitOn.length && n < 0) {
        this.#readFailed(waitOn[i]!, n);
      } else if (i < 0 && n < 0) {
        this.#broken = true;
        log("warn", "xenstored", `poll(2) failed (${getSystemErrorName(n)}); busy-polling through the event loop from now on`);
      }
      // Otherwise: the budget passed, a watched socket stirred, or a polled one hung up (n = 0);
      // the event loop takes it from here.
    }
    waitOn.length = 0;
    // Each polling connection's poller decides whether to go on (and defers again).
    for (const e of this.#entries) {
      const fn = e.due;
      if (fn === undefined) continue;
      e.due = undefined;
      fn();
    }
  };
}
