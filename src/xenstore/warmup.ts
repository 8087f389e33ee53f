/**
 * JIT warm-up. A freshly started daemon runs its request path in V8's interpreter for the first
 * few thousand requests, several times slower than once optimised, so the first clients after a
 * (re)start would see a slow daemon. After the socket is up, the daemon exercises the same code on
 * a throwaway in-memory instance, in small batches that yield to real clients between them.
 */
import { setImmediate as yieldToClients } from "node:timers/promises";
import { createXenstored } from "./daemon.js";
import { RawConnection } from "./raw-connection.js";

export async function warmUp(opts: { batches?: number; signal?: AbortSignal } = {}): Promise<void> {
  const d = createXenstored();
  try {
    const c = new RawConnection(d.openConnection({ domid: 0 }));
    await c.request("WATCH", "/warm|w|");
    const batches = opts.batches ?? 40;
    for (let b = 0; b < batches && opts.signal?.aborted !== true; b++) {
      const reqs: Promise<unknown>[] = [];
      for (let i = 0; i < 64; i++) {
        const k = `/warm/d${i % 8}/k${(b * 64 + i) % 500}`;
        reqs.push(c.request("WRITE", `${k}|0123456789abcdef`), c.request("READ", `${k}|`));
        if (i % 16 === 0) reqs.push(c.request("DIRECTORY", `/warm/d${i % 8}|`), c.request("GET_PERMS", `${k}|`));
      }
      const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
      reqs.push(c.request("READ", "/warm/d0/k0|", id), c.request("WRITE", "/warm/d0/k0|1", id), c.request("TRANSACTION_END", "T|", id));
      await Promise.all(reqs);
      await yieldToClients();
    }
    c.close();
  } finally {
    d.close();
  }
}
