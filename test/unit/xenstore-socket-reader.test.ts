import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { retryUntil } from "../../src/lib/retry.js";
import { createXenstored, encodeMessage, listenUnix } from "../../src/xenstore/index.js";
import { FrameDecoder } from "../../src/xenstore/wire.js";
import { opOf } from "../../src/xenstore/protocol.js";
import type { XsioAddon, XsioReader } from "../../src/xenstore/native.js";
import { builtAddon, socketPair, tempDir, type SocketPair } from "../support/native-io.js";

/** What a reader said, in order: the text of each chunk, or the number it gave instead (0, -errno). */
class Heard {
  readonly said: (string | number)[] = [];
  constructor(readonly buf: Buffer) {}
  readonly onRead = (n: number): void => {
    this.said.push(n > 0 ? this.buf.toString("latin1", 0, n) : n);
  };
  /** Waits until `count` things were said. */
  until(count: number): Promise<(string | number)[]> {
    return retryUntil(() => (this.said.length >= count ? this.said : undefined), { what: `${count} things said by the reader`, timeoutMs: 10_000, maxDelayMs: 20 });
  }
}

function watched(x: XsioAddon, p: SocketPair): { heard: Heard; reader: XsioReader } {
  const heard = new Heard(Buffer.alloc(64 * 1024));
  return { heard, reader: x.readStart(p.fd, heard.buf, heard.onRead) };
}

/** Writes `text` and waits until the client's side has sent it. */
const send = (p: SocketPair, text: string): Promise<void> => new Promise((resolve) => p.client.write(text, () => resolve()));

void test("xsio.readStart reads a socket from the event loop into the caller's buffer, in order; readPause holds input back until readResume; at end of stream it says 0, once", async (t) => {
  const x = builtAddon();
  const p = await socketPair(tempDir(t), "p");
  const { heard, reader } = watched(x, p);
  t.after(() => {
    x.readClose(reader);
    p.close();
  });
  await send(p, "first");
  assert.deepEqual(await heard.until(1), ["first"]);
  x.readPause(reader);
  await send(p, "second");
  await sleep(100);
  assert.deepEqual(heard.said, ["first"], "nothing is read while paused");
  x.readResume(reader);
  assert.deepEqual(await heard.until(2), ["first", "second"]);
  p.client.end();
  assert.deepEqual(await heard.until(3), ["first", "second", 0]);
  await sleep(100);
  x.readResume(reader);
  await sleep(50);
  assert.deepEqual(heard.said, ["first", "second", 0], "an ended reader says nothing more, even resumed");
});

void test("xsio.readStart's duplicate descriptor holds the connection open until readClose, which closes it at once", async (t) => {
  const x = builtAddon();
  const p = await socketPair(tempDir(t), "p");
  const { reader } = watched(x, p);
  t.after(() => p.close());
  let ended = false;
  p.client.on("end", () => (ended = true));
  p.client.on("error", () => undefined);
  const closed = new Promise((resolve) => p.accepted.once("close", resolve));
  p.accepted.destroy();
  await closed;
  await sleep(100);
  assert.equal(ended, false, "the socket's own descriptor is closed, the duplicate is not: the client sees no end yet");
  // readClose is idempotent.
  x.readClose(reader);
  x.readClose(reader);
  await retryUntil(() => (ended ? true : undefined), { what: "the client's end of stream", timeoutMs: 10_000 });
});

void test("xsio.readStart stops at a connection reset (a client gone with replies unread) and says 0; the stream, reading from then on, reports ECONNRESET", async (t) => {
  const x = builtAddon();
  const p = await socketPair(tempDir(t), "p");
  const { heard, reader } = watched(x, p);
  t.after(() => {
    x.readClose(reader);
    p.close();
  });
  // The client never reads this (its stream stops reading: pause() alone would go on reading
  // into the stream's buffer); closing a Unix socket with unread input resets its peer.
  (p.client as unknown as { _handle: { readStop(): number } })._handle.readStop();
  p.accepted.write("an unread reply");
  await sleep(50);
  p.client.destroy();
  assert.deepEqual(await heard.until(1), [0]);
  x.readClose(reader);
  const failed = new Promise<NodeJS.ErrnoException>((resolve) => p.accepted.once("error", resolve));
  p.accepted.resume();
  assert.equal((await failed).code, "ECONNRESET");
  assert.deepEqual(heard.said, [0], "said once");
});

void test("xsio's reader calls refuse what they cannot use: a bad descriptor, an empty buffer, no function, an object that is not a reader", async (t) => {
  const x = builtAddon();
  const buf = Buffer.alloc(16);
  const f = (): void => undefined;
  for (const fd of [-1, 1.5, NaN]) assert.throws(() => x.readStart(fd, buf, f), TypeError, `fd ${fd}`);
  assert.throws(() => x.readStart(0, Buffer.alloc(0), f), TypeError, "empty buffer");
  assert.throws(() => x.readStart(0, buf, "f" as unknown as () => void), TypeError, "not a function");
  assert.throws(() => x.readStart(2147483000, buf, f), { code: "EBADF" }, "a descriptor that is not open");
  for (const call of [x.readPause, x.readResume, x.readClose]) assert.throws(() => call({} as XsioReader), /not a reader/);
  const p = await socketPair(tempDir(t), "p");
  t.after(() => p.close());
  const r = x.readStart(p.fd, buf, f);
  x.readClose(r);
  x.readPause(r);
  x.readResume(r);
});

void test("xenstored reads its clients through the reader, and one that sends requests then shuts down its side gets every reply before the daemon closes", async (t) => {
  builtAddon();
  const daemon = createXenstored({});
  const server = await listenUnix(daemon, join(tempDir(t), "socket"), { busyPollUs: 0 });
  t.after(async () => {
    daemon.close();
    await server.close();
  });
  const sock = net.connect(server.path);
  await new Promise<void>((resolve) => sock.once("connect", resolve));
  const frames = [
    encodeMessage({ type: "WRITE", reqId: 1, txId: 0, payload: "/half/a\0one" }),
    encodeMessage({ type: "READ", reqId: 2, txId: 0, payload: "/half/a\0" }),
    encodeMessage({ type: "DIRECTORY", reqId: 3, txId: 0, payload: "/half\0" }),
  ];
  const decoder = new FrameDecoder();
  const replies: string[] = [];
  const ended = new Promise<void>((resolve) => sock.once("end", resolve));
  sock.on("data", (chunk: Buffer) => {
    for (const r of decoder.push(chunk)) if (r.kind === "message") replies.push(`${r.message.reqId} ${opOf(r.message.type)} ${r.message.payload.toString("latin1")}`);
  });
  sock.end(Buffer.concat(frames));
  await ended;
  assert.deepEqual(replies, ["1 WRITE OK\0", "2 READ one", "3 DIRECTORY a\0"]);
  assert.ok(server.nativeIo!.readerReads > 0, "read by the reader");
  assert.equal(server.nativeIo!.nativeReads, 0, "not polled for (busy-polling off)");
  sock.destroy();
});
