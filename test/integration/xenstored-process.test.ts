/**
 * vmstack's xenstored as a real process: the `vmstack-xenstored` binary on a Unix socket, killed
 * with SIGKILL under load, restarted on damaged state, and poked by Debian's xenstore tools.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { RawConnection } from "../../src/xenstore/index.js";
import { retryUntil } from "../../src/lib/retry.js";

const execFileP = promisify(execFile);
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../src/bin/xenstored.js");

interface Daemon {
  readonly child: ChildProcess;
  readonly socket: string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function start(dir: string, extra: readonly string[] = []): Promise<Daemon> {
  const socket = path.join(dir, "socket");
  const child = spawn(process.execPath, [BIN, "--socket", socket, "--state-dir", path.join(dir, "state"), ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const line = await new Promise<string>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`daemon did not print its socket in 20 s; stderr: ${err}`)), 20_000);
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("\n")) {
        clearTimeout(timer);
        resolve(out.split("\n")[0]!);
      }
    });
    void exited.then((r) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited (${r.code ?? r.signal}) before it was ready: ${err}`));
    });
  });
  assert.equal(line, socket, "prints the socket path when ready");
  return { child, socket, stderr: () => err, exited };
}

function connect(socket: string): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    s.once("error", reject);
    s.once("connect", () => resolve(new RawConnection(s)));
  });
}

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "vmstack-xsd-"));
}

void test("the daemon prints its socket (mode 0600), serves Xen's tools, and stops cleanly on SIGTERM", async (t) => {
  const dir = tmp();
  const d = await start(dir);
  assert.equal(fs.statSync(d.socket).mode & 0o777, 0o600);
  if (!fs.existsSync("/usr/bin/xenstore-write")) t.diagnostic("xenstore-utils not installed: tool check skipped");
  else {
    const env = { ...process.env, XENSTORED_PATH: d.socket };
    await execFileP("/usr/bin/xenstore-write", ["/vm/abc/name", "hello world", "rel/key", "v"], { env });
    const { stdout } = await execFileP("/usr/bin/xenstore-read", ["/vm/abc/name", "/local/domain/0/rel/key"], { env });
    assert.equal(stdout, "hello world\nv\n");
  }
  d.child.kill("SIGTERM");
  assert.deepEqual(await d.exited, { code: 0, signal: null });
  assert.ok(!fs.existsSync(d.socket), "the socket is removed");
  fs.rmSync(dir, { recursive: true, force: true });
});

void test("kill -9 during a pipelined write load loses no acknowledged write", async () => {
  const dir = tmp();
  const d = await start(dir);
  const c = await connect(d.socket);
  const acked: number[] = [];
  let stop = false;
  // Four writers with 16 requests in flight each; SIGKILL lands while requests are outstanding.
  const writer = async (w: number): Promise<void> => {
    let i = 0;
    while (!stop) {
      const batch = Array.from({ length: 16 }, () => i++);
      const replies = await Promise.allSettled(batch.map((k) => c.request("WRITE", `/load/w${w}/k${k}|value-${k}`)));
      replies.forEach((r, j) => {
        if (r.status === "fulfilled" && r.value.text === "OK|") acked.push(w * 1_000_000 + batch[j]!);
      });
      if (replies.some((r) => r.status === "rejected")) return;
    }
  };
  const writers = [0, 1, 2, 3].map(writer);
  while (acked.length < 3000) await new Promise((r) => setTimeout(r, 5));
  d.child.kill("SIGKILL");
  await d.exited;
  stop = true;
  await Promise.all(writers);
  const d2 = await start(dir);
  const c2 = await connect(d2.socket);
  const missing: number[] = [];
  for (let i = 0; i < acked.length; i += 256) {
    const chunk = acked.slice(i, i + 256);
    const replies = await Promise.all(chunk.map((x) => c2.request("READ", `/load/w${Math.floor(x / 1_000_000)}/k${x % 1_000_000}|`)));
    replies.forEach((r, j) => {
      if (r.text !== `value-${chunk[j]! % 1_000_000}`) missing.push(chunk[j]!);
    });
  }
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} of ${acked.length} acknowledged writes lost`);
  c2.close();
  d2.child.kill("SIGTERM");
  await d2.exited;
  fs.rmSync(dir, { recursive: true, force: true });
});

void test("kill -9 while a background compaction writes its snapshot loses no acknowledged write", async () => {
  const dir = tmp();
  const d = await start(dir);
  const c = await connect(d.socket);
  const state = path.join(dir, "state");
  const NODES = 60_000;
  for (let i = 0; i < NODES; i += 64) {
    await Promise.all(Array.from({ length: Math.min(64, NODES - i) }, (_, k) => c.request("WRITE", `/fill/d${(i + k) % 60}/n${i + k}|${"v".repeat(48)}`)));
  }
  const acked: number[] = [];
  let stop = false;
  const writer = async (): Promise<void> => {
    for (let i = 0; !stop; i += 16) {
      const batch = Array.from({ length: 16 }, (_, k) => i + k);
      const replies = await Promise.allSettled(batch.map((k) => c.request("WRITE", `/during/k${k}|${k}`)));
      replies.forEach((r, j) => {
        if (r.status === "fulfilled" && r.value.text === "OK|") acked.push(batch[j]!);
      });
      if (replies.some((r) => r.status === "rejected")) return;
    }
  };
  const writing = writer();
  // A compaction of 60,000 nodes lasts tens of ms: look for its partly written temporary file
  // every millisecond, asking for a compaction each time (one that finished unseen is followed by another).
  const partial = (): string | undefined => fs.readdirSync(state).find((f) => f.endsWith(".tmp") && fs.statSync(path.join(state, f), { throwIfNoEntry: false })?.size);
  const seen = await retryUntil(
    async () => {
      const tmp = partial();
      if (tmp !== undefined) return tmp;
      assert.match((await c.request("CONTROL", "compact|")).text, /^(compaction started|a compaction is under way)\n\|$/);
      return partial();
    },
    { what: "a compaction's partly written snapshot", timeoutMs: 20_000, initialDelayMs: 1, maxDelayMs: 1 },
  );
  d.child.kill("SIGKILL");
  await d.exited;
  stop = true;
  await writing;
  assert.ok(fs.existsSync(path.join(state, seen)), `the kill left the partial ${seen}`);
  // (A record the kill cut short may be reported dropped: it was never acknowledged.)
  const d2 = await start(dir);
  const c2 = await connect(d2.socket);
  assert.equal((await c2.request("READ", `/fill/d${(NODES - 1) % 60}/n${NODES - 1}|`)).text, "v".repeat(48));
  const missing: number[] = [];
  for (let i = 0; i < acked.length; i += 256) {
    const chunk = acked.slice(i, i + 256);
    const replies = await Promise.all(chunk.map((k) => c2.request("READ", `/during/k${k}|`)));
    replies.forEach((r, j) => {
      if (r.text !== String(chunk[j])) missing.push(chunk[j]!);
    });
  }
  assert.ok(acked.length > 0);
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} of ${acked.length} acknowledged writes lost`);
  c2.close();
  d2.child.kill("SIGTERM");
  await d2.exited;
  fs.rmSync(dir, { recursive: true, force: true });
});

void test("a damaged journal on start: the daemon recovers what is valid, says what it dropped, and starts", async () => {
  const dir = tmp();
  const d = await start(dir);
  const c = await connect(d.socket);
  await c.request("WRITE", "/keep/a|1");
  await c.request("WRITE", "/keep/b|2");
  d.child.kill("SIGKILL");
  await d.exited;
  const state = path.join(dir, "state");
  const journal = fs.readdirSync(state).filter((f) => f.startsWith("journal-")).sort((a, b) => Number(a.slice(8)) - Number(b.slice(8))).pop()!;
  // A record torn by the crash, where the next record would have gone: at the end of a journal
  // written with write(2) (cut short: "truncated record"), or where the zeros start in one written
  // through a mapping, which stays reserved ahead (the zeros fill it out: "checksum mismatch").
  const file = path.join(state, journal);
  const bytes = fs.readFileSync(file);
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--; // the last record's value ("2") is not a zero
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, Buffer.from("XSR1\x40\x00\x00\x00garbage-after-a-crash"), 0, 29, end);
  fs.closeSync(fd);
  const d2 = await start(dir);
  const mapped = end < bytes.length; // written through a mapping: the file ends in its reserve
  assert.match(d2.stderr(), new RegExp(`${journal}: dropped 29 bytes at offset \\d+ \\(${mapped ? "checksum mismatch" : "truncated record"}\\)`));
  const c2 = await connect(d2.socket);
  assert.equal((await c2.request("READ", "/keep/b|")).text, "2");
  d2.child.kill("SIGTERM");
  await d2.exited;
  const d3 = await start(dir);
  assert.doesNotMatch(d3.stderr(), /dropped/, "the damage was compacted away");
  d3.child.kill("SIGTERM");
  await d3.exited;
  fs.rmSync(dir, { recursive: true, force: true });
});

void test("an oversized or malformed frame closes only that connection", async () => {
  const dir = tmp();
  const d = await start(dir, []);
  const good = await connect(d.socket);
  const bad = await connect(d.socket);
  const hdr = Buffer.alloc(16);
  hdr.writeUInt32LE(11, 0);
  hdr.writeUInt32LE(4097, 12);
  bad.sendBytes(Buffer.concat([hdr, Buffer.alloc(4097)]));
  await bad.waitClosed();
  const junk = await connect(d.socket);
  assert.equal((await junk.request(77, Buffer.from([0xff, 0xfe]))).error, "ENOSYS");
  assert.equal((await junk.request("READ", "/tool|")).error, undefined);
  assert.equal((await good.request("WRITE", "/still|here")).text, "OK|");
  good.close();
  junk.close();
  d.child.kill("SIGTERM");
  assert.equal((await d.exited).code, 0);
  fs.rmSync(dir, { recursive: true, force: true });
});

void test("a second daemon on a state directory in use refuses to start, names the holder and changes nothing; after a kill -9 of the first it starts", async (t) => {
  const dir = tmp();
  const children: ChildProcess[] = [];
  t.after(() => {
    for (const ch of children) ch.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const d = await start(dir);
  children.push(d.child);
  const c = await connect(d.socket);
  await c.request("WRITE", "/owned/by|first");
  const state = path.join(dir, "state");
  // The state's files, byte for byte (the first daemon's warm-up comes and goes in a scratch
  // directory of its own, not part of the state).
  const files = (): Record<string, string> =>
    Object.fromEntries(
      fs
        .readdirSync(state)
        .filter((f) => !f.startsWith(".warm-up-"))
        .map((f) => [f, fs.readFileSync(path.join(state, f)).toString("base64")]),
    );
  const before = files();
  // Another socket, the same directory: the socket check cannot see it.
  const other = path.join(dir, "other-socket");
  const second = spawn(process.execPath, [BIN, "--socket", other, "--state-dir", state], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(second);
  let err = "";
  let out = "";
  second.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  second.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  const code = await new Promise<number | null | "running">((resolve) => {
    const timer = setTimeout(() => {
      second.kill("SIGKILL");
      resolve("running");
    }, 20_000);
    second.once("exit", (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  assert.ok(code !== 0 && code !== "running", `the second daemon exits with an error (${String(code)})`);
  assert.match(err, new RegExp(`another xenstored \\(pid ${d.child.pid}\\) is using the state directory ${state.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
  assert.equal(out, "", "it never listened (a daemon prints its socket once it does)");
  assert.ok(!fs.existsSync(other));
  assert.deepEqual(files(), before, "the state directory is as the first daemon left it");
  assert.equal((await c.request("READ", "/owned/by|")).text, "first", "the first daemon serves on");
  c.close();
  d.child.kill("SIGKILL");
  await d.exited;
  // The kernel dropped the lock with the process: nothing stale to clear.
  const d2 = await start(dir);
  children.push(d2.child);
  const c2 = await connect(d2.socket);
  assert.equal((await c2.request("READ", "/owned/by|")).text, "first");
  c2.close();
  d2.child.kill("SIGTERM");
  await d2.exited;
});
