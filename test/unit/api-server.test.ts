import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listenApi } from "../../src/vmm/api/server.js";
import { exchange } from "../../src/vmm/api/client.js";
import { VmstackError } from "../../src/lib/errors.js";

async function withServer(fn: (path: string, bugs: unknown[]) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-api-"));
  const path = join(dir, "sock");
  const bugs: unknown[] = [];
  const server = await listenApi(
    path,
    async (req) => {
      switch (req.op) {
        case "ping":
          return { kind: "result", value: { pong: true } };
        case "domid":
          throw new VmstackError("NO_SUCH_DOMAIN", `no domain '${req.name}'`);
        case "dmesg":
          throw new Error("a bug");
        case "console":
          return { kind: "handover", attach: (s: Socket) => s.on("data", (c: Buffer) => s.write(Buffer.concat([Buffer.from("echo:"), c]))) };
        default:
          return { kind: "result", value: null };
      }
    },
    (e) => bugs.push(e),
  );
  try {
    await fn(path, bugs);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function open(path: string): Promise<Socket> {
  const s = connect(path);
  await once(s, "connect");
  return s;
}

test("the API server answers several requests on one connection, in order", async () => {
  await withServer(async (path) => {
    const s = await open(path);
    assert.deepEqual(await exchange(s, { op: "ping" }), { pong: true });
    assert.equal(await exchange(s, { op: "pause", domain: "a" }), null);
    s.destroy();
  });
});

test("a VmstackError becomes an error response with its code; a bug becomes INTERNAL and is reported", async () => {
  await withServer(async (path, bugs) => {
    const s = await open(path);
    await assert.rejects(exchange(s, { op: "domid", name: "x" }), (e: unknown) => e instanceof VmstackError && e.code === "NO_SUCH_DOMAIN" && /no domain 'x'/.test(e.message));
    await assert.rejects(exchange(s, { op: "dmesg", clear: false }), (e: unknown) => e instanceof VmstackError && e.code === "INTERNAL");
    assert.equal(bugs.length, 1);
    s.destroy();
  });
});

test("malformed lines get BAD_REQUEST answers and the connection stays usable", async () => {
  await withServer(async (path) => {
    const s = await open(path);
    s.write("not json\n");
    s.write(JSON.stringify({ op: "pause" }) + "\n");
    const lines: string[] = [];
    let buf = "";
    s.on("data", (c: Buffer) => {
      buf += c.toString();
      while (buf.includes("\n")) {
        lines.push(buf.slice(0, buf.indexOf("\n")));
        buf = buf.slice(buf.indexOf("\n") + 1);
      }
    });
    while (lines.length < 2) await once(s, "data");
    assert.match(lines[0] ?? "", /"code":"BAD_REQUEST".*not JSON/);
    assert.match(lines[1] ?? "", /'domain' must be/);
    s.destroy();
  });
});

test("a console request hands the connection over to raw bytes after the response", async () => {
  await withServer(async (path) => {
    const s = await open(path);
    assert.equal(await exchange(s, { op: "console", domain: "a" }), null);
    s.write(Buffer.from([0x00, 0xff, 0x41]));
    const [chunk] = (await once(s, "data")) as [Buffer];
    assert.deepEqual([...chunk], [...Buffer.from("echo:"), 0x00, 0xff, 0x41]);
    s.destroy();
  });
});
