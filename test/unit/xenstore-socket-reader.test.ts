import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import * as net from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { retryUntil } from "../../src/lib/retry.js";
import { fitsUnixSocket, UNIX_SOCKET_PATH_MAX } from "../../src/lib/unix-socket.js";
import { createXenstored, encodeMessage, listenUnix, RawConnection } from "../../src/xenstore/index.js";
import { NativeSocketIo } from "../../src/xenstore/socket-io.js";
import { FrameDecoder } from "../../src/xenstore/wire.js";
import { opOf } from "../../src/xenstore/protocol.js";
import type { XsioAddon, XsioReader } from "../../src/xenstore/native.js";
import { builtAddon, fakeAddon, socketPair, tempDir, type SocketPair } from "../support/native-io.js";

const HERE = dirname(fileURLToPath(import.meta.url));

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

/** A socket pair whose accepted side a reader watches, both closed after the test. */
async function watchedPair(t: TestContext): Promise<{ x: XsioAddon; p: SocketPair; heard: Heard; reader: XsioReader }> {
  const x = builtAddon();
  const p = await socketPair(tempDir(t), "p");
  const { heard, reader } = watched(x, p);
  t.after(() => {
    x.readClose(reader);
    p.close();
  });
  return { x, p, heard, reader };
}

/** Writes `text` and waits until the client's side has sent it. */
const send = (p: SocketPair, text: string): Promise<void> => new Promise((resolve) => p.client.write(text, () => resolve()));

void test("xsio.readStart reads a socket from the event loop into the caller's buffer, in order; readPause holds input back until readResume; at end of stream it says 0, once", { timeout: 60_000 }, async (t) => {
  const { x, p, heard, reader } = await watchedPair(t);
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

void test("xsio.readStart's duplicate descriptor holds the connection open until readClose, which closes it at once", { timeout: 60_000 }, async (t) => {
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

void test("xsio.readStart stops at a connection reset (a client gone with replies unread) and says 0; the stream, reading from then on, reports ECONNRESET", { timeout: 60_000 }, async (t) => {
  const { x, p, heard, reader } = await watchedPair(t);
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

void test("xsio's reader calls refuse what they cannot use: a bad descriptor, an empty buffer, no function, an object that is not a reader", { timeout: 60_000 }, async (t) => {
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

/** An in-memory daemon on a Unix socket that only the addon's reader reads (busy-polling off), closed after the test. */
async function readerDaemon(t: TestContext): Promise<Awaited<ReturnType<typeof listenUnix>>> {
  builtAddon();
  const daemon = createXenstored({});
  const server = await listenUnix(daemon, join(tempDir(t), "socket"), { busyPollUs: 0 });
  t.after(async () => {
    daemon.close();
    await server.close();
  });
  return server;
}

void test("xenstored reads its clients through the reader, and one that sends requests then shuts down its side gets every reply before the daemon closes", { timeout: 60_000 }, async (t) => {
  const server = await readerDaemon(t);
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

void test("requests held back in a chunk read into the reader's buffer are copied out of it: their client gets the right replies after another client's requests were read into that buffer", { timeout: 60_000 }, async (t) => {
  const server = await readerDaemon(t);
  const N = 200;
  const value = (i: number): string => `${i}:`.padEnd(4000, String.fromCharCode(97 + (i % 26)));
  const setup = new RawConnection(net.connect(server.path));
  for (let i = 0; i < N; i++) assert.equal((await setup.request("WRITE", `/held/${i}|${value(i)}`)).error, undefined);
  // One chunk of N reads of 4 KB each from a client that reads nothing: its replies pass the
  // daemon's high-water mark long before the last, and the rest wait in its queue.
  const sock = net.connect(server.path);
  await new Promise<void>((resolve) => sock.once("connect", resolve));
  sock.pause();
  sock.write(Buffer.concat(Array.from({ length: N }, (_, i) => encodeMessage({ type: "READ", reqId: i + 1, txId: 0, payload: `/held/${i}\0` }))));
  await sleep(200);
  // Another client's requests are read into the same buffer meanwhile, over all of that chunk.
  const other = await Promise.all(Array.from({ length: 60 }, (_, i) => setup.request("WRITE", `/other/${i}|${"z".repeat(100)}`)));
  assert.deepEqual(other.map((r) => r.error), Array.from({ length: 60 }, () => undefined));
  setup.stream.destroy();
  const decoder = new FrameDecoder();
  const replies: string[] = [];
  await new Promise<void>((resolve) => {
    sock.on("data", (chunk: Buffer) => {
      for (const r of decoder.push(chunk)) if (r.kind === "message") replies.push(`${r.message.reqId} ${r.message.payload.toString("latin1", 0, 8)}`);
      if (replies.length === N) resolve();
    });
    sock.resume();
  });
  sock.destroy();
  assert.deepEqual(replies, Array.from({ length: N }, (_, i) => `${i + 1} ${value(i).slice(0, 8)}`));
  assert.ok(server.nativeIo!.readerReads > 0);
});

/** A stand-in addon whose waits find nothing and whose sends defer to the stream, with `over`. */
const quietFake = (over: Partial<XsioAddon> = {}): ReturnType<typeof fakeAddon> =>
  fakeAddon({
    waitRecv: (_fds, _readCount, _count, _buf, _budget, out) => {
      out[0] = 0;
      return -1;
    },
    sendNow: () => -11,
    besidePeer: () => 0,
    ...over,
  });

void test("a socket that gets no reader (readStart throws, as at the descriptor limit) has no entry, so its stream serves it; it is counted", { timeout: 60_000 }, async (t) => {
  const native = NativeSocketIo.create(
    quietFake({
      readStart: () => {
        throw Object.assign(new Error("readStart: cannot duplicate the socket's descriptor"), { code: "EMFILE" });
      },
    }),
  )!;
  const p = await socketPair(tempDir(t), "p");
  t.after(() => p.close());
  assert.equal(native.entry(p.accepted, () => undefined, () => true), undefined);
  assert.equal(native.stats.streamServed, 1);
});

void test("a reader that reports a recv(2) error closes the socket with that error; one that cannot be watched again on resume hands the socket to its stream", { timeout: 60_000 }, async (t) => {
  let resumeFails = false;
  const fake = quietFake({ readResume: () => (resumeFails ? -22 : 0) });
  const native = NativeSocketIo.create(fake)!;
  const [a, b] = await Promise.all(["a", "b"].map((n) => socketPair(tempDir(t), n)));
  t.after(() => [a!, b!].forEach((p) => p.close()));
  const ea = native.entry(a!.accepted, () => undefined, () => true)!;
  const failed = new Promise<NodeJS.ErrnoException>((res) => a!.accepted.once("error", res));
  const closed = new Promise((res) => a!.accepted.once("close", res));
  fake.said.get(ea.fd)!(-104);
  assert.equal((await failed).code, "ECONNRESET");
  await closed;
  assert.equal(fake.said.has(ea.fd), false, "its reader is closed");

  const got: string[] = [];
  const eb = native.entry(b!.accepted, (chunk) => got.push(chunk.toString()), () => true)!;
  b!.accepted.on("data", (chunk: Buffer) => got.push(`stream: ${chunk.toString()}`));
  const flow = native.flow(eb);
  flow.pause();
  resumeFails = true;
  flow.resume();
  assert.equal(fake.said.has(eb.fd), false, "the reader that cannot resume is closed");
  await send(b!, "hello");
  await retryUntil(() => (got.length > 0 ? true : undefined), { what: "the client's bytes", timeoutMs: 10_000 });
  assert.deepEqual(got, ["stream: hello"], "and the stream reads");
});

void test("xenstored at its descriptor limit: a client whose socket fits but whose reader does not (EMFILE) is still answered, through its stream", { timeout: 60_000 }, async (t) => {
  builtAddon();
  // A socket path so long that the warm-up's sibling (".warm-up") would not fit: the warm-up then
  // serves its throwaway instance in-process, and opens no descriptors while this test counts them.
  const dir = tempDir(t);
  const socket = join(dir, "s".repeat(UNIX_SOCKET_PATH_MAX - 2 - dir.length));
  assert.ok(fitsUnixSocket(socket) && !fitsUnixSocket(`${socket}.warm-up`));
  const child = spawn(process.execPath, [resolve(HERE, "../../src/bin/xenstored.js"), "--socket", socket, "--no-persist"], { stdio: ["ignore", "pipe", "pipe"] });
  const clients: RawConnection[] = [];
  t.after(() => {
    clients.forEach((c) => c.stream.destroy());
    child.kill("SIGKILL");
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  await retryUntil(() => (out.includes("\n") ? true : undefined), { what: "the daemon's socket line", timeoutMs: 20_000 });
  // Wait for the set to hold still.
  let seen = "";
  const fds = await retryUntil(
    () => {
      const now = readdirSync(`/proc/${child.pid}/fd`).map(Number).sort((x, y) => x - y);
      const stable = now.join(",") === seen;
      seen = now.join(",");
      return stable ? now : undefined;
    },
    { what: "the daemon's descriptors to hold still", timeoutMs: 20_000, initialDelayMs: 200, maxDelayMs: 200 },
  );
  // One free descriptor number below the limit (the lowest free one; those above stay open):
  // the next client's socket takes it, and its reader finds none.
  const lowestFree = fds.findIndex((fd, i) => fd !== i);
  const limit = (lowestFree < 0 ? fds.length : lowestFree) + 1;
  const r = spawnSync("prlimit", [`--pid=${child.pid}`, `--nofile=${limit}:${limit}`], { encoding: "utf8" });
  assert.equal(r.status, 0, `prlimit (util-linux, installed by ./setup): ${r.stderr}`);
  const c = new RawConnection(net.connect(socket));
  clients.push(c);
  assert.equal((await c.request("WRITE", "/emfile/k|v")).text, "OK|");
  await retryUntil(() => (/served through Node\.js's stream, not native I\/O: .*EMFILE/.test(err) ? true : undefined), { what: `the daemon's warning (limit ${limit}; descriptors before ${fds.join(",")}, now ${readdirSync(`/proc/${child.pid}/fd`).join(",")}; stderr: ${err})`, timeoutMs: 10_000 });
  assert.equal((await c.request("READ", "/emfile/k|")).text, "v", "the client served by its stream goes on being answered");
});

const WORKER_WITH_OPEN_READER = `
const { Worker } = require("node:worker_threads");
const w = new Worker(\`
  const net = require("node:net");
  const x = require(\${JSON.stringify(process.argv[1])});
  const path = \${JSON.stringify(process.argv[2])};
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    x.readStart(s._handle.fd, Buffer.alloc(64), () => undefined);
    process.exit(0);
  });
  server.listen(path, () => net.connect(path));
\`, { eval: true });
w.on("exit", (code) => console.log("worker exited", code));
`;

void test("a worker thread that ends with a reader open ends cleanly: the environment's cleanup closes it (libuv would abort the process)", (t) => {
  builtAddon();
  const addonPath = resolve(HERE, "../../native/xsio.node");
  const r = spawnSync(process.execPath, ["-e", WORKER_WITH_OPEN_READER, addonPath, join(tempDir(t), "socket")], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.signal, null, `no abort: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), "worker exited 0");
});
