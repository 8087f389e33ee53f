/**
 * JIT warm-up. A freshly started daemon runs its request path in V8's interpreter for the first
 * few thousand requests, several times slower than once optimised, so the first clients after a
 * (re)start would see a slow daemon. After the socket is up, the daemon exercises the same code on
 * a throwaway instance, in small batches that yield to real clients between them.
 *
 * A persistent daemon's throwaway instance journals too, into a directory of its own inside the
 * state directory (removed afterwards; one a killed daemon left is removed by the next warm-up):
 * without it the journal's encoder and everything it is inlined into were optimised only under
 * the first real clients. Its journal takes small chunks, so that the code that reserves and maps
 * the next chunk, and the records that straddle two, run here too: optimised code that meets a
 * branch it has never taken is thrown away (with the request path it was inlined into) and
 * compiled again. Measured in the benchmark before this: the persistent daemon's first chunk
 * boundary, in its fourth measured round, cost it that round at 64 in flight (its compiler
 * threads busy for 5-8 ms of a 10 ms phase), while the in-memory daemon had long settled. It
 * journals with durability "write" whatever the daemon's: with "fsync" it would block the event
 * loop for hundreds of fdatasyncs on the real disk, while real clients wait, and warm no code.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Duplex } from "node:stream";
import { setImmediate as yieldToClients } from "node:timers/promises";
import { createXenstored, type Xenstored } from "./daemon.js";
import { socketConnector } from "./client-socket.js";
import { RawConnection } from "./raw-connection.js";
import type { SocketServer } from "./server.js";

/** What `serve` gives back: where the throwaway instance is served, and how to stop. */
type Served = Pick<SocketServer, "path" | "close">;

/** Names of the throwaway instances' state directories inside a state directory. */
export const WARM_UP_PREFIX = ".warm-up-";

/**
 * The throwaway journal's chunk: a warm-up's ~200 KiB of records cross three boundaries. 64 KiB
 * is a multiple of every page size in use (a mapping's offset must be one).
 */
const WARM_UP_CHUNK = 64 * 1024;

export interface WarmUpOptions {
  batches?: number;
  signal?: AbortSignal;
  /** The daemon's state directory, if it has one: the throwaway instance journals below it. */
  stateDir?: string;
  /**
   * Serve the throwaway instance on a Unix socket as the daemon serves its own (listenUnix with the
   * same options, at a path of the caller's choosing) and send the requests through it, so that
   * the socket path is optimised too. Without it the requests go through an in-process connection.
   */
  serve?: (d: Xenstored) => Promise<Served>;
}

export async function warmUp(opts: WarmUpOptions = {}): Promise<void> {
  let scratch: string | undefined;
  let d: Xenstored | undefined;
  let server: Served | undefined;
  let c: RawConnection | undefined;
  // An abort ends the batch in flight too: its requests fail with the closed connection.
  const onAbort = (): void => c?.close();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    scratch = opts.stateDir === undefined ? undefined : scratchDir(opts.stateDir);
    // No lock of its own: the scratch directory is inside the daemon's, which holds one.
    d = createXenstored(scratch === undefined ? {} : { stateDir: scratch, journalChunk: WARM_UP_CHUNK, lock: false });
    let stream: Duplex;
    if (opts.serve === undefined) stream = d.openConnection({ domid: 0 });
    else {
      server = await opts.serve(d);
      stream = await socketConnector(server.path)(opts.signal);
    }
    c = new RawConnection(stream);
    await c.request("WATCH", "/warm|w|");
    const batches = opts.batches ?? 40;
    for (let b = 0; b < batches && opts.signal?.aborted !== true; b++) {
      // Creates (each batch's directory was removed two batches ago), updates, reads, a commit, an RM.
      const dir = `/warm/d${b % 4}`;
      // Started first: every request after it is awaited together, so none can fail unobserved
      // (an abort closes the connection under them).
      const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
      const reqs: Promise<unknown>[] = [];
      for (let i = 0; i < 64; i++) {
        const k = `${dir}/k${i % 48}`;
        reqs.push(c.request("WRITE", `${k}|0123456789abcdef`), c.request("READ", `${k}|`));
        if (i % 16 === 0) reqs.push(c.request("DIRECTORY", `${dir}|`), c.request("GET_PERMS", `${k}|`));
      }
      reqs.push(c.request("READ", `${dir}/k0|`, id), c.request("WRITE", `${dir}/k0|1`, id), c.request("TRANSACTION_END", "T|", id));
      await Promise.all(reqs);
      // One request in flight at a time too: over a socket, what a busy-polling daemon reads natively.
      for (let i = 0; i < 8; i++) {
        await c.request("WRITE", `${dir}/s${i}|0123456789abcdef`);
        await c.request("READ", `${dir}/s${i}|`);
      }
      await c.request("RM", `/warm/d${(b + 2) % 4}|`);
      await yieldToClients();
    }
  } catch (e) {
    if (opts.signal?.aborted !== true) throw e;
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    // The client first: a server's close waits for its connections.
    c?.close();
    const closing = server?.close();
    d?.close();
    await closing;
    if (scratch !== undefined) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** A fresh directory for the throwaway instance's journal, after removing any a killed daemon left. */
function scratchDir(stateDir: string): string {
  for (const f of fs.readdirSync(stateDir)) {
    if (f.startsWith(WARM_UP_PREFIX)) fs.rmSync(path.join(stateDir, f), { recursive: true, force: true });
  }
  return fs.mkdtempSync(path.join(stateDir, WARM_UP_PREFIX));
}
