/**
 * vmstackd's side of a guest's xenstore channel against a stand-in for QEMU's chardev socket: the
 * test plays the guest on the accepted connection and speaks the wire protocol (RawConnection).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { createXenstored, RawConnection, type Xenstored } from "../../src/xenstore/index.js";
import { GuestXenstoreChannel, GuestXenstoreChannels } from "../../src/vmm/guest-xenstore-channel.js";
import { XenstoreClient } from "../../src/xenstore/client.js";
import { writeDom0, writeDomain } from "../../src/vmm/domain-xenstore.js";
import { rng } from "../support/rng.js";

interface Fixture {
  xsd: Xenstored;
  dom0: XenstoreClient;
  dir: string;
  server: Server;
  /** Connections the channel made to the fake QEMU, in order. */
  accepted: Socket[];
  nextGuest(): Promise<RawConnection>;
  logs: string[];
  done(): Promise<void>;
}

async function fixture(domid: number): Promise<Fixture> {
  const xsd = createXenstored();
  const dom0 = new XenstoreClient(xsd.openConnection({ domid: 0 }));
  await writeDom0(dom0, 1024);
  await writeDomain(dom0, { domid, name: `g${domid}`, uuid: "00000000-0000-0000-0000-00000000000" + domid, memoryMiB: 64, maxmemMiB: 64, vcpus: 1, maxvcpus: 1, onPoweroff: "destroy", onReboot: "restart", onCrash: "destroy", startTime: 0 });
  const dir = mkdtempSync(join(tmpdir(), "vmstack-xsch-"));
  const accepted: Socket[] = [];
  const waiters: ((s: Socket) => void)[] = [];
  const server = createServer((s) => {
    accepted.push(s);
    waiters.shift()?.(s);
  });
  server.listen(join(dir, "xenstore.sock"));
  await once(server, "listening");
  let seen = 0;
  return {
    xsd,
    dom0,
    dir,
    server,
    accepted,
    logs: [],
    async nextGuest() {
      const i = seen++;
      const s = accepted[i] ?? (await new Promise<Socket>((r) => waiters.push(r)));
      return new RawConnection(s);
    },
    async done() {
      for (const s of accepted) s.destroy();
      server.close();
      xsd.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

void test("a guest's channel reaches xenstored as its own domid: its home is readable, dom0's nodes are EACCES", async () => {
  const f = await fixture(3);
  const ch = new GuestXenstoreChannel({ socketPath: join(f.dir, "xenstore.sock"), domid: 3, open: (d) => f.xsd.openConnection({ domid: d }), log: (m) => f.logs.push(m), label: "g3", kickMs: 0 });
  try {
    const g = await f.nextGuest();
    assert.equal((await g.request("READ", "name|")).text, "g3");
    assert.equal((await g.request("READ", "/local/domain/3/name|")).text, "g3");
    assert.equal((await g.request("READ", "/local/domain/0/name|")).error, "EACCES");
    assert.equal((await g.request("WRITE", "name|evil")).error, "EACCES");
    assert.equal((await g.request("WRITE", "data/x|1")).error, undefined);
    assert.equal(await f.dom0.read("/local/domain/3/data/x"), "1");
    // Privileged operations are refused to a guest.
    assert.equal((await g.request("INTRODUCE", "9|0|0|")).error, "EACCES");
  } finally {
    ch.close();
    await ch.done;
    await f.done();
  }
});

void test("malformed bytes get protocol errors, and an oversized frame resets the channel onto a fresh connection", async () => {
  const f = await fixture(4);
  const ch = new GuestXenstoreChannel({ socketPath: join(f.dir, "xenstore.sock"), domid: 4, open: (d) => f.xsd.openConnection({ domid: d }), log: (m) => f.logs.push(m), label: "g4", resetDelayMs: 10, kickMs: 0 });
  try {
    const g = await f.nextGuest();
    // An unknown message type and a READ without its NUL: errors, the connection stays.
    assert.equal((await g.request(4242, "x")).error, "ENOSYS");
    assert.equal((await g.request("WRITE", "")).error, "EINVAL");
    assert.ok((await g.request("WATCH", "data|tok|")).error === undefined);
    assert.equal((await g.request("READ", "name|")).text, "g4");
    // A header announcing 1 MiB: xenstored closes the connection; the relay drops QEMU's socket
    // (the guest sees its port hang up) and connects again with a new xenstored connection.
    const header = Buffer.alloc(16);
    header.writeUInt32LE(2, 0);
    header.writeUInt32LE(1 << 20, 12);
    g.sendBytes(header);
    await g.waitClosed();
    const g2 = await f.nextGuest();
    assert.equal((await g2.request("READ", "name|")).text, "g4");
    assert.equal(ch.resets, 1);
    assert.equal(ch.connections, 2);
    assert.ok(f.logs.some((l) => l.includes("resetting the channel")), f.logs.join("\n"));
    // The old connection's watch is gone with it (the guest registers again after a reset).
    await f.dom0.write("/local/domain/4/data/y", "1");
    assert.equal(g2.events.length, 0);
    // vmstackd is fine: dom0 still works.
    assert.equal(await f.dom0.read("/local/domain/4/name"), "g4");
  } finally {
    ch.close();
    await ch.done;
    await f.done();
  }
});

void test("random bytes from a guest never take vmstackd down: the channel resets as needed and serves again", async () => {
  const f = await fixture(8);
  const ch = new GuestXenstoreChannel({ socketPath: join(f.dir, "xenstore.sock"), domid: 8, open: (d) => f.xsd.openConnection({ domid: d }), log: (m) => f.logs.push(m), label: "g8", resetDelayMs: 5, kickMs: 0 });
  const rand = rng(8);
  try {
    let g = await f.nextGuest();
    for (let burst = 0; burst < 20; burst++) {
      const bytes = Buffer.alloc(1 + Math.floor(rand() * 200));
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(rand() * 256);
      // Half the bursts start with a plausible header so they reach the op decoder.
      if (burst % 2 === 0 && bytes.length >= 16) {
        bytes.writeUInt32LE(Math.floor(rand() * 30), 0);
        bytes.writeUInt32LE(Math.min(bytes.length - 16, Math.floor(rand() * 64)), 12);
      }
      if (g.closed) g = await f.nextGuest();
      g.sendBytes(bytes);
    }
    // Whatever the garbage left half-decoded, 16 bytes of 0xFF read as a header at any alignment
    // announce a frame over 4096 bytes: xenstored closes, the channel resets, the stream is clean.
    g.sendBytes(Buffer.alloc(32, 0xff));
    await g.waitClosed();
    let fresh = await f.nextGuest();
    while (fresh.closed) fresh = await f.nextGuest();
    assert.equal((await fresh.request("READ", "name|")).text, "g8");
    assert.equal(await f.dom0.read("/local/domain/8/name"), "g8");
  } finally {
    ch.close();
    await ch.done;
    await f.done();
  }
});

void test("per-domain quotas apply to the channel: the watch quota refuses the 129th watch (ENOSPC)", async () => {
  const f = await fixture(5);
  const ch = new GuestXenstoreChannel({ socketPath: join(f.dir, "xenstore.sock"), domid: 5, open: (d) => f.xsd.openConnection({ domid: d }), log: (m) => f.logs.push(m), label: "g5", kickMs: 0 });
  try {
    const g = await f.nextGuest();
    let refused: string | undefined;
    for (let i = 0; i < 129 && refused === undefined; i++) refused = (await g.request("WATCH", `data|t${i}|`)).error;
    assert.equal(refused, "ENOSPC");
  } finally {
    ch.close();
    await ch.done;
    await f.done();
  }
});

void test("the first connection is a kick: the port hangs up once, then the channel serves", async () => {
  const f = await fixture(6);
  const ch = new GuestXenstoreChannel({ socketPath: join(f.dir, "xenstore.sock"), domid: 6, open: (d) => f.xsd.openConnection({ domid: d }), log: (m) => f.logs.push(m), label: "g6", kickMs: 20 });
  try {
    const kicked = await f.nextGuest();
    await kicked.waitClosed();
    const g = await f.nextGuest();
    assert.equal((await g.request("READ", "name|")).text, "g6");
    assert.equal(ch.connections, 1);
  } finally {
    ch.close();
    await ch.done;
    await f.done();
  }
});

void test("the registry skips domains without the port and explains once when xenstored is external", async () => {
  const logs: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), "vmstack-xsch-"));
  try {
    const none = new GuestXenstoreChannels(undefined, (m) => logs.push(m));
    assert.equal(none.attach(1, dir, "a"), undefined);
    assert.equal(logs.length, 0, "no port: nothing to say");
    const server = createServer();
    server.listen(join(dir, "xenstore.sock"));
    await once(server, "listening");
    assert.equal(none.attach(1, dir, "a"), undefined);
    assert.equal(none.attach(2, dir, "b"), undefined);
    assert.equal(logs.length, 1);
    assert.match(logs[0] ?? "", /external xenstored/);
    server.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
