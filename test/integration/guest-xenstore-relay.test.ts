/**
 * The guest's xenstore relay and tools (guest/xenstore.c, xs-report.c, xs-tool.c), run on this
 * host: the relay `--connect`s to a socket that stands in for the virtio-serial port, behind which
 * each connection is an unprivileged xenstored connection of domid 5 (as vmstackd binds the
 * port). The tools talk to the relay's own socket, as in a guest.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import type { Duplex } from "node:stream";
import { createXenstored, RawConnection } from "../../src/xenstore/index.js";
import { XenstoreClient } from "../../src/xenstore/client.js";
import { writeDom0, writeDomain } from "../../src/vmm/domain-xenstore.js";
import { guestArtifacts } from "../../src/guest/index.js";
import { retryUntil } from "../../src/lib/retry.js";

const agent = guestArtifacts().agent;
const DOMID = 5;

interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

function facts(domid: number, name: string) {
  return { domid, name, uuid: `00000000-0000-0000-0000-0000000000${String(domid).padStart(2, "0")}`, memoryMiB: 64, maxmemMiB: 64, vcpus: 1, maxvcpus: 1, onPoweroff: "destroy", onReboot: "restart", onCrash: "destroy", startTime: 0 };
}

void test("the guest relay multiplexes tools onto the domain's connection, survives resets and honours control/shutdown", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-xsrelay-"));
  const xsd = createXenstored();
  const dom0 = new XenstoreClient(xsd.openConnection({ domid: 0 }));
  const home = `/local/domain/${DOMID}`;
  const upstream: Socket[] = [];
  const xsConns: Duplex[] = [];
  const server = createServer((s) => {
    upstream.push(s);
    const xs = xsd.openConnection({ domid: DOMID });
    xsConns.push(xs);
    s.pipe(xs).pipe(s);
    s.on("error", () => xs.destroy());
    s.on("close", () => xs.destroy());
    xs.on("close", () => s.destroy());
  });
  server.listen(join(dir, "port.sock"));
  await once(server, "listening");
  const sock = join(dir, "xenstored.sock");
  let relay: ChildProcess | undefined;
  let relayErr = "";
  const tool = (argv: readonly string[], file = agent): Promise<ToolResult> =>
    new Promise((resolve) => {
      execFile(file, argv, { env: { ...process.env, XENSTORED_PATH: sock }, timeout: 20_000 }, (e, stdout, stderr) => {
        resolve({ code: e ? (typeof e.code === "number" ? e.code : -1) : 0, stdout, stderr });
      });
    });
  const xsTool = (...argv: string[]): Promise<ToolResult> => tool(["xenstore", ...argv]);
  try {
    await writeDom0(dom0, 1024);
    await writeDomain(dom0, facts(DOMID, "guest5"));
    await writeDomain(dom0, facts(6, "other6"));
    relay = spawn(agent, ["xenstore-relay", "--connect", join(dir, "port.sock"), "--socket", sock, "--stuck-ms", "500"], { stdio: ["ignore", "ignore", "pipe"] });
    relay.stderr?.on("data", (c: Buffer) => (relayErr += c.toString()));
    const exited = once(relay, "exit");

    // Once connected the relay reports the guest: data/booted last.
    await retryUntil(async () => ((await dom0.tryRead(`${home}/data/booted`)) === "1" ? true : undefined), { what: "data/booted", timeoutMs: 10_000 });
    assert.match((await dom0.read(`${home}/drivers/0`)) ?? "", /^vmstack-agent \S+ \(Linux /);
    assert.ok(((await dom0.read(`${home}/data/os_uname`)) ?? "").length > 0);
    assert.equal(await dom0.read(`${home}/control/feature-poweroff`), "1");

    await t.test("tools read relative and absolute paths of their own domain", async () => {
      assert.deepEqual(await xsTool("read", "name", `${home}/domid`), { code: 0, stdout: "guest5\n5\n", stderr: "" });
      symlinkSync(agent, join(dir, "xenstore-read"));
      assert.equal((await tool(["name"], join(dir, "xenstore-read"))).stdout, "guest5\n");
    });

    await t.test("tools write and remove under data/, and list the home", async () => {
      assert.equal((await xsTool("write", "data/greeting", "hello world")).code, 0);
      assert.equal(await dom0.read(`${home}/data/greeting`), "hello world");
      assert.deepEqual((await xsTool("list", "data")).stdout.split("\n").filter(Boolean).sort(), ["booted", "greeting", "os_uname"]);
      const ls = await xsTool("ls");
      assert.match(ls.stdout, /^name = "guest5"$/m);
      assert.match(ls.stdout, /^ greeting = "hello world"$/m);
      assert.equal((await xsTool("rm", "data/greeting")).code, 0);
      assert.equal((await xsTool("exists", "data/greeting")).code, 1);
    });

    await t.test("another domain's nodes and dom0's are EACCES", async () => {
      for (const p of ["/local/domain/6/name", "/local/domain/0/name"]) {
        const r = await xsTool("read", p);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /Permission denied \(EACCES\)/);
      }
      const w = await xsTool("write", "/local/domain/6/data/x", "1");
      assert.match(w.stderr, /EACCES/);
      assert.equal(await dom0.tryRead("/local/domain/6/data/x"), undefined);
    });

    await t.test("two clients watch one path with the same token; each gets its events, also after a channel reset", async () => {
      const watchers = [0, 1].map(() => {
        const p = spawn(agent, ["xenstore", "watch", "-n", "3", "data/w"], { env: { ...process.env, XENSTORED_PATH: sock }, stdio: ["ignore", "pipe", "inherit"] });
        let out = "";
        p.stdout.on("data", (c: Buffer) => (out += c.toString()));
        return { p, out: () => out, exit: once(p, "exit") };
      });
      // First event: the registration itself (xenstore.txt: a new watch fires once).
      await retryUntil(() => (watchers.every((w) => w.out().split("\n").length >= 2) ? true : undefined), { what: "the initial events", timeoutMs: 10_000 });
      await dom0.write(`${home}/data/w`, "1");
      await retryUntil(() => (watchers.every((w) => w.out().split("\n").length >= 3) ? true : undefined), { what: "the change events", timeoutMs: 10_000 });
      // The host goes away (vmstackd restarting): the relay reconnects and registers the watches
      // again on the new connection; that registration fires each once more, the third event.
      const before = upstream.length;
      upstream[upstream.length - 1]?.destroy();
      await retryUntil(() => (upstream.length > before ? true : undefined), { what: "the relay to reconnect", timeoutMs: 10_000 });
      for (const w of watchers) {
        const [code] = (await w.exit) as [number];
        assert.equal(code, 0);
        assert.deepEqual(w.out().trim().split("\n"), ["data/w", "data/w", "data/w"]);
      }
      // And events after the reset reach a watcher.
      const later = spawn(agent, ["xenstore", "watch", "-n", "2", `${home}/data/v`], { env: { ...process.env, XENSTORED_PATH: sock }, stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      later.stdout.on("data", (c: Buffer) => (out += c.toString()));
      await retryUntil(() => (out.length > 0 ? true : undefined), { what: "the initial event", timeoutMs: 10_000 });
      await dom0.write(`${home}/data/v`, "x");
      await once(later, "exit");
      assert.deepEqual(out.trim().split("\n"), [`${home}/data/v`, `${home}/data/v`]);
    });

    await t.test("a client sending an oversized frame is closed; the relay and other clients go on", async () => {
      const raw = await new Promise<RawConnection>((resolve, reject) => {
        const s = new Socket();
        s.connect(sock, () => resolve(new RawConnection(s)));
        s.on("error", reject);
      });
      const header = Buffer.alloc(16);
      header.writeUInt32LE(2, 0);
      header.writeUInt32LE(100_000, 12);
      raw.sendBytes(header);
      await raw.waitClosed();
      assert.equal((await xsTool("read", "name")).stdout, "guest5\n");
    });

    await t.test("a transaction begun before a channel reset gets EAGAIN afterwards; requests outside it work", async () => {
      const raw = await new Promise<RawConnection>((resolve, reject) => {
        const s = new Socket();
        s.connect(sock, () => resolve(new RawConnection(s)));
        s.on("error", reject);
      });
      const started = await raw.request("TRANSACTION_START", "|");
      const tx = Number(started.text.replace(/\|$/, ""));
      assert.ok(tx > 0, started.text);
      assert.equal((await raw.request("READ", "name|", tx)).text, "guest5");
      const before = upstream.length;
      upstream[upstream.length - 1]?.destroy();
      await retryUntil(() => (upstream.length > before ? true : undefined), { what: "the relay to reconnect", timeoutMs: 10_000 });
      assert.equal((await raw.request("READ", "name|", tx)).error, "EAGAIN");
      assert.equal((await raw.request("TRANSACTION_END", "T|", tx)).error, "EAGAIN");
      assert.equal((await raw.request("READ", "name|")).text, "guest5");
      raw.close();
    });

    await t.test("a stream out of step (half a frame left in xenstored) is noticed and reset in band", async () => {
      // A header announcing 100 payload bytes, as if an earlier boot died mid-frame: xenstored
      // swallows the relay's next request as that payload, and no reply comes.
      const header = Buffer.alloc(16);
      header.writeUInt32LE(2, 0);
      header.writeUInt32LE(100, 12);
      const before = upstream.length;
      xsConns[xsConns.length - 1]?.write(header);
      const r = await xsTool("read", "name");
      assert.deepEqual(r, { code: 0, stdout: "guest5\n", stderr: "" });
      assert.ok(upstream.length > before, "the channel was reset");
      assert.match(relayErr, /no reply for 500 ms; asking the host to reset the channel/);
    });

    await t.test("control/shutdown = poweroff is acknowledged with \"\" and acted on", async () => {
      await dom0.write(`${home}/control/shutdown`, "poweroff");
      const [code] = (await exited) as [number];
      assert.equal(code, 0, relayErr);
      assert.equal(await dom0.read(`${home}/control/shutdown`), "");
      assert.match(relayErr, /control\/shutdown = poweroff: acknowledged/);
      relay = undefined;
    });
  } finally {
    relay?.kill("SIGKILL");
    for (const s of upstream) s.destroy();
    server.close();
    xsd.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

