/**
 * The xenstore client against vmstack's daemon in-process, and against a scripted fake daemon
 * for the behaviours a real daemon can't be made to show on demand (event before/after reply,
 * replies out of order, silence, oversized replies, unknown error names).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Duplex } from "node:stream";
import { XenstoreClient, defaultXenstoreSocket, walkTree, type XenstoreConnector } from "../../src/xenstore/client.js";
import { createXenstored, duplexPair, encodeMessage, FrameDecoder, splitNul, type OutgoingMessage, type XsMessage } from "../../src/xenstore/index.js";
import { isVmstackError } from "../../src/lib/errors.js";

function daemonClient(): { client: XenstoreClient; connector: XenstoreConnector; close(): Promise<void> } {
  const d = createXenstored();
  const connector: XenstoreConnector = () => Promise.resolve(d.openConnection({ domid: 0 }));
  const client = new XenstoreClient(d.openConnection({ domid: 0 }), { reconnect: connector, reconnectTimeoutMs: 2000 });
  return {
    client,
    connector,
    close: async () => {
      await client.close();
      d.close();
    },
  };
}

/** A fake daemon: `handle` gets each request and a `send` for replies and events. */
function fakeDaemon(handle: (m: XsMessage, send: (o: OutgoingMessage) => void) => void): { client: XenstoreClient; received: XsMessage[]; server: Duplex } {
  const [a, b] = duplexPair();
  const received: XsMessage[] = [];
  const dec = new FrameDecoder();
  b.on("data", (chunk: Buffer) => {
    for (const r of dec.push(chunk)) {
      if (r.kind !== "message") continue;
      const m = { ...r.message, payload: Buffer.from(r.message.payload) };
      received.push(m);
      handle(m, (o) => b.write(encodeMessage(o, { maxPayload: Infinity })));
    }
  });
  return { client: new XenstoreClient(a), received, server: b };
}

const ok = (m: XsMessage): OutgoingMessage => ({ type: m.type, reqId: m.reqId, txId: m.txId, payload: "OK\0" });

await test("read, write, mkdir, rm, directory, exists and permissions round-trip through vmstack's daemon", async () => {
  const { client, close } = daemonClient();
  try {
    await client.write("/a/b", "hello");
    assert.equal(await client.read("/a/b"), "hello");
    await client.write("/a/bin", Buffer.from([0, 255]));
    assert.deepEqual(await client.readBytes("/a/bin"), Buffer.from([0, 255]));
    await client.mkdir("/a/dir");
    assert.deepEqual((await client.directory("/a")).sort(), ["b", "bin", "dir"]);
    assert.equal(await client.exists("/a/dir"), true);
    assert.equal(await client.exists("/a/none"), false);
    assert.equal(await client.tryRead("/a/none"), undefined);
    await client.setPerms("/a/b", [
      { access: "n", domid: 0 },
      { access: "r", domid: 5 },
    ]);
    assert.deepEqual(await client.getPerms("/a/b"), [
      { access: "n", domid: 0 },
      { access: "r", domid: 5 },
    ]);
    await client.rm("/a");
    assert.equal(await client.exists("/a/b"), false);
    assert.equal(await client.getDomainPath(7), "/local/domain/7");
  } finally {
    await close();
  }
});

await test("an error reply becomes an XsError with the errno, op and path as facts", async () => {
  const { client, close } = daemonClient();
  try {
    await assert.rejects(client.read("/missing/node"), (e: unknown) => {
      assert.ok(isVmstackError(e, "XS_ENOENT"));
      assert.deepEqual(e.facts, { errno: "ENOENT", op: "READ", path: "/missing/node" });
      assert.match(e.message, /READ \/missing\/node: ENOENT/);
      return true;
    });
  } finally {
    await close();
  }
});

await test("replies are matched by req_id even when the daemon answers out of order", async () => {
  const held: XsMessage[] = [];
  const { client, received } = fakeDaemon((m, send) => {
    held.push(m);
    if (held.length < 50) return;
    for (const r of held.reverse()) send({ type: r.type, reqId: r.reqId, payload: Buffer.from(`value-of-${splitNul(r.payload)[0] ?? ""}`) });
  });
  const values = await Promise.all(Array.from({ length: 50 }, (_, i) => client.read(`/k${i}`)));
  assert.deepEqual(values, Array.from({ length: 50 }, (_, i) => `value-of-/k${i}`));
  assert.equal(new Set(received.map((m) => m.reqId)).size, 50, "every request has its own req_id");
  await client.close();
});

await test("a watch sees its initial event whether the daemon sends it before or after the WATCH reply", async () => {
  for (const eventFirst of [true, false]) {
    const { client } = fakeDaemon((m, send) => {
      if (m.op !== "WATCH") {
        send(ok(m));
        return;
      }
      const [path = "", token = ""] = splitNul(m.payload);
      const event = { type: "WATCH_EVENT" as const, payload: `${path}\0${token}\0` };
      if (eventFirst) send(event);
      send(ok(m));
      if (!eventFirst) send(event);
      send({ ...event, payload: `${path}/child\0${token}\0` });
    });
    const w = await client.watch("/w");
    const seen: string[] = [];
    for await (const e of w) {
      seen.push(e.path);
      if (seen.length === 2) break;
    }
    assert.deepEqual(seen, ["/w", "/w/child"], eventFirst ? "event before reply" : "event after reply");
    await client.close();
  }
});

await test("leaving a watch's loop sends UNWATCH with the same path and token", async () => {
  const { client, received } = fakeDaemon((m, send) => {
    send(ok(m));
    if (m.op === "WATCH") send({ type: "WATCH_EVENT", payload: Buffer.concat([m.payload]) });
  });
  const w = await client.watch("/p", { token: "tok" });
  for await (const e of w) {
    assert.deepEqual(e, { path: "/p", token: "tok" });
    break;
  }
  await client.getDomainPath(0).catch(() => undefined); // a round trip after the UNWATCH
  assert.deepEqual(
    received.filter((m) => m.op === "UNWATCH").map((m) => splitNul(m.payload)),
    [["/p", "tok"]],
  );
  await client.close();
});

await test("watch events from vmstack's daemon arrive as an async iterator, including subtree changes", async () => {
  const { client, close } = daemonClient();
  try {
    const w = await client.watch("/vm");
    await client.write("/vm/x", "1");
    await client.rm("/vm/x");
    const seen: string[] = [];
    for await (const e of w) {
      seen.push(e.path);
      if (seen.length === 3) break;
    }
    assert.deepEqual(seen, ["/vm", "/vm/x", "/vm/x"]);
  } finally {
    await close();
  }
});

await test("an aborted signal ends a watch and rejects a request the daemon never answers", async () => {
  const { client } = fakeDaemon((m, send) => {
    if (m.op === "WATCH" || m.op === "UNWATCH") send(ok(m));
    // READ: never answered.
  });
  const ac = new AbortController();
  const pending = client.read("/slow", { signal: ac.signal });
  const w = await client.watch("/w", { signal: ac.signal });
  const iterating = (async () => {
    const out: string[] = [];
    for await (const e of w) out.push(e.path);
    return out;
  })();
  ac.abort(new Error("stop"));
  await assert.rejects(pending, /stop/);
  await assert.rejects(iterating, /stop/);
  assert.equal(client.inFlight, 0);
  // A signal already aborted: the request is a rejected promise (never a synchronous throw), and nothing is sent.
  const late = client.read("/late", { signal: ac.signal });
  const raw = client.raw("READ", "/late\0", 0, { signal: ac.signal });
  await assert.rejects(late, /stop/);
  await assert.rejects(raw, /stop/);
  assert.equal(client.inFlight, 0);
  await client.close();
});

await test("transaction() retries the body on EAGAIN and returns its value once the commit succeeds", async () => {
  const { client, connector, close } = daemonClient();
  const other = new XenstoreClient(await connector(undefined));
  try {
    await client.write("/counter", "0");
    let attempts = 0;
    const result = await client.transaction(async (tx) => {
      attempts++;
      const n = Number(await tx.read("/counter"));
      if (attempts === 1) await other.write("/counter", "10"); // a conflicting outside write
      await tx.write("/counter", String(n + 1));
      return n + 1;
    });
    assert.equal(attempts, 2);
    assert.equal(result, 11);
    assert.equal(await client.read("/counter"), "11");
  } finally {
    await other.close();
    await close();
  }
});

await test("transaction() gives up with XS_EAGAIN after maxAttempts and aborts when the body throws", async () => {
  const { client, connector, close } = daemonClient();
  const other = new XenstoreClient(await connector(undefined));
  try {
    await client.write("/c", "0");
    let attempts = 0;
    await assert.rejects(
      client.transaction(
        async (tx) => {
          attempts++;
          await tx.read("/c");
          await other.write("/c", String(attempts));
          await tx.write("/c", "mine");
        },
        { maxAttempts: 3 },
      ),
      (e: unknown) => isVmstackError(e, "XS_EAGAIN"),
    );
    assert.equal(attempts, 3);
    await assert.rejects(
      client.transaction(async (tx) => {
        await tx.write("/c", "never");
        throw new Error("body failed");
      }),
      /body failed/,
    );
    assert.equal(await client.read("/c"), "3");
  } finally {
    await other.close();
    await close();
  }
});

await test("directory() falls back to DIRECTORY_PART when the list is over 4096 bytes", async () => {
  const { client, close } = daemonClient();
  try {
    const names = Array.from({ length: 400 }, (_, i) => `a-rather-long-child-name-${String(i).padStart(4, "0")}`);
    await Promise.all(names.map((n) => client.write(`/big/${n}`, "")));
    assert.deepEqual((await client.directory("/big")).sort(), names);
  } finally {
    await close();
  }
});

await test("after the connection drops, requests in flight fail, watches come back with a new initial event, and old transactions are dead", async () => {
  const d = createXenstored();
  let current: Duplex | undefined;
  const connector: XenstoreConnector = () => {
    current = d.openConnection({ domid: 0 });
    return Promise.resolve(current);
  };
  const client = new XenstoreClient(await connector(undefined), { reconnect: connector, reconnectTimeoutMs: 2000 });
  try {
    const w = await client.watch("/r");
    assert.deepEqual((await w.next()).value, { path: "/r", token: w.token });
    const tx = await client.startTransaction();
    const epoch = client.epoch;
    current?.destroy();
    await assert.rejects(client.read("/r"), (e: unknown) => isVmstackError(e, "XS_DISCONNECTED") || isVmstackError(e, "XS_ENOENT"));
    assert.deepEqual((await w.next()).value, { path: "/r", token: w.token }, "initial event again after reconnect");
    assert.equal(client.epoch, epoch + 1);
    await assert.rejects(tx.write("/r/x", "1"), (e: unknown) => isVmstackError(e, "XS_DISCONNECTED"));
    await client.write("/r/y", "2");
    assert.deepEqual((await w.next()).value, { path: "/r/y", token: w.token });
  } finally {
    await client.close();
    d.close();
  }
});

await test("an oversized reply or an unknown error name is reported, not trusted, and an oversized request is not sent", async () => {
  const big = fakeDaemon((m, send) => send({ type: m.type, reqId: m.reqId, payload: Buffer.alloc(5000) }));
  await assert.rejects(big.client.read("/x"), (e: unknown) => isVmstackError(e, "XS_PROTOCOL"));
  await assert.rejects(big.client.write("/x", Buffer.alloc(5000)), (e: unknown) => isVmstackError(e, "XS_E2BIG") && e.facts["op"] === "WRITE");
  const odd = fakeDaemon((m, send) => send({ type: "ERROR", reqId: m.reqId, payload: "EWHATEVER\0" }));
  await assert.rejects(odd.client.read("/x"), (e: unknown) => isVmstackError(e, "XS_EINVAL") && e.facts["reply"] === "EWHATEVER");
  await odd.client.close();
});

await test("walkTree lists parents before children, in the daemon's order, with permissions on request", async () => {
  const { client, close } = daemonClient();
  try {
    await client.write("/t/a/x", "1");
    await client.write("/t/b", "2");
    const seen: string[] = [];
    for await (const e of walkTree(client, "/t", { perms: true })) seen.push(`${e.depth} ${e.path}=${e.value.toString()} ${e.perms?.length ?? 0}`);
    assert.deepEqual(seen.slice(0, 2), ["0 /t= 1", "1 /t/a= 1"]);
    assert.equal(seen.length, 4);
  } finally {
    await close();
  }
});

await test("the default socket is $XENSTORED_PATH, then $XENSTORED_RUNDIR/socket, then vmstack's own", () => {
  assert.equal(defaultXenstoreSocket({ XENSTORED_PATH: "/a/sock", XENSTORED_RUNDIR: "/b" }), "/a/sock");
  assert.equal(defaultXenstoreSocket({ XENSTORED_RUNDIR: "/b" }), "/b/socket");
  assert.equal(defaultXenstoreSocket({ VMSTACK_RUN_DIR: "/run/x" }), "/run/x/xenstored/socket");
});

await test("requests made in the same tick leave together (16 per write); a lone request is not held back", async () => {
  const writes: number[] = [];
  const { client, server } = fakeDaemon((m, send) => send(ok(m)));
  const frameCount = (chunk: Buffer): number => new FrameDecoder().push(chunk).length;
  server.on("data", (chunk: Buffer) => writes.push(frameCount(chunk)));
  try {
    await Promise.all(Array.from({ length: 10 }, (_, i) => client.write(`/batch/n${i}`, "v")));
    assert.deepEqual(writes, [10], "ten requests in one tick: one write carrying all ten frames");
    writes.length = 0;
    const lone = client.write("/batch/lone", "v");
    // One microtask hop: the request is out already, not waiting for an event-loop turn.
    await Promise.resolve();
    assert.deepEqual(writes, [1], "a lone request leaves within the microtask that follows it");
    await lone;
    await client.write("/batch/next", "v");
    assert.deepEqual(writes, [1, 1], "sequential requests: each leaves on its own");
    writes.length = 0;
    await Promise.all(Array.from({ length: 40 }, (_, i) => client.write(`/batch/m${i}`, "v")));
    assert.deepEqual(writes, [16, 16, 8], "many in one tick: a write per 16, so the daemon can start on the first ones");
  } finally {
    await client.close();
  }
});

await test("a request made in the same tick as close() is rejected, not left hanging", async () => {
  const { client, close } = daemonClient();
  const pending = client.write("/late", "1");
  await client.close();
  await assert.rejects(pending, (e: unknown) => isVmstackError(e));
  await close();
});
