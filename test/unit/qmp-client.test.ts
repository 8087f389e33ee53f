/** The QMP client against a fake QMP server: negotiation, replies, errors, events, deadlines, loss. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QmpClient, decodeQmpLine, encodeQmpCommand, LineSplitter } from "../../src/vmm/qmp/index.js";
import { FakeQmp } from "../fixtures/fake-qmp.js";
import { isVmstackError } from "../../src/lib/errors.js";

async function withFake(options: Parameters<typeof FakeQmp.listen>[1], f: (fake: FakeQmp, path: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "qmp-"));
  const path = join(dir, "qmp.sock");
  const fake = await FakeQmp.listen(path, options);
  try {
    await f(fake, path);
  } finally {
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("connect reads the greeting and negotiates capabilities before any command", async () => {
  await withFake({ handlers: { "query-status": () => ({ status: "running", running: true }) } }, async (fake, path) => {
    const qmp = await QmpClient.connect(path, { timeoutMs: 2000 });
    assert.equal(qmp.greeting.version.qemu.major, 7);
    assert.deepEqual(await qmp.execute("query-status"), { status: "running", running: true });
    assert.deepEqual(fake.received.map((r) => r.execute), ["qmp_capabilities", "query-status"]);
    qmp.close();
  });
});

test("connect waits for a socket that appears later", async () => {
  const dir = mkdtempSync(join(tmpdir(), "qmp-"));
  const path = join(dir, "qmp.sock");
  const pending = QmpClient.connect(path, { timeoutMs: 3000 });
  await new Promise((r) => setTimeout(r, 100));
  const fake = await FakeQmp.listen(path);
  try {
    const qmp = await pending;
    assert.ok(qmp.connected);
    qmp.close();
  } finally {
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a QMP error reply rejects with QMP_ERROR carrying the error class and description", async () => {
  await withFake({ handlers: { stop: () => { throw new Error("guest is busy"); } } }, async (_fake, path) => {
    const qmp = await QmpClient.connect(path, { timeoutMs: 2000 });
    await assert.rejects(qmp.execute("stop"), (e: unknown) => isVmstackError(e, "QMP_ERROR") && /guest is busy/.test(e.message) && e.facts["errorClass"] === "GenericError");
    await assert.rejects(qmp.execute("no-such-command"), (e: unknown) => isVmstackError(e, "QMP_ERROR") && e.facts["errorClass"] === "CommandNotFound");
    qmp.close();
  });
});

test("arguments are sent under 'arguments' and replies are matched to their commands by id", async () => {
  await withFake({ handlers: { echo: (a) => a, slow: () => "slow" }, replyDelayMs: 5 }, async (fake, path) => {
    const qmp = await QmpClient.connect(path, { timeoutMs: 2000 });
    const [a, b] = await Promise.all([qmp.execute("echo", { x: 1 }), qmp.execute("echo", { x: 2 })]);
    assert.deepEqual([a, b], [{ x: 1 }, { x: 2 }]);
    assert.deepEqual(fake.received.at(-1), { execute: "echo", arguments: { x: 2 } });
    qmp.close();
  });
});

test("events reach listeners and waitForEvent resolves on the matching one", async () => {
  await withFake({}, async (fake, path) => {
    const qmp = await QmpClient.connect(path, { timeoutMs: 2000 });
    const seen: string[] = [];
    qmp.onEvent((e) => seen.push(e.event));
    const waiting = qmp.waitForEvent("SHUTDOWN", { timeoutMs: 2000, filter: (e) => e.data["guest"] === true });
    fake.event("STOP");
    fake.event("SHUTDOWN", { guest: false });
    fake.event("SHUTDOWN", { guest: true, reason: "guest-shutdown" });
    const e = await waiting;
    assert.equal(e.data["reason"], "guest-shutdown");
    assert.equal(e.timeMs, 1700000000250);
    assert.deepEqual(seen, ["STOP", "SHUTDOWN", "SHUTDOWN"]);
    qmp.close();
  });
});

test("waitForEvent times out naming the event, and honours an AbortSignal", async () => {
  await withFake({}, async (_fake, path) => {
    const qmp = await QmpClient.connect(path, { timeoutMs: 2000, label: "server" });
    await assert.rejects(qmp.waitForEvent("RESUME", { timeoutMs: 30 }), (e: unknown) => isVmstackError(e, "TIMEOUT") && /server: QMP event RESUME/.test(e.message));
    const ac = new AbortController();
    const p = qmp.waitForEvent("RESUME", { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, (e: unknown) => isVmstackError(e, "ABORTED"));
    qmp.close();
  });
});

test("a server that never greets makes connect time out", async () => {
  await withFake({ silent: true }, async (_fake, path) => {
    await assert.rejects(QmpClient.connect(path, { timeoutMs: 50 }), (e: unknown) => isVmstackError(e, "TIMEOUT") && /greeting/.test(e.message));
  });
});

test("losing the connection rejects pending commands with QMP_GONE", async () => {
  await withFake({ handlers: { "query-status": () => ({ status: "running" }) } }, async (fake, path) => {
    const qmp = await QmpClient.connect(path, { timeoutMs: 2000 });
    const p = qmp.execute("query-status");
    fake.dropClients();
    // The request had not even left the host when the connection dropped.
    await assert.rejects(p, (e: unknown) => isVmstackError(e, "QMP_GONE"));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(qmp.connected, false);
    await assert.rejects(qmp.execute("query-status"), (e: unknown) => isVmstackError(e, "QMP_GONE"));
  });
});

test("decodeQmpLine never throws: bad JSON and unknown shapes decode to invalid", () => {
  assert.equal(decodeQmpLine("{nope").kind, "invalid");
  assert.equal(decodeQmpLine("[1]").kind, "invalid");
  assert.equal(decodeQmpLine('{"something": 1}').kind, "invalid");
  assert.deepEqual(decodeQmpLine('{"return": {}, "id": 3}'), { kind: "return", id: 3, value: {} });
  assert.equal(encodeQmpCommand("cont", undefined, 4), '{"execute":"cont","id":4}\n');
});

test("the line splitter keeps a partial line until its newline arrives", () => {
  const s = new LineSplitter();
  assert.deepEqual(s.push('{"a":'), []);
  assert.deepEqual(s.push('1}\r\n{"b":2}\n{"c"'), ['{"a":1}', '{"b":2}']);
  assert.deepEqual(s.push(":3}\n"), ['{"c":3}']);
});
