/**
 * The agent binary at the byte level: malformed input, reconnects. The agent listens on a Unix
 * socket (--listen), as QEMU's socket does for the real port, and the test writes raw frames.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { retryUntil } from "../../src/lib/retry.js";
import { guestArtifacts } from "../../src/guest/artifacts.js";
import type { Message } from "../../src/guest/protocol.js";
import { ERROR_CODES, FRAME_TYPES, FrameDecoder, encodeFrame, encodeMessage } from "../../src/guest/protocol.js";

const agentPath = guestArtifacts().agent;
const missing = existsSync(agentPath) ? undefined : "agent binary not built (npm run build runs make -C guest)";

/** A raw connection that collects decoded messages and waits for one that matches. */
class Raw {
  readonly messages: Message[] = [];
  private readonly decoder = new FrameDecoder();
  private waiters: Array<() => void> = [];
  private constructor(readonly socket: Socket) {
    socket.on("data", (c: Buffer) => {
      for (const ev of this.decoder.push(c)) if (ev.kind === "message") this.messages.push(ev.message);
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  /** Connects; the connection is closed when the test ends, so a failure cannot block the next. */
  static async open(path: string, t: TestContext): Promise<Raw> {
    const socket = await retryUntil(
      () =>
        new Promise<Socket | undefined>((resolve) => {
          const s = connect(path);
          s.once("connect", () => resolve(s));
          s.once("error", () => resolve(undefined)); // not listening yet: try again
        }),
      { what: `agent socket ${path}`, timeoutMs: 5000 },
    );
    t.after(() => socket.destroy());
    return new Raw(socket);
  }

  write(b: Uint8Array): void {
    this.socket.write(b);
  }

  /** Removes and returns the first message matching `pred`, waiting up to 5 s for it. */
  async take(pred: (m: Message) => boolean, what: string): Promise<Message> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const i = this.messages.findIndex(pred);
      if (i >= 0) return this.messages.splice(i, 1)[0] as Message;
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`no ${what}; got ${JSON.stringify(this.messages.map((m) => [m.type, m.id]))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  async error(id: number, code: number): Promise<Message> {
    return this.take((m) => m.type === "error" && m.id === id && m.code === code, `ERROR ${code} for id ${id}`);
  }

  async pingPong(id: number): Promise<void> {
    this.write(encodeMessage({ type: "ping", id, data: Buffer.from("p") }));
    await this.take((m) => m.type === "pong" && m.id === id, `PONG ${id}`);
  }
}

const exec = (id: number, script: string): Buffer =>
  encodeMessage({ type: "exec", id, shell: true, stdin: false, clearEnv: false, timeoutMs: 0, graceMs: 0, cwd: "", argv: [script], env: [] });

describe("guest agent wire handling", () => {
  let dir = "";
  let sock = "";
  let agent: ChildProcess | undefined;

  before(async () => {
    if (missing) return;
    dir = await mkdtemp(join(tmpdir(), "vmstack-agent-wire-"));
    sock = join(dir, "agent.sock");
    agent = spawn(agentPath, ["--listen", sock], { stdio: ["ignore", "ignore", "ignore"] });
  });
  after(async () => {
    agent?.kill("SIGTERM");
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("a new connection gets READY, then garbage gets one error and the channel still works", async (t) => {
    if (missing) return t.skip(missing);
    const raw = await Raw.open(sock, t);
    await raw.take((m) => m.type === "ready" && m.id === 0, "READY");
    raw.write(Buffer.from("this is not a frame\n"));
    await raw.error(0, ERROR_CODES.badFrame);
    await raw.pingPong(1);
    raw.socket.destroy();
  });

  test("malformed frames each get a protocol error and never kill the agent", async (t) => {
    if (missing) return t.skip(missing);
    const raw = await Raw.open(sock, t);
    // A header announcing 4 GiB.
    raw.write(Buffer.from([0xf7, 0x56, FRAME_TYPES.stdin, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff]));
    await raw.error(2, ERROR_CODES.tooLarge);
    await raw.error(0, ERROR_CODES.badFrame); // the rest of that header, skipped as garbage
    raw.write(encodeFrame(0x33, 3, Buffer.from("x")));
    await raw.error(3, ERROR_CODES.unknownType);
    raw.write(encodeFrame(FRAME_TYPES.exec, 4, Buffer.from([0, 0, 0])));
    await raw.error(4, ERROR_CODES.badPayload);
    // argc 0
    raw.write(encodeFrame(FRAME_TYPES.exec, 5, Buffer.alloc(24)));
    await raw.error(5, ERROR_CODES.badPayload);
    // a string length running past the payload
    raw.write(encodeFrame(FRAME_TYPES.readFile, 6, Buffer.from([0x7f, 0, 0, 0, 0x41])));
    await raw.error(6, ERROR_CODES.badPayload);
    // an env entry without "="
    const noEq = encodeMessage({ type: "exec", id: 7, shell: false, stdin: false, clearEnv: false, timeoutMs: 0, graceMs: 0, cwd: "", argv: ["true"], env: ["NOEQUALS"] });
    raw.write(noEq);
    await raw.error(7, ERROR_CODES.badPayload);
    const reserved = encodeMessage({ type: "ping", id: 8, data: Buffer.alloc(0) });
    reserved[3] = 9;
    raw.write(reserved);
    await raw.error(8, ERROR_CODES.badFrame);
    raw.write(encodeFrame(FRAME_TYPES.signal, 9, Buffer.from([0, 0, 0, 200])));
    await raw.error(9, ERROR_CODES.badPayload);
    // id 0 is the connection's, never a command's
    raw.write(exec(0, "true"));
    await raw.error(0, ERROR_CODES.duplicateId);
    // Data for ids nobody knows is dropped quietly (a normal race after a command ends).
    raw.write(encodeMessage({ type: "stdin", id: 4242, data: Buffer.from("late") }));
    raw.write(encodeMessage({ type: "fileData", id: 4243, data: Buffer.from("late") }));
    await raw.pingPong(10);
    assert.deepEqual(raw.messages.filter((m) => m.type === "error"), []);
    assert.equal(agent?.exitCode, null);
    raw.socket.destroy();
  });

  test("REFRESH is checked, and outside a guest refused with EPERM without touching the host", async (t) => {
    if (missing) return t.skip(missing);
    const raw = await Raw.open(sock, t);
    raw.write(encodeFrame(FRAME_TYPES.refresh, 11, Buffer.alloc(12 + 8)));
    await raw.error(11, ERROR_CODES.badPayload);
    const before = Date.now();
    // A time far in the past: had the agent applied it, the host's clock would now be in 2001.
    raw.write(encodeMessage({ type: "refresh", id: 12, seconds: 1_000_000_000, nanoseconds: 0, seed: Buffer.alloc(32, 1) }));
    const m = await raw.take((x) => x.id === 12, "the REFRESH answer");
    assert.equal(m.type === "error" ? m.code : m.type, 1); // EPERM
    assert.ok(Date.now() >= before);
    await raw.pingPong(13);
    raw.socket.destroy();
  });

  test("a second command with an id still in use is refused", async (t) => {
    if (missing) return t.skip(missing);
    const raw = await Raw.open(sock, t);
    raw.write(exec(20, "sleep 0.5"));
    await raw.take((m) => m.type === "started" && m.id === 20, "STARTED 20");
    raw.write(exec(20, "true"));
    await raw.error(20, ERROR_CODES.duplicateId);
    await raw.take((m) => m.type === "exit" && m.id === 20, "EXIT 20");
    raw.socket.destroy();
  });

  test("output written just before exit is delivered even when the host was not reading", { timeout: 20_000 }, async (t) => {
    if (missing) return t.skip(missing);
    if (!existsSync("/usr/bin/perl")) return t.skip("needs perl to write without blocking");
    const raw = await Raw.open(sock, t);
    raw.socket.pause();
    // Writes until the agent stops reading (its queue to the paused host is full), leaves a
    // full pipe behind and exits; the total goes to stderr.
    const script = [
      "use Fcntl; fcntl(STDOUT, F_SETFL, O_NONBLOCK) or die; my $buf = 'x' x 4096; my ($n, $idle) = (0, 0);",
      "while ($idle < 30) { my $w = syswrite(STDOUT, $buf); if (defined $w) { $n += $w; $idle = 0 } else { select(undef, undef, undef, 0.01); $idle++ } }",
      "print STDERR $n;",
    ].join(" ");
    raw.write(
      encodeMessage({ type: "exec", id: 40, shell: false, stdin: false, clearEnv: false, timeoutMs: 0, graceMs: 50, cwd: "", argv: ["perl", "-e", script], env: [] }),
    );
    await sleep(1500); // well past the exit and its grace period
    raw.socket.resume();
    const exit = await raw.take((m) => m.type === "exit" && m.id === 40, "EXIT 40");
    const sum = (type: string): Buffer =>
      Buffer.concat(raw.messages.flatMap((m) => (m.type === type && m.id === 40 && "data" in m ? [Buffer.from(m.data)] : [])));
    assert.equal(sum("stdout").length, Number(sum("stderr").toString()));
    assert.equal(exit.type === "exit" && exit.exitCode, 0);
    assert.equal(exit.type === "exit" && exit.outputHeldOpen, false);
    raw.socket.destroy();
  });

  test("a host that leaves mid-frame and comes back finds a clean channel and its command's exit", async (t) => {
    if (missing) return t.skip(missing);
    const first = await Raw.open(sock, t);
    first.write(exec(30, "sleep 0.3; echo done"));
    await first.take((m) => m.type === "started" && m.id === 30, "STARTED 30");
    first.write(encodeMessage({ type: "ping", id: 31, data: Buffer.alloc(100) }).subarray(0, 20));
    first.socket.destroy();
    const second = await Raw.open(sock, t);
    await second.pingPong(32); // the half frame from the first host did not swallow this one
    // Output produced while nobody was connected is delivered to the next host.
    const exit = await second.take((m) => m.type === "exit" && m.id === 30, "EXIT 30");
    assert.equal(exit.type === "exit" && exit.exitCode, 0);
    second.socket.destroy();
  });
});

describe("guest agent when the host leaves for good", () => {
  test("stdin ends, half-written files vanish, and the exit waits for the next host", { timeout: 20_000 }, async (t) => {
    if (missing) return t.skip(missing);
    const dir = await mkdtemp(join(tmpdir(), "vmstack-agent-leave-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const sock = join(dir, "agent.sock");
    const agent = spawn(agentPath, ["--listen", sock], { stdio: "ignore" });
    t.after(() => agent.kill("SIGTERM"));
    const first = await Raw.open(sock, t);
    first.write(encodeMessage({ type: "exec", id: 70, shell: false, stdin: true, clearEnv: false, timeoutMs: 0, graceMs: 0, cwd: "", argv: ["cat"], env: [] }));
    first.write(encodeMessage({ type: "stdin", id: 70, data: Buffer.from("before the host left\n") }));
    const target = join(dir, "partial.txt");
    first.write(encodeMessage({ type: "writeFile", id: 71, mode: 0o644, mkdirs: false, path: target }));
    first.write(encodeMessage({ type: "fileData", id: 71, data: Buffer.from("half") }));
    await first.take((m) => m.type === "started" && m.id === 70, "STARTED 70");
    await first.take((m) => m.type === "stdout" && m.id === 70, "STDOUT 70");
    first.socket.destroy();
    const second = await Raw.open(sock, t);
    // cat saw EOF when the first host left, so it exits; its EXIT is delivered here.
    const exit = await second.take((m) => m.type === "exit" && m.id === 70, "EXIT 70");
    assert.equal(exit.type === "exit" && exit.exitCode, 0);
    await second.pingPong(72);
    assert.deepEqual(await readdir(dir), ["agent.sock"]);
  });
});

describe("guest agent under resource exhaustion", () => {
  test("running out of file descriptors fails one exec with EMFILE and the agent carries on", { timeout: 20_000 }, async (t) => {
    if (missing) return t.skip(missing);
    const dir = await mkdtemp(join(tmpdir(), "vmstack-agent-fds-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const sock = join(dir, "agent.sock");
    // 16 descriptors: the agent's own 6, then 8 per exec while it starts (4 pipes), 2 per running one.
    const agent = spawn("sh", ["-c", `ulimit -n 16 && exec "$0" --listen "$1"`, agentPath, sock], { stdio: "ignore" });
    t.after(() => agent.kill("SIGTERM"));
    const raw = await Raw.open(sock, t);
    for (let id = 50; id < 54; id++) raw.write(exec(id, "sleep 0.3"));
    const refused = await raw.take((m) => m.type === "error" && m.code === 24, "ERROR EMFILE");
    assert.match(refused.type === "error" ? refused.message : "", /pipe: Too many open files/);
    await raw.take((m) => m.type === "exit" && m.id === 50, "EXIT 50");
    raw.write(exec(60, "echo still here"));
    const out = await raw.take((m) => m.type === "stdout" && m.id === 60 && m.data.length > 0, "STDOUT 60");
    assert.equal(out.type === "stdout" && Buffer.from(out.data).toString(), "still here\n");
    assert.equal(agent.exitCode, null);
  });
});
