/** exchange(): the bytes that follow a response belong to whoever takes the connection over. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, createServer } from "node:net";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exchange } from "../../src/vmm/api/client.js";

test("frames sent in the same chunk as the response reach the listener attached after await", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-apic-"));
  const path = join(dir, "sock");
  // A handover whose operation ends at once (a fast exec): response, output and exit in one write.
  const server = createServer((s) => s.once("data", () => s.end('{"ok":true,"result":null}\n{"o":"aGk="}\n{"x":{"exitCode":0,"signal":null}}\n')));
  server.listen(path);
  await once(server, "listening");
  try {
    for (let i = 0; i < 20; i++) {
      const s = connect(path);
      await once(s, "connect");
      assert.equal(await exchange(s, { op: "ping" }), null);
      let got = "";
      s.on("data", (c: Buffer) => (got += c.toString()));
      await once(s, "close");
      assert.equal(got, '{"o":"aGk="}\n{"x":{"exitCode":0,"signal":null}}\n');
    }
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
