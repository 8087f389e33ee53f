import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { Readable, Writable } from "node:stream";
import { main } from "../../src/cli/main.js";
import { RawConnection } from "../../src/xenstore/index.js";

function capture(onText?: (t: string) => void): { stream: Writable; text: () => string } {
  let text = "";
  const stream = new Writable({
    write(c: Buffer, _e, cb) {
      text += c.toString();
      onText?.(text);
      cb();
    },
  });
  return { stream, text: () => text };
}

void test("vmstack xenstored serves its socket until the signal aborts, then exits 0", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vmstack-xs-cli-"));
  const socket = path.join(dir, "socket");
  const ac = new AbortController();
  let ready: () => void = () => undefined;
  const printed = new Promise<void>((r) => (ready = r));
  const out = capture((t) => t.includes("\n") && ready());
  const err = capture();
  const code = main(["xenstored", "--socket", socket, "--no-persist", "--quota", "nodes=7", "--busy-poll-us", "50"], {
    stdout: out.stream,
    stderr: err.stream,
    stdin: Readable.from([]),
    signal: ac.signal,
  });
  await printed;
  assert.equal(out.text(), `${socket}\n`);
  const s = net.connect(socket);
  await new Promise((r) => s.once("connect", r));
  const c = new RawConnection(s);
  assert.equal((await c.request("GET_QUOTA", "nodes|")).text, "7|");
  ac.abort();
  assert.equal(await code, 0);
  assert.ok(!fs.existsSync(socket));
  fs.rmSync(dir, { recursive: true, force: true });
});

void test("vmstack xenstored rejects a bad quota and conflicting options as usage errors", async () => {
  for (const argv of [["--quota", "bogus=1"], ["--no-persist", "--state-dir", "/tmp/x"], ["--socket-mode", "999"], ["--busy-poll-us", "-5"], ["--busy-poll-us", "fast"], ["--busy-poll-us", "20000"], ["extra"]]) {
    const err = capture();
    const code = await main(["xenstored", ...argv], { stdout: capture().stream, stderr: err.stream, stdin: Readable.from([]), signal: new AbortController().signal });
    assert.equal(code, 2, argv.join(" "));
    assert.match(err.text(), /see 'vmstack xenstored --help'/);
  }
});

void test("vmstack vmstackd refuses a busy-poll window for its xenstored that is not 0-10000 µs, before it starts anything", async () => {
  for (const value of ["-5", "fast", "20000"]) {
    const err = capture();
    const code = await main(["vmstackd", "--xenstored-busy-poll-us", value], { stdout: capture().stream, stderr: err.stream, stdin: Readable.from([]), signal: new AbortController().signal });
    assert.equal(code, 2, value);
    assert.match(err.text(), /--xenstored-busy-poll-us/);
    assert.match(err.text(), /see 'vmstack vmstackd --help'/);
  }
});
