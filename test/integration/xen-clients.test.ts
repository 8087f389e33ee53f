/**
 * Xen's own clients against vmstack's xenstored: Debian's xenstore-utils (read, write, ls, rm,
 * chmod, watch, list, exists) and Xen's /usr/lib/xen-4.17/bin/test-xenstore, pointed at the
 * daemon with XENSTORED_PATH (xs_lib.c). Each tool sequence also runs against Xen's C xenstored
 * when it is available, and the two transcripts must match byte for byte.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";
import { connectXenstore, type XenstoreClient } from "../../src/xenstore/client.js";
import { startVmstackSocket, startXenPeer } from "../conformance/xenstore-targets.js";

const execFileP = promisify(execFile);
const TEST_XENSTORE = "/usr/lib/xen-4.17/bin/test-xenstore";
const TOOLS = ["read", "write", "ls", "rm", "chmod", "watch", "list", "exists"].map((t) => `/usr/bin/xenstore-${t}`);

interface ToolResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function tool(socket: string, name: string, args: readonly string[]): Promise<ToolResult> {
  try {
    const { stdout, stderr } = await execFileP(`/usr/bin/xenstore-${name}`, [...args], { env: { ...process.env, XENSTORED_PATH: socket }, timeout: 10_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof err.code !== "number") throw e;
    return { code: err.code, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
  }
}

/** A transcript of tool runs: `$ cmd args` then exit code and stdout. */
class Transcript {
  readonly lines: string[] = [];
  constructor(readonly socket: string) {}
  async run(name: string, ...args: string[]): Promise<ToolResult> {
    const r = await tool(this.socket, name, args);
    this.lines.push(`$ xenstore-${name} ${args.join(" ")}`, `exit ${r.code}`, ...r.stdout.split("\n").filter((l) => l !== ""));
    return r;
  }
  get text(): string {
    return this.lines.join("\n");
  }
}

type Scenario = (tr: Transcript, client: XenstoreClient) => Promise<void>;

const missing = [...TOOLS, TEST_XENSTORE].filter((f) => !existsSync(f));
const skipReason = missing.length > 0 ? `missing ${missing.join(", ")} (apt-get install xenstore-utils xen-utils-4.17)` : undefined;

/** Run `scenario` against vmstack's daemon and, when available, Xen's C daemon; compare. */
async function differential(t: TestContext, scenario: Scenario, expected?: string): Promise<void> {
  if (skipReason !== undefined) {
    t.skip(skipReason);
    return;
  }
  const results: { name: string; text: string }[] = [];
  for (const start of [startVmstackSocket, () => startXenPeer("c")]) {
    const target = await start();
    if (typeof target === "string") {
      t.diagnostic(`not compared with Xen's C xenstored: ${target}`);
      continue;
    }
    const client = await connectXenstore({ socket: target.socket, reconnect: false });
    try {
      const tr = new Transcript(target.socket);
      await scenario(tr, client);
      results.push({ name: target.name, text: tr.text });
    } finally {
      await client.close();
      await target.stop();
    }
  }
  const [ours, theirs] = results;
  assert.ok(ours);
  if (expected !== undefined) assert.equal(ours.text, expected.trim());
  if (theirs) assert.equal(ours.text, theirs.text, `${ours.name} vs ${theirs.name}`);
}

await test("xenstore-write, -read, -exists, -list, -ls and -rm behave as on Xen's C daemon", async (t) => {
  await differential(
    t,
    async (tr) => {
      await tr.run("write", "/vm/abc/name", "demo", "/vm/abc/x", "hello world");
      await tr.run("read", "/vm/abc/name");
      await tr.run("read", "/vm/abc/name", "/vm/abc/x");
      await tr.run("write", "rel/key", "relative");
      await tr.run("read", "/local/domain/0/rel/key");
      await tr.run("exists", "/vm/abc");
      await tr.run("exists", "/vm/nope");
      await tr.run("list", "/vm/abc");
      await tr.run("ls", "/vm");
      await tr.run("ls", "-f", "/vm");
      await tr.run("rm", "/vm/abc/x");
      await tr.run("read", "/vm/abc/x");
      await tr.run("rm", "/vm");
      await tr.run("exists", "/vm/abc/name");
    },
    `
$ xenstore-write /vm/abc/name demo /vm/abc/x hello world
exit 0
$ xenstore-read /vm/abc/name
exit 0
demo
$ xenstore-read /vm/abc/name /vm/abc/x
exit 0
demo
hello world
$ xenstore-write rel/key relative
exit 0
$ xenstore-read /local/domain/0/rel/key
exit 0
relative
$ xenstore-exists /vm/abc
exit 0
$ xenstore-exists /vm/nope
exit 1
$ xenstore-list /vm/abc
exit 0
name
x
$ xenstore-ls /vm
exit 0
abc = ""
 name = "demo"
 x = "hello world"
$ xenstore-ls -f /vm
exit 0
/vm/abc = ""
/vm/abc/name = "demo"
/vm/abc/x = "hello world"
$ xenstore-rm /vm/abc/x
exit 0
$ xenstore-read /vm/abc/x
exit 1
$ xenstore-rm /vm
exit 0
$ xenstore-exists /vm/abc/name
exit 1`,
  );
});

await test("xenstore-chmod sets permissions that xenstore-ls -p and the client both see", async (t) => {
  await differential(t, async (tr, client) => {
    await tr.run("write", "/perm/a/b", "1");
    await tr.run("chmod", "/perm/a", "n0", "r5", "b7");
    await tr.run("chmod", "-r", "/perm", "n0", "r9");
    await tr.run("ls", "-p", "/perm");
    const perms = await client.getPerms("/perm/a/b");
    assert.deepEqual(perms, [
      { access: "n", domid: 0 },
      { access: "r", domid: 9 },
    ]);
    await tr.run("rm", "/perm");
  });
});

await test("xenstore-list reads a directory over 4096 bytes through DIRECTORY_PART", async (t) => {
  await differential(t, async (tr, client) => {
    const names = Array.from({ length: 300 }, (_, i) => `child-name-${String(i).padStart(4, "0")}`);
    await Promise.all(names.map((n) => client.write(`/big/${n}`, "")));
    const r = await tr.run("list", "/big");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n").sort(), names);
    assert.deepEqual((await client.directory("/big")).sort(), names);
    await client.rm("/big");
  });
});

await test("xenstore-watch prints the initial event and then each change, and exits after -n events", async (t) => {
  await differential(t, async (tr, client) => {
    await client.write("/watched/k", "0");
    const child = spawn("/usr/bin/xenstore-watch", ["-n", "3", "/watched"], { env: { ...process.env, XENSTORED_PATH: tr.socket } });
    let out = "";
    const lines = async (n: number): Promise<void> => {
      while (out.split("\n").length - 1 < n) await new Promise((r) => child.stdout.once("data", r));
    };
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    await lines(1); // the initial event: the watch is registered
    await client.write("/watched/k", "1");
    await lines(2);
    await client.rm("/watched/k");
    assert.equal(await exited, 0);
    tr.lines.push("$ xenstore-watch -n 3 /watched", ...out.trim().split("\n"));
    assert.deepEqual(out.trim().split("\n"), ["/watched", "/watched/k", "/watched/k"]);
    await client.rm("/watched");
  });
});

await test("Xen's test-xenstore passes against vmstack's xenstored", async (t) => {
  if (skipReason !== undefined) {
    t.skip(skipReason);
    return;
  }
  const target = await startVmstackSocket();
  try {
    // Every test (read, write, dir, rm, empty/rmw transactions, "ta err" EAGAIN), 20 iterations each.
    const r = await execFileP(TEST_XENSTORE, ["-i", "20"], { env: { ...process.env, XENSTORED_PATH: target.socket }, timeout: 60_000 }).catch(
      (e: { code?: number; stdout?: string; stderr?: string }) => {
        assert.fail(`test-xenstore exited ${String(e.code)}:\n${e.stdout ?? ""}${e.stderr ?? ""}`);
      },
    );
    t.diagnostic(r.stdout.trim().split("\n").join(" | "));
  } finally {
    await target.stop();
  }
});

await test("vmstack xenstore gives the same answers on Xen's C daemon as on vmstack's", async (t) => {
  const bin = new URL("../../src/bin/vmstack.js", import.meta.url).pathname;
  await differential(t, async (tr) => {
    const vm = async (...args: string[]): Promise<void> => {
      let r: ToolResult;
      try {
        const { stdout, stderr } = await execFileP(process.execPath, [bin, "xenstore", ...args, "--socket", tr.socket], { timeout: 10_000 });
        r = { code: 0, stdout, stderr };
      } catch (e) {
        const err = e as { code?: unknown; stdout?: string; stderr?: string };
        if (typeof err.code !== "number") throw e;
        r = { code: err.code, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
      }
      tr.lines.push(`$ vmstack xenstore ${args.join(" ")}`, `exit ${r.code}`, ...r.stdout.split("\n").filter((l) => l !== ""));
    };
    await vm("write", "/cli/a", "1", "/cli/b/c", "two");
    await vm("read", "/cli/a", "/cli/b/c");
    await vm("ls", "-f", "-p", "/cli");
    await vm("ls", "--json", "/cli");
    await vm("chmod", "-r", "/cli/b", "n0", "r3");
    await vm("ls", "-p", "/cli");
    await vm("exists", "/cli/b");
    await vm("exists", "/cli/zzz");
    await vm("read", "/cli/zzz");
    await vm("rm", "/cli");
    await vm("exists", "/cli/a");
  });
});
