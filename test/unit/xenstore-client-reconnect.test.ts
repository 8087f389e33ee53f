/**
 * The client across a xenstored restart on the same Unix socket and state directory: it waits
 * for the socket to come back, keeps its watches, and the transaction helper reruns a body whose
 * connection died under it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectXenstore } from "../../src/xenstore/client.js";
import { createXenstored, listenUnix, type SocketServer, type Xenstored } from "../../src/xenstore/index.js";
import { isVmstackError } from "../../src/lib/errors.js";

await test("a client reconnects after xenstored restarts, re-registers its watches and reruns an interrupted transaction", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-xsc-"));
  const socket = join(dir, "socket");
  const stateDir = join(dir, "state");
  let daemon: Xenstored = createXenstored({ stateDir });
  let server: SocketServer = await listenUnix(daemon, socket);
  const restart = async (): Promise<void> => {
    daemon.close(); // closes every connection and flushes the journal; then the listener can close
    await server.close();
    daemon = createXenstored({ stateDir });
    server = await listenUnix(daemon, socket);
  };
  const client = await connectXenstore({ socket, reconnectTimeoutMs: 5000 });
  try {
    await client.write("/kept", "before");
    const watch = await client.watch("/kept");
    assert.equal((await watch.next()).value?.path, "/kept");

    await restart();
    // The request may race the close (XS_DISCONNECTED) or go to the new connection.
    const first = await client.read("/kept").catch((e: unknown) => {
      assert.ok(isVmstackError(e, "XS_DISCONNECTED"), String(e));
      return client.read("/kept");
    });
    assert.equal(first, "before", "the state survived the restart");
    assert.equal((await watch.next()).value?.path, "/kept", "a new initial event after re-registering");
    await client.write("/kept", "after");
    assert.equal((await watch.next()).value?.path, "/kept", "events flow on the new connection");

    let attempts = 0;
    const value = await client.transaction(async (tx) => {
      attempts++;
      const v = await tx.read("/kept");
      if (attempts === 1) await restart();
      await tx.write("/kept", v + "+tx");
      return v;
    });
    assert.equal(attempts, 2, "the body ran again on the new connection");
    assert.equal(value, "after");
    assert.equal(await client.read("/kept"), "after+tx");
  } finally {
    await client.close();
    daemon.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
