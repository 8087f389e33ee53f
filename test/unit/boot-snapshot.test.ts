/**
 * Boot snapshots of `vmstack run`: the key, the decision whether a run may use one, and the cache
 * entry's checks (the VM side is test/vm/boot-snapshot.test.ts).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  bootSnapshotEligibility,
  bootSnapshotKey,
  coldBootRequested,
  normalizeArgv,
  type BootSnapshotIdentity,
  type BootSnapshotRequest,
} from "../../src/vmm/boot-snapshot-plan.js";
import { BOOT_SNAPSHOTS_KEPT, BootSnapshotStore, parseBootSnapshotMeta } from "../../src/vmm/boot-snapshot-store.js";

const identity: BootSnapshotIdentity = {
  qemu: "/usr/bin/qemu-system-x86_64|123|456|789",
  accel: "tcg",
  kernel: "/cache/kernels/6.1/vmlinux|53243444|1700000000000|42",
  initrd: "a".repeat(64),
  argv: ["qemu-system-x86_64", "-machine", "microvm", "-m", "256", "-smp", "2", "-append", "console=ttyS0 quiet", "-chardev", "socket,id=ch0,path=$RUN/agent.sock"],
};

describe("boot snapshot key", () => {
  test("the same identity always gives the same key, whatever the order of its fields", () => {
    const reordered = Object.fromEntries(Object.entries(identity).reverse()) as unknown as BootSnapshotIdentity;
    assert.equal(bootSnapshotKey(identity), bootSnapshotKey(reordered));
    assert.match(bootSnapshotKey(identity), /^[0-9a-f]{64}$/);
  });

  test("QEMU, accelerator, kernel, initrd, memory, CPUs, command line and devices each change the key", () => {
    const base = bootSnapshotKey(identity);
    const variants: BootSnapshotIdentity[] = [
      { ...identity, qemu: "/usr/bin/qemu-system-x86_64|124|456|789" },
      { ...identity, accel: "kvm" },
      { ...identity, accel: "kvm", host: "6.1.0|Intel" },
      { ...identity, kernel: "/cache/kernels/6.1/vmlinux|53243444|1700000000001|42" },
      { ...identity, initrd: "b".repeat(64) },
      { ...identity, argv: identity.argv.map((a) => (a === "256" ? "512" : a)) },
      { ...identity, argv: identity.argv.map((a) => (a === "2" ? "1" : a)) },
      { ...identity, argv: identity.argv.map((a) => (a === "console=ttyS0 quiet" ? "console=ttyS0" : a)) },
      { ...identity, argv: [...identity.argv, "-device", "virtio-rng-device"] },
    ];
    const keys = new Set(variants.map(bootSnapshotKey));
    assert.equal(keys.size, variants.length);
    assert.ok(!keys.has(base));
  });

  test("the run directory does not enter the key: each run's sockets live elsewhere", () => {
    const argv = (dir: string): string[] => ["-chardev", `socket,id=ch0,path=${dir}/agent.sock,server=on`, "-mon", `chardev=qmp`, `${dir}/qmp.sock`];
    const a = normalizeArgv(argv("/tmp/vmstack-run-AAAAAA"), "/tmp/vmstack-run-AAAAAA");
    const b = normalizeArgv(argv("/tmp/vmstack-run-BBBBBB"), "/tmp/vmstack-run-BBBBBB");
    assert.deepEqual(a, b);
    assert.equal(a[1], "socket,id=ch0,path=$RUN/agent.sock,server=on");
    assert.equal(bootSnapshotKey({ ...identity, argv: a }), bootSnapshotKey({ ...identity, argv: b }));
  });
});

describe("whether a run may use a boot snapshot", () => {
  const plain: BootSnapshotRequest = { coldBootFlag: false, coldBootEnv: undefined, virtiofsShares: 0, drives: 0, nics: 0 };

  test("a plain run (also with --in/--out, which travel over the agent channel) may", () => {
    assert.deepEqual(bootSnapshotEligibility(plain), { eligible: true });
  });

  test("--cold-boot and VMSTACK_COLD_BOOT opt out, and say so", () => {
    const flag = bootSnapshotEligibility({ ...plain, coldBootFlag: true });
    assert.equal(flag.eligible, false);
    assert.match(flag.eligible ? "" : flag.reason, /--cold-boot/);
    const env = bootSnapshotEligibility({ ...plain, coldBootEnv: "1" });
    assert.match(env.eligible ? "" : env.reason, /VMSTACK_COLD_BOOT=1/);
    for (const v of [undefined, "", "0", "false", "no", " NO "]) assert.equal(coldBootRequested(v), false, String(v));
    for (const v of ["1", "yes", "true", "on"]) assert.equal(coldBootRequested(v), true, v);
  });

  test("virtiofs shares, disks and network cards boot cold, each with its reason", () => {
    const cases: Array<[Partial<BootSnapshotRequest>, RegExp]> = [
      [{ virtiofsShares: 1 }, /virtiofs/],
      [{ drives: 2 }, /disks/],
      [{ nics: 1 }, /--net/],
    ];
    for (const [change, reason] of cases) {
      const r = bootSnapshotEligibility({ ...plain, ...change });
      assert.equal(r.eligible, false);
      assert.match(r.eligible ? "" : r.reason, reason);
    }
  });
});

describe("boot snapshot store", () => {
  const root = mkdtempSync(join(tmpdir(), "vmstack-boot-snapshots-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const key = (c: string): string => c.repeat(64);

  test("a saved snapshot is found with its size and hash; a changed byte fails the hash check", async () => {
    const store = new BootSnapshotStore(join(root, "a"));
    const saved = await store.save(key("1"), identity, async (path) => writeFileSync(path, Buffer.alloc(100_000, 7)));
    assert.equal(saved.bytes, 100_000);
    const found = await store.find(key("1"));
    assert.equal(found.status, "found");
    if (found.status !== "found") return;
    assert.equal(await store.verify(found.snapshot), true);
    const bytes = readFileSync(found.snapshot.statePath);
    bytes[50_000] = 8;
    writeFileSync(found.snapshot.statePath, bytes);
    assert.equal(await store.verify(found.snapshot), false);
    assert.deepEqual(await store.find(key("2")), { status: "missing" });
  });

  test("a truncated state, a bad or missing meta.json are reported corrupt, and remove() clears them", async () => {
    const store = new BootSnapshotStore(join(root, "b"));
    const write = async (path: string): Promise<void> => writeFileSync(path, "state bytes");
    await store.save(key("3"), identity, write);
    truncateSync(join(store.dirOf(key("3")), "state"), 4);
    const truncated = await store.find(key("3"));
    assert.equal(truncated.status, "corrupt");
    assert.match(truncated.status === "corrupt" ? truncated.reason : "", /4 bytes, meta.json says 11/);

    await store.save(key("4"), identity, write);
    writeFileSync(join(store.dirOf(key("4")), "meta.json"), "{ not json");
    assert.equal((await store.find(key("4"))).status, "corrupt");

    await store.save(key("5"), identity, write);
    rmSync(join(store.dirOf(key("5")), "meta.json"));
    const noMeta = await store.find(key("5"));
    assert.match(noMeta.status === "corrupt" ? noMeta.reason : "", /meta.json is missing/);
    for (const k of ["3", "4", "5"]) await store.remove(key(k));
    assert.deepEqual(await store.list(), []);
  });

  test("a failed save leaves nothing under the final name", async () => {
    const store = new BootSnapshotStore(join(root, "c"));
    await assert.rejects(store.save(key("6"), identity, async () => Promise.reject(new Error("QEMU died"))), /QEMU died/);
    assert.deepEqual(await store.find(key("6")), { status: "missing" });
    await assert.rejects(store.save(key("6"), identity, async (path) => writeFileSync(path, "")), /empty state/);
    assert.deepEqual(await store.find(key("6")), { status: "missing" });
  });

  test(`saving keeps the ${BOOT_SNAPSHOTS_KEPT} most recently used snapshots`, async () => {
    const store = new BootSnapshotStore(join(root, "d"));
    const keys = ["a", "b", "c", "d", "e"].map(key);
    for (const [i, k] of keys.entries()) {
      await store.save(k, identity, async (path) => writeFileSync(path, k));
      // Distinct last-use times, oldest first.
      const t = new Date(Date.now() - (keys.length - i) * 60_000);
      utimesSync(store.dirOf(k), t, t);
    }
    await store.prune();
    const left = (await store.list()).map((e) => e.key);
    assert.deepEqual(left, keys.slice(1).reverse());
  });

  test("meta.json is parsed strictly", () => {
    const good = { format: 1, key: key("7"), bytes: 1, sha256: key("8"), savedAt: "2026-01-01T00:00:00Z", identity };
    assert.equal(parseBootSnapshotMeta(good).key, key("7"));
    assert.throws(() => parseBootSnapshotMeta({ ...good, extra: 1 }), /unknown key 'extra'/);
    assert.throws(() => parseBootSnapshotMeta({ ...good, format: 0 }), /format 0/);
    assert.throws(() => parseBootSnapshotMeta({ ...good, bytes: -1 }), /bytes/);
    assert.throws(() => parseBootSnapshotMeta([]), /not an object/);
  });
});
