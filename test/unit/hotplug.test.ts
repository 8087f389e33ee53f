/**
 * Hotplug without booting: the pure QMP command builders, Xen's device numbers, command-line spec
 * errors, and vmstackd running block/network attach-detach, cd-insert/eject, mem-set and vcpu-set
 * against a fake QEMU that records every QMP command and answers as QEMU 7.2 does (DEVICE_DELETED
 * after device_del, qom-get parent_bus, query-balloon without a balloon, query-hotpluggable-cpus).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { compileDomain, parseDomainSpec, diskFragment, nicFragment, parseMemSize, errorsOf, formatProblem } from "../../src/domain/index.js";
import { blockAttachSteps, cpuSlots, freePciSlot, freePort, hotplugBusPath, networkAttachSteps, vcpuSetSteps, type HotpluggableCpu } from "../../src/vmm/hotplug.js";
import { nicDevid, vdevNumber, vdevOf } from "../../src/vmm/device-xenstore.js";
import { countCpuList } from "../../src/vmm/manager-hotplug.js";
import { vmstackdRequest } from "../../src/vmm/api/client.js";
import { parseRequest, type DomainInfo, type Request } from "../../src/vmm/api/protocol.js";
import type { BlockInfo, NicInfo } from "../../src/vmm/api/protocol-hotplug.js";
import { connectXenstore } from "../../src/xenstore/client.js";
import { isVmstackError } from "../../src/lib/errors.js";
import { writeFakeQemu, type FakeQemuParts } from "../support/fake-qemu.js";

const config = (extra: Record<string, unknown> = {}): ReturnType<typeof parseDomainSpec>["config"] =>
  parseDomainSpec({ name: "g", boot: { kernel: "/k" }, nics: [], ...extra }).config;

test("Xen device numbers follow vbd-interface.txt for xvd, hd, sd and the extended xvd form", () => {
  assert.equal(vdevNumber("xvda"), 51712);
  assert.equal(vdevNumber("xvdb"), 51728);
  assert.equal(vdevNumber("xvda1"), 51713);
  assert.equal(vdevNumber("hda"), 768);
  assert.equal(vdevNumber("hdc"), 5632);
  assert.equal(vdevNumber("sdb"), 2064);
  assert.equal(vdevNumber("xvdq"), (1 << 28) | (16 << 8));
  assert.throws(() => vdevNumber("hdz"), /no Xen device number/);
  assert.throws(() => vdevNumber("nvme0"), /not a virtual device name/);
});

test("disks without a vdev get the first xvd names their siblings leave free", () => {
  const c = config({ disks: [{ path: "/a" }, { path: "/b", vdev: "xvda" }, { path: "/c" }] });
  assert.deepEqual([0, 1, 2].map((i) => vdevOf(c.disks, i)), ["xvdb", "xvda", "xvdc"]);
  const n = config({ nics: [{ type: "user" }, { type: "user", id: "uplink" }] });
  assert.deepEqual([0, 1].map((i) => nicDevid(n.nics, i)), [0, 1]);
});

test("a disk attaches as two blockdev nodes and a virtio device, on a hotplug port on q35 and the root bus on pc", () => {
  const d = config({ disks: [{ path: "/img/x.qcow2", format: "qcow2", id: "disk3", readOnly: true, pciSlot: "hotplug2" }] }).disks[0];
  assert.ok(d);
  const q35 = blockAttachSteps("q35", d);
  assert.deepEqual(q35, [
    { execute: "blockdev-add", arguments: { driver: "file", filename: "/img/x.qcow2", "node-name": "disk3.file", "read-only": true } },
    { execute: "blockdev-add", arguments: { driver: "qcow2", file: "disk3.file", "node-name": "disk3.fmt", "read-only": true } },
    { execute: "device_add", arguments: { driver: "virtio-blk-pci", drive: "disk3.fmt", id: "disk3", "num-queues": 1, bus: "hotplug2" } },
  ]);
  // One queue per possible vCPU, as at boot (a restore after vcpu-set must find the same count).
  assert.deepEqual(blockAttachSteps("pc", { ...d, pciSlot: "pci.0/0x1f" }, 4)[2], {
    execute: "device_add", arguments: { driver: "virtio-blk-pci", drive: "disk3.fmt", id: "disk3", "num-queues": 4, bus: "pci.0", addr: "0x1f" },
  });
  const ide = config({ disks: [{ path: "/x", interface: "ide" }] }).disks[0];
  assert.ok(ide);
  assert.throws(() => blockAttachSteps("pc", ide), /cannot be attached while running/);
});

test("a NIC attaches as netdev_add then device_add; a private network joins its multicast group", () => {
  const [user, priv] = config({ nics: [{ type: "user", mac: "52:54:00:00:00:01" }, { type: "private", network: "lan", id: "lan0" }] }).nics;
  assert.ok(user && priv);
  assert.deepEqual(networkAttachSteps("pc", user), [
    { execute: "netdev_add", arguments: { type: "user", id: "net0.backend" } },
    { execute: "device_add", arguments: { driver: "virtio-net-pci", netdev: "net0.backend", mac: "52:54:00:00:00:01", id: "net0", romfile: "" } },
  ]);
  const steps = networkAttachSteps("q35", { ...priv, pciSlot: "hotplug0" });
  assert.equal(steps[0]?.arguments?.["type"], "socket");
  assert.match(String(steps[0]?.arguments?.["mcast"]), /^239\.255\.\d+\.\d+:\d+$/);
  assert.equal(steps[1]?.arguments?.["bus"], "hotplug0");
});

test("the first free hotplug port is chosen on q35, the highest free slot on pc; none free is a clear error", () => {
  assert.equal(freePort(4, new Set([hotplugBusPath(0), hotplugBusPath(1)]), "g"), "hotplug2");
  assert.equal(freePciSlot(new Set([0, 1, 2, 3, 0x1f]), "g"), "pci.0/0x1e");
  assert.throws(() => freePort(2, new Set([hotplugBusPath(0), hotplugBusPath(1)]), "g"), /all 2 PCIe hotplug ports are in use/);
  assert.throws(() => freePort(0, new Set(), "g"), /hotplugSlots=0/);
});

test("devices attached at run time come back at the same PCI place at the next start (and in a restore)", () => {
  const c = config({
    machine: "q35", memory: 256, balloonSlot: "hotplug3",
    disks: [{ path: "/img/a.raw", vdev: "xvdb", pciSlot: "hotplug0" }], nics: [{ type: "user", pciSlot: "hotplug1" }],
  });
  const argv = compileDomain(c, { runDir: "/run/g" }).argv;
  assert.ok(argv.includes("virtio-blk-pci,drive=disk0.fmt,id=disk0,bus=hotplug0,num-queues=1"), argv.join(" "));
  assert.ok(argv.some((a) => a.startsWith("virtio-net-pci,") && a.endsWith(",romfile=,bus=hotplug1")), argv.join(" "));
  assert.ok(argv.includes("virtio-balloon-pci,id=balloon0,bus=hotplug3"), "a balloon added by mem-set stays even at memory = maxmem");
  const pc = compileDomain(config({ machine: "pc", disks: [{ path: "/img/a.raw", pciSlot: "pci.0/0x1f" }] }), { runDir: "/run/g" }).argv;
  assert.ok(pc.includes("virtio-blk-pci,drive=disk0.fmt,id=disk0,bus=pci.0,addr=0x1f,num-queues=1"), pc.join(" "));
  const grown = compileDomain(config({ vcpus: 2, maxvcpus: 4, disks: [{ path: "/img/a.raw" }] }), { runDir: "/run/g" }).argv;
  assert.ok(grown.includes("virtio-blk-pci,drive=disk0.fmt,id=disk0,num-queues=4"), "queues follow maxvcpus, not the vCPUs online");
  assert.throws(() => config({ disks: [{ path: "/x", pciSlot: "pci.0/31" }] }), /pciSlot/);
});

test("vcpu-set plugs the lowest empty CPU slots and never unplugs", () => {
  const slot = (core: number, plugged: boolean): HotpluggableCpu => ({
    type: "qemu64-x86_64-cpu", "vcpus-count": 1, props: { "socket-id": 0, "core-id": core, "thread-id": 0 }, ...(plugged ? { "qom-path": `/machine/x/${core}` } : {}),
  });
  // QEMU lists the slots highest first.
  const list = [slot(3, false), slot(2, false), slot(1, true), slot(0, true)];
  assert.deepEqual(cpuSlots(list).map((c) => c.props["core-id"]), [0, 1, 2, 3]);
  assert.deepEqual(vcpuSetSteps(list, 3), [{ execute: "device_add", arguments: { driver: "qemu64-x86_64-cpu", id: "vcpu-0-2-0", "socket-id": 0, "core-id": 2, "thread-id": 0 } }]);
  assert.deepEqual(vcpuSetSteps(list, 1), []);
  assert.equal(countCpuList("0-2,4\n"), 4);
  assert.equal(countCpuList("0\n"), 1);
});

test("command-line disk and vif specs give file:line:col errors naming the argument", () => {
  const bad = diskFragment("/img/x.raw,rawx,xvdb,rw", "DISKSPEC (argument 2)");
  assert.equal(bad.value, undefined);
  assert.deepEqual(errorsOf(bad.problems).map(formatProblem), ["DISKSPEC (argument 2):1:12: error: format 'rawx' is not one of raw, qcow, qcow2, vhd, qed (did you mean 'raw'?)"]);
  assert.match(errorsOf(diskFragment("/x,raw,,rw", "DISKSPEC (argument 2)").problems).map(formatProblem).join(), /DISKSPEC \(argument 2\):1:1: error: the disk has no vdev/);
  assert.deepEqual(diskFragment("format=qcow2,vdev=xvdc,target=/img/a,b.qcow2", "D").value, { path: "/img/a,b.qcow2", format: "qcow2", interface: "virtio", media: "disk", readOnly: false, vdev: "xvdc" });
  assert.deepEqual(nicFragment("", "V").value, { type: "user" });
  assert.deepEqual(nicFragment("bridge=lan0,model=e1000", "V").value, { type: "private", network: "lan0", model: "e1000" });
  assert.match(errorsOf(nicFragment("mac=zz", "VIFSPEC (argument 2)").problems).map(formatProblem).join(), /^VIFSPEC \(argument 2\):1:5: error: mac 'zz' is not a MAC address/);
});

test("mem-set sizes use xl's units, with KiB when there is none", () => {
  assert.equal(parseMemSize("256m", "MEM").mib, 256);
  assert.equal(parseMemSize("262144", "MEM").mib, 256);
  assert.equal(parseMemSize("1G", "MEM").mib, 1024);
  assert.equal(parseMemSize("268435456b", "MEM").mib, 256);
  assert.match(errorsOf(parseMemSize("12x", "MEM (argument 2)").problems).map(formatProblem).join(), /^MEM \(argument 2\):1:1: error: '12x' is not a memory size/);
  assert.match(errorsOf(parseMemSize("8m", "MEM").problems).map(formatProblem).join(), /at least 16 MiB/);
});

test("hotplug requests are parsed strictly", () => {
  assert.deepEqual(parseRequest({ op: "mem-set", domain: "g", memoryMiB: 256 }), { op: "mem-set", domain: "g", memoryMiB: 256 });
  assert.throws(() => parseRequest({ op: "mem-set", domain: "g", memoryMiB: -1 }), /memoryMiB/);
  assert.throws(() => parseRequest({ op: "block-attach", domain: "g", disk: "x" }), /disk spec object/);
  assert.throws(() => parseRequest({ op: "block-list", domain: "g", extra: 1 }), /unknown key 'extra'/);
});

// ---- vmstackd against a fake QEMU ----

const FAKE_QEMU: FakeQemuParts = {
  logCommands: true,
  prelude: `
const smp = (args[args.indexOf("-smp") + 1] || "1").match(/(?:cpus=)?(\\d+)(?:,maxcpus=(\\d+))?/);
const cpus = Number(smp[1]), maxcpus = Number(smp[2] || smp[1]);
const plugged = new Set(Array.from({ length: cpus }, (_, i) => i));
const buses = new Map();
let balloon = args.some((a) => a.startsWith("virtio-balloon"));`,
  qmp: `
switch (m.execute) {
  case "query-status": reply({ status: "running", running: true }); break;
  case "quit": reply({}); setTimeout(() => process.exit(0), 5); break;
  case "device_add":
    if (a.driver === "virtio-balloon-pci") balloon = true;
    if (String(a.driver).endsWith("-cpu")) plugged.add(a["core-id"]);
    buses.set(a.id, a.bus ? "/machine/peripheral/" + a.bus + "/" + a.bus : "/machine/i440fx/pci.0");
    reply({}); break;
  case "device_del": reply({}); buses.delete(a.id); setTimeout(() => event("DEVICE_DELETED", { device: a.id, path: "/machine/peripheral/" + a.id }), 20); break;
  case "qom-get": {
    const id = a.path.split("/").pop();
    if (buses.has(id)) reply(buses.get(id)); else fail("DeviceNotFound", "Device '" + a.path + "' not found");
    break;
  }
  case "query-pci": reply([{ bus: 0, devices: [0, 1, 2, 3, 4].map((slot) => ({ slot })) }]); break;
  case "query-balloon": if (balloon) reply({ actual: 1 }); else fail("DeviceNotActive", "No balloon device has been activated"); break;
  case "query-hotpluggable-cpus":
    reply(Array.from({ length: maxcpus }, (_, k) => maxcpus - 1 - k).map((k) => ({ type: "qemu64-x86_64-cpu", "vcpus-count": 1, props: { "socket-id": 0, "core-id": k, "thread-id": 0 }, ...(plugged.has(k) ? { "qom-path": "/machine/cpu" + k } : {}) })));
    break;
  case "blockdev-add": if (String(a.filename).includes("missing")) fail("GenericError", "Could not open '" + a.filename + "': No such file or directory"); else reply({}); break;
  default: reply({});
}`,
};

const VMSTACKD_ENV = (dir: string, fake: string): NodeJS.ProcessEnv => ({ ...process.env, VMSTACK_STATE_DIR: join(dir, "s"), VMSTACK_RUN_DIR: join(dir, "r"), VMSTACK_QEMU: fake, VMSTACK_LOG: "" });

interface Env {
  readonly dir: string;
  req(r: Request): Promise<unknown>;
  /** The QMP commands the fake QEMU of a domain has received since the last call. */
  qmp(domid: number): Array<{ execute: string; arguments?: Record<string, unknown> }>;
}

async function withDaemon(fn: (e: Env) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-hp-"));
  const fake = writeFakeQemu(dir, FAKE_QEMU);
  const env = VMSTACKD_ENV(dir, fake);
  const seen = new Map<number, number>();
  const e: Env = {
    dir,
    req: (r) => vmstackdRequest(r, { env }),
    qmp: (domid) => {
      const log = join(dir, "r", "d", String(domid), "qmp.sock.log");
      const lines = existsSync(log) ? readFileSync(log, "utf8").split("\n").filter(Boolean) : [];
      const from = seen.get(domid) ?? 0;
      seen.set(domid, lines.length);
      return lines.slice(from).map((l) => JSON.parse(l) as { execute: string; arguments?: Record<string, unknown> });
    },
  };
  try {
    await fn(e);
  } finally {
    try {
      const rows = (await e.req({ op: "list", domains: [] })) as DomainInfo[];
      for (const d of rows) if (d.domid !== 0) await e.req({ op: "destroy", domain: String(d.domid) });
      process.kill(Number(readFileSync(join(dir, "r", "vmstackd.pid"), "utf8")), "SIGTERM");
    } catch (err) {
      if (!isVmstackError(err) && (err as NodeJS.ErrnoException).code !== "ESRCH" && (err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  }
}

const spec = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  name, memory: 64, machine: "q35", accel: "tcg", boot: { kernel: "/nonexistent/vmlinuz" }, nics: [], agent: false, ...extra,
});

test("vmstackd attaches and detaches a disk with QEMU's command sequence, and xenstore, block-list and the record follow", async () => {
  await withDaemon(async (e) => {
    const info = (await e.req({ op: "create", config: spec("hp"), paused: false, force: false })) as DomainInfo;
    const id = info.domid;
    e.qmp(id);
    const added = (await e.req({ op: "block-attach", domain: "hp", disk: { path: "/img/data.raw", format: "raw", vdev: "xvdb", interface: "virtio", media: "disk", readOnly: false } })) as BlockInfo;
    assert.equal(added.devid, 51728);
    const sent = e.qmp(id);
    // Ports are looked up (qom-get parent_bus) before the device goes on the first free one.
    assert.deepEqual(sent.filter((c) => c.execute !== "qom-get"), [
      { execute: "blockdev-add", arguments: { driver: "file", filename: "/img/data.raw", "node-name": "disk0.file" } },
      { execute: "blockdev-add", arguments: { driver: "raw", file: "disk0.file", "node-name": "disk0.fmt" } },
      { execute: "device_add", arguments: { driver: "virtio-blk-pci", drive: "disk0.fmt", id: "disk0", "num-queues": 1, bus: "hotplug0" } },
    ]);
    // A second disk takes the next port.
    await e.req({ op: "block-attach", domain: "hp", disk: { path: "/img/two.raw", vdev: "xvdc" } });
    assert.equal(e.qmp(id).find((c) => c.execute === "device_add")?.arguments?.["bus"], "hotplug1");
    await assert.rejects(e.req({ op: "block-attach", domain: "hp", disk: { path: "/img/3.raw", vdev: "xvdb" } }), /already has a disk xvdb/);
    await assert.rejects(e.req({ op: "block-attach", domain: "hp", disk: { path: "/img/missing.raw", vdev: "xvdd" } }), /Could not open/);
    assert.deepEqual(e.qmp(id).filter((c) => c.execute === "blockdev-del"), [], "a failed first blockdev-add leaves nothing to undo");

    const xs = await connectXenstore({ socket: join(e.dir, "r", "xenstored", "socket"), reconnect: false });
    try {
      assert.equal(await xs.read(`/local/domain/0/backend/vbd/${id}/51728/params`), "/img/data.raw");
      assert.equal(await xs.read(`/local/domain/0/backend/vbd/${id}/51728/dev`), "xvdb");
      assert.equal(await xs.read(`/local/domain/${id}/device/vbd/51728/state`), "4");
      assert.equal(await xs.read(`/local/domain/${id}/device/vbd/51728/backend`), `/local/domain/0/backend/vbd/${id}/51728`);
      await e.req({ op: "block-detach", domain: "hp", device: "xvdb" });
      assert.deepEqual(e.qmp(id), [
        { execute: "device_del", arguments: { id: "disk0" } },
        { execute: "blockdev-del", arguments: { "node-name": "disk0.fmt" } },
        { execute: "blockdev-del", arguments: { "node-name": "disk0.file" } },
      ]);
      assert.equal(await xs.tryRead(`/local/domain/0/backend/vbd/${id}/51728/params`), undefined);
      assert.equal(await xs.read(`/local/domain/0/backend/vbd/${id}/51744/dev`), "xvdc");
    } finally {
      await xs.close();
    }
    assert.deepEqual(((await e.req({ op: "block-list", domain: "hp" })) as BlockInfo[]).map((b) => b.vdev), ["xvdc"]);
    const record = JSON.parse(readFileSync(join(e.dir, "s", "domains", `${id}.json`), "utf8")) as { config: { disks: Array<{ path: string; pciSlot: string }> } };
    assert.deepEqual(record.config.disks.map((d) => [d.path, d.pciSlot]), [["/img/two.raw", "hotplug1"]]);
    await assert.rejects(e.req({ op: "block-detach", domain: "hp", device: "xvdq" }), /has no disk 'xvdq'/);
  });
});

test("vmstackd attaches and detaches NICs, sets the balloon (adding the device first) and plugs vCPUs", async () => {
  await withDaemon(async (e) => {
    const info = (await e.req({ op: "create", config: spec("net", { machine: "pc", maxvcpus: 3 }), paused: false, force: false })) as DomainInfo;
    const id = info.domid;
    e.qmp(id);
    const nic = (await e.req({ op: "network-attach", domain: "net", nic: { type: "private", network: "lan", mac: "52:54:00:aa:bb:cc" } })) as NicInfo;
    assert.deepEqual([nic.devid, nic.mac, nic.network], [0, "52:54:00:aa:bb:cc", "lan"]);
    const sent = e.qmp(id);
    assert.deepEqual(sent.map((c) => c.execute), ["query-pci", "netdev_add", "device_add"]);
    assert.deepEqual(sent.find((c) => c.execute === "device_add"), {
      execute: "device_add", arguments: { driver: "virtio-net-pci", netdev: "net0.backend", mac: "52:54:00:aa:bb:cc", id: "net0", romfile: "", bus: "pci.0", addr: "0x1f" },
    });
    await assert.rejects(e.req({ op: "network-attach", domain: "net", nic: { type: "user", mac: "52:54:00:AA:BB:CC" } }), /already has a NIC with MAC/);
    await e.req({ op: "network-detach", domain: "net", device: "52:54:00:aa:bb:cc" });
    assert.deepEqual(e.qmp(id).map((c) => c.execute), ["device_del", "netdev_del"]);
    assert.deepEqual(await e.req({ op: "network-list", domain: "net" }), []);

    await e.req({ op: "mem-set", domain: "net", memoryMiB: 48 });
    assert.deepEqual(e.qmp(id), [
      { execute: "query-balloon" },
      { execute: "query-pci" },
      { execute: "device_add", arguments: { driver: "virtio-balloon-pci", id: "balloon0", bus: "pci.0", addr: "0x1f" } },
      { execute: "balloon", arguments: { value: 48 * 1024 * 1024 } },
    ]);
    await assert.rejects(e.req({ op: "mem-set", domain: "net", memoryMiB: 65 }), /above net's maxmem 64 MiB/);
    const row = ((await e.req({ op: "list", domains: ["net"] })) as DomainInfo[])[0];
    assert.equal(row?.memoryMiB, 48);

    await e.req({ op: "vcpu-set", domain: "net", vcpus: 3 });
    assert.deepEqual(e.qmp(id).filter((c) => c.execute === "device_add").map((c) => c.arguments?.["id"]), ["vcpu-0-1-0", "vcpu-0-2-0"]);
    await assert.rejects(e.req({ op: "vcpu-set", domain: "net", vcpus: 4 }), /more than net's maxvcpus 3/);
    const xs = await connectXenstore({ socket: join(e.dir, "r", "xenstored", "socket"), reconnect: false });
    try {
      assert.equal(await xs.read(`/local/domain/${id}/memory/target`), String(48 * 1024));
      assert.equal(await xs.read(`/local/domain/${id}/cpu/2/availability`), "online");
      await e.req({ op: "vcpu-set", domain: "net", vcpus: 1 });
      assert.equal(await xs.read(`/local/domain/${id}/cpu/1/availability`), "offline");
    } finally {
      await xs.close();
    }
  });
});

test("a microvm domain refuses hotplug with a clear error and changes nothing", async () => {
  await withDaemon(async (e) => {
    await e.req({ op: "create", config: spec("tiny", { machine: "microvm" }), paused: false, force: false });
    await assert.rejects(e.req({ op: "block-attach", domain: "tiny", disk: { path: "/img/x.raw", vdev: "xvdb" } }), /microvm, which cannot attach a disk while running.*machine=q35/);
    await assert.rejects(e.req({ op: "vcpu-set", domain: "tiny", vcpus: 1 }), /microvm, which has no CPU hotplug/);
    assert.deepEqual(await e.req({ op: "block-list", domain: "tiny" }), []);
  });
});
