/**
 * Adaptive busy-polling of the event loop, for a server whose clients send one request, wait for
 * the reply, then send the next (xenstore's usual client: libxenstore keeps one request in flight).
 *
 * Between two such requests the server has nothing to do and its thread sleeps in epoll_wait; the
 * client's next request must then wake it, and waking a sleeping thread — on a virtual machine a
 * halted vCPU: an interrupt, an exit to the hypervisor, a reschedule — costs about as much as the
 * server's whole work on a small request. While polled, libuv's poll phase does not sleep (a
 * pending setImmediate makes its timeout 0), so a request that arrives is read at once.
 *
 * The window adapts like Linux's cpuidle haltpoll governor (guest_halt_poll_ns, 200 µs by
 * default): a request that arrives while polling, or soon after the poll gave up, says polling
 * pays, and the window doubles (up to the maximum); a request after a quiet spell longer than the
 * maximum halves it, and below 10 µs polling stops until requests come close together again. So
 * an idle server does not poll at all, and a busy one polls at most `maxUs` after each request.
 *
 * The price is CPU for latency: up to `maxUs` of a core per quiet spell. `maxUs = 0` turns it off.
 * A server keeps one BusyPoll per client connection, so that it polls for a client that waits on
 * its own replies, and not for traffic that merely arrives often because many independent clients
 * (guests) each send now and then: each of those sees long quiet spells and stops polling.
 */
export interface BusyPollStats {
  /** Requests that arrived while polling: each one a wake-up saved. */
  hits: number;
  /** Requests after a quiet spell longer than the maximum window (each halves the window, if any). */
  misses: number;
  /** Requests from a client that ran on this thread's CPU: not polled for (BusyPollClock.beside). */
  beside: number;
}

export interface BusyPollClock {
  /** Milliseconds, monotonic (performance.now()). */
  now(): number;
  /**
   * Run `fn` after the current poll phase (setImmediate). `untilMs` is when the poll's window
   * ends: a clock that waits for input itself (xenstore/socket-io.ts) waits no longer than that.
   */
  defer(fn: () => void, untilMs?: number): void;
  /**
   * True when the client runs on this thread's CPU (`now`: the clock's time), so that it cannot
   * send its next request while this thread polls (xenstore/socket-io.ts). Asked at each
   * request; no polling then.
   */
  beside?(now: number): boolean;
}

const REAL_CLOCK: BusyPollClock = { now: () => performance.now(), defer: (fn) => setImmediate(fn) };
const MIN_WINDOW_MS = 0.01;

export class BusyPoll {
  readonly #maxMs: number;
  readonly #clock: BusyPollClock;
  #windowMs: number;
  /** Poll until this time (ms); polling is on while #armed. */
  #until = 0;
  #armed = false;
  /** When polling last stopped, or the last request while not polling (ms); NaN before any. */
  #idleSince = NaN;
  readonly #stats: BusyPollStats;

  /** `stats` may be shared by several pollers (a server's connections) to count them together. */
  constructor(maxUs: number, clock: BusyPollClock = REAL_CLOCK, stats: BusyPollStats = { hits: 0, misses: 0, beside: 0 }) {
    this.#maxMs = Math.max(0, maxUs) / 1000;
    this.#clock = clock;
    this.#windowMs = this.#maxMs;
    this.#stats = stats;
  }

  get hits(): number {
    return this.#stats.hits;
  }

  get misses(): number {
    return this.#stats.misses;
  }

  get beside(): number {
    return this.#stats.beside;
  }

  /** The current window in µs (0 = not polling after requests). */
  get windowUs(): number {
    return Math.round(this.#windowMs * 1000);
  }

  get polling(): boolean {
    return this.#armed;
  }

  /** Call when a request arrives: poll for a window after it. */
  kick(): void {
    if (this.#maxMs === 0) return;
    const now = this.#clock.now();
    if (this.#clock.beside?.(now) === true) {
      // The client runs on this CPU: its next request cannot come while this thread polls, and
      // sleeping serves it better (xenstore/socket-io.ts). A poll under way ends at its next
      // turn; the window is kept for when the two run apart again.
      this.#stats.beside++;
      if (this.#armed) this.#until = Math.min(this.#until, now);
      else this.#idleSince = now;
      return;
    }
    // Still armed past its window: the event loop was busy elsewhere and the poll's last check has
    // not run yet. That is not a hit; the poll ended at #until.
    const idleSince = this.#armed ? this.#until : this.#idleSince;
    if (this.#armed && now <= this.#until) {
      this.#stats.hits++;
      this.#windowMs = Math.min(this.#maxMs, this.#windowMs * 2);
    } else if (Number.isNaN(idleSince) || now - idleSince <= this.#maxMs) {
      // Shortly after polling stopped, a longer window would have caught this one (and the very
      // first request starts with the full window).
      this.#windowMs = Math.min(this.#maxMs, Math.max(MIN_WINDOW_MS, this.#windowMs * 2));
    } else {
      this.#stats.misses++;
      this.#windowMs = this.#windowMs / 2 < MIN_WINDOW_MS ? 0 : this.#windowMs / 2;
    }
    if (this.#windowMs === 0) {
      this.#idleSince = now;
      return;
    }
    this.#until = now + this.#windowMs;
    if (!this.#armed) {
      this.#armed = true;
      this.#clock.defer(this.#spin, this.#until);
    }
  }

  readonly #spin = (): void => {
    const now = this.#clock.now();
    if (now < this.#until) {
      this.#clock.defer(this.#spin, this.#until);
      return;
    }
    this.#armed = false;
    this.#idleSince = now;
  };
}
