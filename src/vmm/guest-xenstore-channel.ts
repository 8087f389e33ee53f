/**
 * The guest's xenstore channel, host side: QEMU serves the virtio-serial port
 * `org.vmstack.xenstore` on a Unix socket in the domain's run directory; vmstackd connects to it
 * and relays the bytes, unchanged, to an in-process xenstored connection bound to the domain's
 * domid. That connection is unprivileged: permission checks and the per-domain quotas (nodes,
 * watches, transactions, outstanding replies, write rate) apply exactly as to a Xen guest's ring.
 *
 * Nothing here parses the guest's bytes: the xenstored connection does (connection.ts), and it
 * answers a malformed request with XS_ERROR and closes the connection on an oversized frame. When
 * xenstored closes the connection, the relay RESETS the channel: it drops its socket to QEMU (the
 * guest's port reports POLLHUP, its relay throws away half-received frames) and connects again
 * with a fresh xenstored connection after a backoff (100 ms doubling to 5 s, so a guest that keeps
 * sending garbage costs little). The guest side starts every connection with RESET_WATCHES and
 * registers its watches again (guest/xenstore.c), which also covers a vmstackd restart: the
 * restarted daemon re-attaches the channel of every adopted domain and the guest sees one reset.
 *
 * The first connection of a channel is a KICK: connect, hang up, wait, connect for good. A guest
 * whose relay still believes in an earlier connection (a guest restored from a save file, whose
 * port state came along in the migration stream) thereby sees the port hang up and starts clean;
 * for a guest that has not booted yet, or one whose old vmstackd died (its port already hung up),
 * it changes nothing.
 */
import { connect, type Socket } from "node:net";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { XENSTORE_SOCKET_NAME } from "../guest/index.js";
import { retryUntil } from "../lib/retry.js";
import { messageOf } from "../lib/errors.js";

export interface GuestXenstoreChannelOptions {
  /** QEMU's chardev socket for the port. */
  readonly socketPath: string;
  readonly domid: number;
  /** A new xenstored connection bound to `domid` (Xenstored.openConnection). */
  readonly open: (domid: number) => Duplex;
  readonly log: (message: string) => void;
  readonly label: string;
  /** First delay before reconnecting after a reset (doubles up to 5 s); tests shorten it. */
  readonly resetDelayMs?: number;
  /** How long to try reaching QEMU's socket (it exists once QEMU answers QMP). */
  readonly connectTimeoutMs?: number;
  /** The hang-up of the first connection lasts this long (the guest looks every 50 ms); 0: no kick. */
  readonly kickMs?: number;
}

type EndReason = "qemu" | "xenstored" | "stopped";

const MAX_RESET_DELAY_MS = 5000;
/** A connection that lived this long was healthy: the next reset starts from the first delay again. */
const HEALTHY_MS = 10_000;

export class GuestXenstoreChannel {
  /** How many times xenstored closed the guest's connection and the channel was reset. */
  resets = 0;
  /** How many times the channel was connected to QEMU's socket. */
  connections = 0;
  readonly #o: GuestXenstoreChannelOptions;
  readonly #stop = new AbortController();
  readonly done: Promise<void>;

  constructor(o: GuestXenstoreChannelOptions) {
    this.#o = o;
    this.done = this.#run().catch((e: unknown) => {
      if (!this.#stop.signal.aborted) o.log(`${o.label}: xenstore channel stopped: ${messageOf(e)}`);
    });
  }

  get closed(): boolean {
    return this.#stop.signal.aborted;
  }

  close(): void {
    this.#stop.abort();
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    let delay = this.#o.resetDelayMs ?? 100;
    const kick = this.#o.kickMs ?? 300;
    if (kick > 0) {
      (await this.#connect()).destroy();
      await sleep(kick, undefined, { signal });
    }
    while (!signal.aborted) {
      const sock = await this.#connect();
      const started = Date.now();
      this.connections++;
      const why = await this.#relay(sock);
      if (why !== "xenstored") return;
      this.resets++;
      if (Date.now() - started > HEALTHY_MS) delay = this.#o.resetDelayMs ?? 100;
      this.#o.log(`${this.#o.label}: xenstored closed the guest's connection; resetting the channel in ${delay} ms`);
      await sleep(delay, undefined, { signal });
      delay = Math.min(delay * 2, MAX_RESET_DELAY_MS);
    }
  }

  #connect(): Promise<Socket> {
    return retryUntil(
      async () => {
        const s = connect(this.#o.socketPath);
        try {
          await once(s, "connect", { signal: this.#stop.signal });
          return s;
        } catch (e) {
          s.destroy();
          if (this.#stop.signal.aborted) throw e;
          // ECONNREFUSED/ENOENT: QEMU has not created the socket yet, or another client holds it.
          return undefined;
        }
      },
      { what: `the xenstore channel of ${this.#o.label}`, timeoutMs: this.#o.connectTimeoutMs ?? 30_000, signal: this.#stop.signal, maxDelayMs: 200 },
    );
  }

  /** Pipes bytes both ways with backpressure until one side ends; tears both down. */
  #relay(sock: Socket): Promise<EndReason> {
    const xs = this.#o.open(this.#o.domid);
    return new Promise<EndReason>((resolve) => {
      let ended = false;
      const end = (why: EndReason): void => {
        if (ended) return;
        ended = true;
        this.#stop.signal.removeEventListener("abort", onStop);
        sock.destroy();
        xs.destroy();
        resolve(why);
      };
      const onStop = (): void => end("stopped");
      this.#stop.signal.addEventListener("abort", onStop, { once: true });
      sock.on("data", (chunk: Buffer) => {
        if (!xs.write(chunk)) sock.pause();
      });
      xs.on("drain", () => sock.resume());
      xs.on("data", (chunk: Buffer) => {
        if (!sock.write(chunk)) xs.pause();
      });
      sock.on("drain", () => xs.resume());
      // Errors end the relay like a close; the 'close' that follows finds it ended.
      sock.on("error", (e: Error) => {
        this.#o.log(`${this.#o.label}: xenstore channel socket: ${e.message}`);
        end("qemu");
      });
      sock.on("close", () => end("qemu"));
      sock.on("end", () => end("qemu"));
      xs.on("error", () => end("xenstored"));
      xs.on("close", () => end("xenstored"));
      xs.on("end", () => end("xenstored"));
    });
  }
}

/**
 * The channels of all domains (one per domid). A domain without the port (agent=false, or
 * launched by an older vmstack) has none. With an external xenstored (`open` undefined) nothing
 * is served: that daemon's socket makes every connection dom0, so vmstackd cannot hand the guest
 * a connection bound to its domid; the guest's tools then time out, and vmstackd says why once.
 */
export class GuestXenstoreChannels {
  readonly #channels = new Map<number, GuestXenstoreChannel>();
  #explained = false;

  constructor(
    private readonly open: ((domid: number) => Duplex) | undefined,
    private readonly log: (message: string) => void,
    private readonly extra: Pick<GuestXenstoreChannelOptions, "resetDelayMs" | "connectTimeoutMs" | "kickMs"> = {},
  ) {}

  attach(domid: number, runDir: string, name: string): GuestXenstoreChannel | undefined {
    this.detach(domid);
    const socketPath = join(runDir, XENSTORE_SOCKET_NAME);
    if (!existsSync(socketPath)) return undefined;
    if (this.open === undefined) {
      if (!this.#explained) {
        this.log(`guest xenstore channels are not served: vmstackd uses an external xenstored, whose socket connections are all privileged (dom0); a guest's connection must be bound to its domid, which only the in-process xenstored offers`);
        this.#explained = true;
      }
      return undefined;
    }
    const ch = new GuestXenstoreChannel({ socketPath, domid, open: this.open, log: this.log, label: `${name} (domid ${domid})`, ...this.extra });
    this.#channels.set(domid, ch);
    return ch;
  }

  get(domid: number): GuestXenstoreChannel | undefined {
    return this.#channels.get(domid);
  }

  detach(domid: number): void {
    this.#channels.get(domid)?.close();
    this.#channels.delete(domid);
  }

  closeAll(): void {
    for (const ch of this.#channels.values()) ch.close();
    this.#channels.clear();
  }
}
