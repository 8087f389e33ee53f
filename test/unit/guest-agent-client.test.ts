import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { finished } from "node:stream/promises";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { isVmstackError } from "../../src/lib/errors.js";
import { AgentClient } from "../../src/guest/agent-client.js";
import type { Message } from "../../src/guest/protocol.js";
import { FrameDecoder, MAX_PAYLOAD, STDIN_WINDOW, encodeMessage } from "../../src/guest/protocol.js";

/** Two connected in-memory streams, like the two ends of a socket. */
function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
      destroy(err, cb) {
        // Like a socket: the peer sees the end.
        const p = peer();
        if (!p.readableEnded && !p.destroyed) p.push(null);
        cb(err);
      },
    });
  ends.push(make(() => ends[1] as Duplex), make(() => ends[0] as Duplex));
  return [ends[0] as Duplex, ends[1] as Duplex];
}

type Encodable = Exclude<Message, { type: "invalid" }>;

/** A scripted guest: sees every host frame, answers through `send`. */
function fakeGuest(end: Duplex, onMessage: (m: Message, send: (m: Encodable) => void) => void): { received: Message[] } {
  const decoder = new FrameDecoder();
  const received: Message[] = [];
  const send = (m: Encodable): void => void end.write(encodeMessage(m));
  end.on("data", (chunk: Buffer) => {
    for (const ev of decoder.push(chunk)) {
      if (ev.kind !== "message") continue;
      received.push(ev.message);
      onMessage(ev.message, send);
    }
  });
  return { received };
}

const reply = (id: number, version = 1): Encodable => ({
  type: "helloReply", id, version, maxPayload: MAX_PAYLOAD, agentVersion: "test", kernel: "Fake 1.0",
});

/** Answers HELLO; everything else goes to `rest`. */
function helloThen(rest: (m: Message, send: (m: Encodable) => void) => void = () => undefined) {
  return (m: Message, send: (m: Encodable) => void): void => {
    if (m.type === "hello") send(reply(m.id));
    else rest(m, send);
  };
}

describe("AgentClient against a scripted guest", () => {
  test("connect() repeats HELLO until the guest answers one", async () => {
    const [host, guest] = duplexPair();
    let hellos = 0;
    fakeGuest(guest, (m, send) => {
      if (m.type === "hello" && ++hellos === 3) send(reply(m.id));
    });
    const client = await AgentClient.connect(host, { timeoutMs: 5000, helloIntervalMs: 5 });
    assert.equal(client.info.kernel, "Fake 1.0");
    assert.ok(hellos >= 3);
    client.close();
  });

  test("a READY from the guest triggers an immediate HELLO", async () => {
    const [host, guest] = duplexPair();
    let hellos = 0;
    const g = fakeGuest(guest, (m, send) => {
      // Ignore the first HELLO, as if the guest had not been listening yet.
      if (m.type === "hello" && ++hellos > 1) send(reply(m.id));
    });
    const connecting = AgentClient.connect(host, { timeoutMs: 5000, helloIntervalMs: 60_000 });
    await sleep(10);
    guest.write(encodeMessage({ type: "ready", id: 0, version: 1 }));
    const client = await connecting;
    assert.equal(g.received.filter((m) => m.type === "hello").length, 2);
    client.close();
  });

  test("garbage and stale replies around the handshake are tolerated", async () => {
    const [host, guest] = duplexPair();
    fakeGuest(guest, (m, send) => {
      if (m.type !== "hello") return;
      guest.write(Buffer.from("\x00\x01tail of an old frame"));
      send({ type: "ok", id: 999 });
      send(reply(m.id));
    });
    const client = await AgentClient.connect(host, { timeoutMs: 5000 });
    assert.equal(client.connected, true);
    client.close();
  });

  test("a guest speaking another protocol version is refused with both versions named", async () => {
    const [host, guest] = duplexPair();
    fakeGuest(guest, (m, send) => {
      if (m.type === "hello") send(reply(m.id, 7));
    });
    await assert.rejects(AgentClient.connect(host, { timeoutMs: 5000 }), (e: unknown) => {
      return isVmstackError(e, "GUEST_PROTOCOL_VERSION") && /protocol 7/.test(e.message);
    });
  });

  test("a silent guest fails the handshake at its deadline", async () => {
    const [host] = duplexPair();
    await assert.rejects(AgentClient.connect(host, { timeoutMs: 50, helloIntervalMs: 5 }), (e: unknown) =>
      isVmstackError(e, "GUEST_HANDSHAKE_TIMEOUT"),
    );
  });

  test("an aborted handshake rejects with ABORTED", async () => {
    const [host] = duplexPair();
    const ac = new AbortController();
    const p = AgentClient.connect(host, { timeoutMs: 5000, signal: ac.signal });
    ac.abort();
    await assert.rejects(p, (e: unknown) => isVmstackError(e, "ABORTED"));
  });

  test("the guest going away mid-command rejects the result with GUEST_GONE and ends the streams", async () => {
    const [host, guest] = duplexPair();
    fakeGuest(
      guest,
      helloThen((m, send) => {
        if (m.type !== "exec") return;
        send({ type: "started", id: m.id, pid: 77 });
        send({ type: "stdout", id: m.id, data: Buffer.from("partial") });
        setImmediate(() => guest.destroy());
      }),
    );
    const client = await AgentClient.connect(host, { timeoutMs: 5000 });
    const h = client.exec({ argv: ["sleep", "100"] });
    const out: Buffer[] = [];
    h.stdout.on("data", (c: Buffer) => out.push(c));
    assert.equal(await h.pid, 77);
    await assert.rejects(h.result, (e: unknown) => isVmstackError(e, "GUEST_GONE") && /sleep 100/.test(e.message));
    await finished(h.stdout);
    assert.equal(Buffer.concat(out).toString(), "partial");
    assert.equal(client.connected, false);
    assert.throws(() => client.exec({ argv: ["true"] }), (e: unknown) => isVmstackError(e, "GUEST_GONE"));
  });

  test("stdin never has more than the window unacknowledged", async () => {
    const [host, guest] = duplexPair();
    let inFlight = 0;
    let maxInFlight = 0;
    let total = 0;
    let eof = false;
    fakeGuest(
      guest,
      helloThen((m, send) => {
        if (m.type === "exec") send({ type: "started", id: m.id, pid: 1 });
        if (m.type !== "stdin") return;
        if (m.data.length === 0) {
          eof = true;
          send({ type: "exit", id: m.id, exitCode: 0, signal: null, timedOut: false, outputHeldOpen: false, durationMs: 1 });
          return;
        }
        inFlight += m.data.length;
        total += m.data.length;
        maxInFlight = Math.max(maxInFlight, inFlight);
        // Acknowledge later, like a slow reader.
        setTimeout(() => {
          inFlight -= m.data.length;
          send({ type: "stdinAck", id: m.id, bytes: m.data.length });
        }, 2);
      }),
    );
    const client = await AgentClient.connect(host, { timeoutMs: 5000 });
    const h = client.exec({ argv: ["cat"], stdin: "pipe" });
    await h.writeStdin(Buffer.alloc(STDIN_WINDOW * 3 + 1000));
    await h.closeStdin();
    const r = await h.result;
    assert.equal(r.exitCode, 0);
    assert.equal(total, STDIN_WINDOW * 3 + 1000);
    assert.ok(eof);
    assert.ok(maxInFlight <= STDIN_WINDOW, `max in flight ${maxInFlight}`);
    client.close();
  });

  test("an ERROR for an exec rejects both pid and result with the guest's message", async () => {
    const [host, guest] = duplexPair();
    fakeGuest(
      guest,
      helloThen((m, send) => {
        if (m.type === "exec") send({ type: "error", id: m.id, code: 2, message: "exec nope: No such file or directory" });
      }),
    );
    const client = await AgentClient.connect(host, { timeoutMs: 5000 });
    const h = client.exec({ argv: ["nope"] });
    await assert.rejects(h.result, (e: unknown) => isVmstackError(e, "GUEST_EXEC_FAILED") && e.facts["guestCode"] === 2);
    await assert.rejects(h.pid, (e: unknown) => isVmstackError(e, "GUEST_EXEC_FAILED"));
    client.close();
  });

  test("poweroff() counts the channel closing as an answer", async () => {
    const [host, guest] = duplexPair();
    fakeGuest(
      guest,
      helloThen((m) => {
        if (m.type === "power") guest.destroy();
      }),
    );
    const client = await AgentClient.connect(host, { timeoutMs: 5000 });
    await client.poweroff();
    assert.equal(client.connected, false);
  });
});
