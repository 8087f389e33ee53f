import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setImmediate as tick, setTimeout as sleep } from "node:timers/promises";
import { connectXenstore } from "../../src/xenstore/client.js";
import { createXenstored, encodeMessage, listenUnix, RawConnection, nativeIoUnavailable, type SocketServer } from "../../src/xenstore/index.js";
import { FrameDecoder } from "../../src/xenstore/wire.js";
import { NativeSocketIo } from "../../src/xenstore/socket-io.js";
import { xsio } from "../../src/xenstore/native.js";
import { procStat } from "../../src/vmm/domain-record.js";
import { builtAddon as addon, fakeAddon, socketPair, tempDir } from "../support/native-io.js";

/** A daemon served on a Unix socket in a temporary directory, both closed after the test. */
async function servedDaemon(t: TestContext): Promise<SocketServer> {
  const daemon = createXenstored({});
  const server = await listenUnix(daemon, join(tempDir(t), "socket"));
  t.after(async () => {
    daemon.close();
    await server.close();
  });
  return server;
}

void test("xsio.waitRecv: -1 once the budget has passed with nothing to read; the ready socket's index and its bytes; a watched socket's activity ends the wait unread; 0 at end of stream", async (t) => {
  const x = addon();
  const dir = tempDir(t);
  const a = await socketPair(dir, "a");
  const b = await socketPair(dir, "b");
  t.after(() => {
    a.close();
    b.close();
  });
  const buf = Buffer.alloc(64);
  const out = new Int32Array(1);
  const fds = Int32Array.of(a.fd, b.fd);
  const t0 = performance.now();
  assert.equal(x.waitRecv(fds, 2, 2, buf, 3e6, out), -1);
  assert.ok(performance.now() - t0 >= 2.5, "waited out its 3 ms budget");
  assert.equal(out[0], 0);

  b.client.write("hello");
  await tick();
  assert.equal(x.waitRecv(fds, 1, 1, buf, 1e6, out), -1, "only the first `count` sockets are polled");
  assert.equal(x.waitRecv(fds, 1, 2, buf, 1e6, out), 1, "a watched socket's data ends the wait");
  assert.equal(out[0], 0, "and stays unread");
  let i = -1;
  for (let k = 0; k < 1000 && i < 0; k++) i = x.waitRecv(fds, 2, 2, buf, 1e6, out);
  assert.equal(i, 1, "the second socket is the ready one");
  assert.equal(out[0], 5);
  assert.equal(buf.toString("latin1", 0, 5), "hello");

  // end() shuts the socket down from the event loop, once its writes are out.
  await new Promise<void>((resolve) => a.client.end(resolve));
  i = -1;
  for (let k = 0; k < 1000 && i < 0; k++) i = x.waitRecv(fds, 2, 2, buf, 1e6, out);
  assert.equal(i, 0);
  assert.equal(out[0], 0, "end of stream reads nothing");
});

void test("xsio.waitRecv refuses arguments it cannot honour: a budget that is not 0-10 ms, no sockets, counts beyond the array", async (t) => {
  const x = addon();
  const p = await socketPair(tempDir(t), "p");
  t.after(() => p.close());
  const fds = Int32Array.of(p.fd);
  const buf = Buffer.alloc(8);
  const out = new Int32Array(1);
  for (const budget of [NaN, -1, Infinity, 10e6 + 1]) assert.throws(() => x.waitRecv(fds, 1, 1, buf, budget, out), TypeError, String(budget));
  assert.throws(() => x.waitRecv(fds, 0, 0, buf, 0, out), TypeError, "no sockets");
  assert.throws(() => x.waitRecv(fds, 1, 2, buf, 0, out), TypeError, "count beyond the array");
  assert.throws(() => x.waitRecv(fds, 2, 1, buf, 0, out), TypeError, "readCount beyond count");
  assert.throws(() => x.waitRecv([p.fd] as unknown as Int32Array, 1, 1, buf, 0, out), TypeError);
  assert.equal(x.waitRecv(fds, 1, 1, buf, 0, out), -1, "a zero budget looks once");
});

/**
 * Run in a child pinned to one CPU: 20 waits of 10 ms on a socket whose client sends nothing.
 * Mode "client": the client, over a Unix socket, keeps the same CPU busy. Mode "stranger": the
 * client connects over TCP, whose peer's CPU the addon cannot tell (so it is not known to be
 * here), and a process that is not the client keeps this CPU busy. Prints the child's own CPU
 * time as a share of the wall time the waits took.
 */
const SHARED_CPU_WAITS = `
import { createRequire } from "node:module";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
const [addonPath, cpu, mode] = process.argv.slice(1);
const x = createRequire(import.meta.url)(addonPath);
const dir = mkdtempSync(join(tmpdir(), "vmstack-xsio-share-"));
const server = net.createServer({ pauseOnConnect: true });
const where = mode === "client" ? join(dir, "socket") : { host: "127.0.0.1", port: 0 };
await new Promise((r) => server.listen(where, r));
const address = JSON.stringify(mode === "client" ? where : server.address().port) + (mode === "client" ? "" : ", '127.0.0.1'");
const accepted = new Promise((r) => server.once("connection", r));
const busy = "for (const t = Date.now(); Date.now() - t < 5000;);";
const run = (script) => spawn("taskset", ["-c", cpu, process.execPath, "-e", script], { stdio: "ignore" });
const connectThen = (then) => "require('net').connect(" + address + ", () => { " + then + " });";
const kids = mode === "client" ? [run(connectThen(busy))] : [run(connectThen("setTimeout(() => {}, 5000);")), run(busy)];
try {
  const sock = await accepted;
  await new Promise((r) => setTimeout(r, 150));
  const fds = Int32Array.of(sock._handle.fd);
  const out = new Int32Array(1);
  const buf = Buffer.alloc(64);
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) x.waitRecv(fds, 1, 1, buf, 10e6, out);
  const wallMs = performance.now() - t0;
  const u = process.cpuUsage(u0);
  console.log(JSON.stringify({ wallMs, share: (u.user + u.system) / 1000 / wallMs }));
} finally {
  for (const k of kids) k.kill();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
`;

/** Run SHARED_CPU_WAITS in `mode` on the CPU this process last ran on (one it may use). */
function sharedCpuWaits(mode: "client" | "stranger"): { wallMs: number; share: number } {
  const cpu = String(procStat(process.pid)!.cpu);
  const addonPath = fileURLToPath(new URL("../../native/xsio.node", import.meta.url));
  // taskset comes with util-linux (./setup installs it).
  const r = spawnSync("taskset", ["-c", cpu, process.execPath, "--input-type=module", "-e", SHARED_CPU_WAITS, addonPath, cpu, mode], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.error, undefined, "taskset (util-linux) runs");
  assert.equal(r.status, 0, r.stderr);
  const figures = JSON.parse(r.stdout) as { wallMs: number; share: number };
  assert.ok(figures.wallMs >= 190, `the waits ran their budgets (${figures.wallMs} ms)`);
  return figures;
}

void test("xsio.waitRecv gives a CPU it shares with its client to the client: pinned beside a client that keeps it busy, it takes almost none of it while it waits", () => {
  addon();
  const r = sharedCpuWaits("client");
  // A plain spin gets its fair share, 0.5 beside one busy process (measured 0.51); yielding
  // between looks, 0.01.
  assert.ok(r.share < 0.2, `CPU share while waiting: ${r.share.toFixed(2)}`);
});

void test("xsio.waitRecv does not hand its time slices to a busy process that is not known to be its client: it shares the CPU with it", () => {
  addon();
  const r = sharedCpuWaits("stranger");
  // Yielding to it at every look would leave the wait 0.01 of the CPU, and a request arriving
  // meanwhile waiting for the busy process's time slice to end.
  assert.ok(r.share > 0.3, `CPU share while waiting: ${r.share.toFixed(2)}`);
});

/** This process's allowed CPUs (Cpus_allowed_list, e.g. "0-1,3"), as a list and as written. */
function allowedCpus(): { list: number[]; text: string } {
  const text = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync("/proc/self/status", "utf8"))![1]!;
  const list = text.split(",").flatMap((r) => {
    const [a, b = a] = r.split("-").map(Number) as [number, number?];
    return Array.from({ length: b - a + 1 }, (_, i) => a + i);
  });
  return { list, text };
}

/** taskset on one thread: this process's pid names its main thread only. */
function pinThread(tid: number, cpus: string): void {
  // taskset comes with util-linux (./setup installs it).
  const r = spawnSync("taskset", ["-p", "-c", cpus, String(tid)], { encoding: "utf8", timeout: 10_000 });
  assert.equal(r.error, undefined, "taskset (util-linux) runs");
  assert.equal(r.status, 0, `taskset -p -c ${cpus} ${tid}: ${r.stderr}`);
}

/** A client process: `n` writes with one request in flight. */
const ONE_IN_FLIGHT_CLIENT = `
const [clientUrl, socket, n] = process.argv.slice(1);
const { connectXenstore } = await import(clientUrl);
const c = await connectXenstore({ socket, reconnect: false });
for (let i = 0; i < Number(n); i++) await c.write("/placement/k" + (i % 10), String(i));
await c.close();
`;

void test("xenstored does not busy-poll for a client that runs on its CPU (it sleeps, as Xen's C daemon does), and does for one on another CPU", async (t) => {
  addon();
  const server = await servedDaemon(t);
  const cpus = allowedCpus();
  const mine = cpus.list[0]!;
  // The daemon runs on this process's main thread.
  pinThread(process.pid, String(mine));
  t.after(() => pinThread(process.pid, cpus.text));
  const clientUrl = new URL("../../src/xenstore/client.js", import.meta.url).href;
  const N = 2000;
  const clientOn = async (cpu: number): Promise<{ hits: number; beside: number; nativeReads: number }> => {
    const before = { ...server.poll, nativeReads: server.nativeIo!.nativeReads };
    const child = spawn("taskset", ["-c", String(cpu), process.execPath, "--input-type=module", "-e", ONE_IN_FLIGHT_CLIENT, clientUrl, server.path, String(N)], { stdio: ["ignore", "ignore", "pipe"], timeout: 60_000 });
    t.after(() => child.kill("SIGKILL"));
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", resolve);
    });
    assert.equal(code, 0, err);
    return { hits: server.poll.hits - before.hits, beside: server.poll.beside - before.beside, nativeReads: server.nativeIo!.nativeReads - before.nativeReads };
  };
  const together = await clientOn(mine);
  assert.ok(together.beside >= N, `requests from the client beside the daemon: ${together.beside} of ${N}`);
  assert.equal(together.hits, 0, "never polled for");
  assert.equal(together.nativeReads, 0, "so nothing was read by native I/O");
  const other = cpus.list[1];
  if (other === undefined) {
    t.diagnostic(`only CPU ${mine} is allowed here: no client can run on another CPU, so only the case beside the daemon was checked`);
    return;
  }
  // On a loaded machine a run's requests may all miss the poll: up to five runs for the first hit.
  const apart = { hits: 0, beside: 0, nativeReads: 0 };
  for (let run = 0; run < 5 && apart.hits === 0; run++) {
    const r = await clientOn(other);
    for (const k of ["hits", "beside", "nativeReads"] as const) apart[k] += r[k];
  }
  assert.equal(apart.beside, 0, "a client on another CPU is not beside the daemon");
  assert.ok(apart.hits > 0, "polled for, and its requests caught polling");
  assert.ok(apart.nativeReads > 0, "and read by native I/O");
});

void test("where a client runs is looked at once per 10 ms per connection; a client found beside the daemon ends the wait planned for it", async (t) => {
  const dir = tempDir(t);
  let looks = 0;
  let where = 1;
  const fake = fakeAddon({
    waitRecv: (_fds, _readCount, _count, _buf, _budget, out) => {
      out[0] = 0;
      return -1;
    },
    sendNow: () => -11,
    besidePeer: () => {
      looks++;
      return where;
    },
  });
  const native = NativeSocketIo.create(fake)!;
  const pair = await socketPair(dir, "p");
  t.after(() => pair.close());
  const e = native.entry(pair.accepted, () => undefined, () => true)!;
  const clock = native.clock(e);
  e.untilMs = 1_000;
  assert.equal(clock.beside!(100), true);
  assert.equal(e.untilMs, 100, "the window planned for it ends");
  where = 0;
  assert.equal(clock.beside!(105), true, "within 10 ms the last look holds");
  assert.equal(clock.beside!(109.9), true);
  assert.equal(looks, 1);
  assert.equal(clock.beside!(110), false, "then it looks again");
  assert.equal(looks, 2);
  e.untilMs = 1_000;
  where = -1;
  assert.equal(clock.beside!(120), false, "a client whose CPU cannot be told is not beside");
  assert.equal(e.untilMs, 1_000, "and its window stands");
});

void test("xsio.sendNow: sends what it can at once and says how much; an error is -errno, never a throw or a signal", async (t) => {
  const x = addon();
  const dir = tempDir(t);
  const p = await socketPair(dir, "p");
  t.after(() => p.close());
  const got = new Promise<string>((resolve) => p.client.once("data", (c: Buffer) => resolve(c.toString())));
  assert.equal(x.sendNow(p.fd, Buffer.from("reply")), 5);
  assert.equal(await got, "reply");
  assert.equal(x.sendNow(2147483000, Buffer.from("x")), -9, "EBADF");
  for (const fd of [-1, 1.5, NaN]) assert.throws(() => x.sendNow(fd, Buffer.from("x")), TypeError, `fd ${fd}`);
  // The peer is gone: EPIPE (Node.js ignores SIGPIPE, and send(2) is told not to raise it).
  p.client.destroy();
  await tick();
  let r = 0;
  for (let k = 0; k < 100 && r >= 0; k++) {
    r = x.sendNow(p.fd, Buffer.from("late"));
    await tick();
  }
  assert.ok(r === -32 || r === -104, `EPIPE or ECONNRESET, got ${r}`);
  assert.throws(() => x.sendNow(p.fd, "text" as unknown as Buffer), TypeError);
});

void test("xenstored over a socket: a client with one request in flight is read and answered by native I/O; --no-native-io leaves it to the streams, --busy-poll-us 0 to the addon's reader alone", async (t) => {
  addon();
  const dir = tempDir(t);
  for (const [name, opts] of [
    ["native", {}],
    ["streams", { nativeIo: false }],
    ["nopoll", { busyPollUs: 0 }],
  ] as const) {
    const daemon = createXenstored({});
    const server = await listenUnix(daemon, join(dir, `socket-${name}`), opts);
    const c = await connectXenstore({ socket: server.path, reconnect: false });
    try {
      let i = 0;
      // The first requests may all miss the poll on a loaded machine: allow many for the first hit.
      for (; i < 300 || (name === "native" && server.nativeIo!.nativeReads === 0 && i < 20_000); i++) {
        await c.write(`/native/k${i % 10}`, String(i));
        assert.equal(await c.read(`/native/k${i % 10}`), String(i));
      }
      if (name === "native") {
        assert.ok(server.nativeIo!.nativeReads > 0, `no request read by native I/O in ${i} (poll hits ${server.poll.hits})`);
        assert.ok(server.nativeIo!.readerReads > 0, "the first request comes before any polling: the reader reads it");
        assert.ok(server.nativeIo!.nativeSends > 0);
      } else if (name === "streams") {
        assert.equal(server.nativeIo, undefined);
      } else {
        assert.equal(server.nativeIo!.nativeReads, 0, "no polling, no waits in the addon");
        assert.ok(server.nativeIo!.readerReads >= 600, "every request read by the addon's reader");
        assert.ok(server.nativeIo!.nativeSends > 0, "replies still leave with send(2)");
      }
    } finally {
      await c.close();
      daemon.close();
      await server.close();
    }
  }
});

void test("xenstored's native I/O keeps replies in order when the client stops reading: the socket fills, the stream takes over, nothing is lost or reordered", async (t) => {
  addon();
  const server = await servedDaemon(t);
  const big = "v".repeat(4000);
  const setup = new RawConnection(net.connect(server.path));
  assert.equal((await setup.request("WRITE", `/big|${big}`)).error, undefined);
  setup.stream.destroy();

  // One READ per event-loop turn, each its own chunk (so the daemon does not cork them), while
  // this side reads nothing: ~1.2 MB of replies, far more than the socket buffer holds.
  const sock = net.connect(server.path);
  await new Promise<void>((resolve) => sock.once("connect", resolve));
  sock.pause();
  const N = 300;
  for (let i = 1; i <= N; i++) {
    sock.write(encodeMessage({ type: "READ", reqId: i, txId: 0, payload: "/big\0" }));
    await tick();
  }
  // Back-pressure reaches the addon's reader: the daemon stopped reading this client's requests.
  await sleep(100);
  const io = server.nativeIo!;
  assert.ok(io.readerReads + io.nativeReads < N, `requests still unread while the replies wait (${io.readerReads + io.nativeReads} chunks read of ${N})`);
  const decoder = new FrameDecoder();
  const ids: number[] = [];
  await new Promise<void>((resolve, reject) => {
    sock.on("data", (chunk: Buffer) => {
      for (const r of decoder.push(chunk)) {
        if (r.kind !== "message") return reject(new Error(`bad frame ${r.kind}`));
        if (r.message.payload.toString("latin1") !== big) return reject(new Error(`reply ${r.message.reqId} has the wrong payload`));
        ids.push(r.message.reqId);
        if (ids.length === N) resolve();
      }
    });
    sock.resume();
  });
  sock.destroy();
  assert.deepEqual(
    ids,
    Array.from({ length: N }, (_, i) => i + 1),
  );
  assert.ok(server.nativeIo!.nativeSends > 0, "the first replies went out with send(2)");
  assert.ok(server.nativeIo!.nativeSends < N, "and the stream took over once the socket was full");
});

void test("the native waits in the addon only on clients it may read: not a paused one (back-pressure), one that pipelines, one whose reader has stopped; the pipelining one and the listening socket are watched", async (t) => {
  const dir = tempDir(t);
  const calls: { fds: number[]; readCount: number }[] = [];
  const fake = fakeAddon({
    waitRecv: (fds, readCount, count, _buf, _budget, out) => {
      calls.push({ fds: [...fds.subarray(0, count)], readCount });
      out[0] = 0;
      return -1;
    },
    sendNow: () => -11,
    besidePeer: () => 0,
  });
  const native = NativeSocketIo.create(fake)!;
  native.listenFd = 1234;
  const pairs = await Promise.all(["idle", "paused", "pipelining", "ended"].map((n) => socketPair(dir, n)));
  t.after(() => pairs.forEach((p) => p.close()));
  const entries = pairs.map((p) => native.entry(p.accepted, () => undefined, () => true)!);
  const [idle, paused, pipelining, ended] = entries;
  assert.deepEqual([...fake.said.keys()], entries.map((e) => e.fd), "each socket has a reader");
  native.flow(paused!).pause();
  assert.deepEqual([...fake.paused], [paused!.fd], "back-pressure pauses the reader");
  pipelining!.pipelining = true;
  // The reader saw the end of stream: it is closed, and the stream reads from then on.
  await new Promise<void>((resolve) => pairs[3]!.client.end(resolve));
  const streamEnded = new Promise<void>((resolve) => pairs[3]!.accepted.once("end", resolve));
  fake.said.get(ended!.fd)!(0);
  assert.equal(fake.said.has(ended!.fd), false, "the ended reader is closed");
  await streamEnded;
  // A window far ahead: a slow turn on a loaded machine must still find time left to wait.
  for (const e of entries) native.clock(e).defer(() => undefined, performance.now() + 60_000);
  for (let i = 0; i < 100 && calls.length === 0; i++) await tick();
  assert.equal(calls.length, 1);
  const { fds, readCount } = calls[0]!;
  assert.deepEqual(fds.slice(0, readCount), [idle!.fd], "only the idle client is read");
  assert.deepEqual(new Set(fds.slice(readCount)), new Set([pipelining!.fd, 1234]), "the pipelining one and the listening socket are watched");
  native.flow(paused!).resume();
  assert.deepEqual([...fake.paused], [], "and resumed");
  // A write the addon cannot make (EAGAIN here) goes through the stream, in order.
  const got = new Promise<string>((resolve) => pairs[0]!.client.once("data", (c: Buffer) => resolve(c.toString())));
  native.write(idle!, Buffer.from("via the stream"));
  assert.equal(await got, "via the stream");
  // The socket's close closes its reader.
  const closed = new Promise((resolve) => pairs[0]!.accepted.once("close", resolve));
  pairs[0]!.accepted.destroy();
  await closed;
  assert.equal(fake.said.has(idle!.fd), false, "a closed socket's reader is closed");
});

void test("a client found beside the daemon is left out of the next wait in the addon; one still polled for is waited on", async (t) => {
  const dir = tempDir(t);
  const reads: number[][] = [];
  let besideFd = -1;
  const fake = fakeAddon({
    waitRecv: (fds, readCount, _count, _buf, _budget, out) => {
      reads.push([...fds.subarray(0, readCount)]);
      out[0] = 0;
      return -1;
    },
    sendNow: () => -11,
    besidePeer: (fd) => (fd === besideFd ? 1 : 0),
  });
  const native = NativeSocketIo.create(fake)!;
  const pairs = await Promise.all(["a", "b"].map((n) => socketPair(dir, n)));
  t.after(() => pairs.forEach((p) => p.close()));
  const [a, b] = pairs.map((p) => native.entry(p.accepted, () => undefined, () => true)!);
  besideFd = a!.fd;
  // Both polled for, far ahead; then a's client turns out to be beside the daemon.
  for (const e of [a!, b!]) native.clock(e).defer(() => undefined, performance.now() + 60_000);
  assert.equal(native.clock(a!).beside!(performance.now()), true);
  assert.equal(native.clock(b!).beside!(performance.now()), false);
  for (let i = 0; i < 100 && reads.length === 0; i++) await tick();
  assert.deepEqual(reads[0], [b!.fd], "only b's socket is read in the addon");
});
