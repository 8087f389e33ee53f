/** buildQemuArgs' device helpers: option escaping, bus placement, forwards, actions, and what stays unchanged for `vmstack run`. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildQemuArgs, guestForwardRelay, type MachineConfig, opt, virtioDevice } from "../../src/vmm/qemu-args.js";

const base: MachineConfig = { machine: "q35", accel: "tcg", memoryMiB: 256, cpus: 1, serial: { kind: "none" }, channels: [] };

test("a comma inside an option value is doubled, as QEMU's option syntax requires", () => {
  assert.equal(opt("/a,b,,c"), "/a,,b,,,,c");
  const args = buildQemuArgs({ ...base, drives: [{ id: "d", path: "/x,y.img", format: "raw", bus: "virtio", media: "disk", readOnly: false, cache: "writeback", discard: false }] });
  assert.ok(args.includes("driver=file,filename=/x,,y.img,node-name=d.file"));
});

test("virtio devices are -device on microvm and -pci elsewhere", () => {
  assert.equal(virtioDevice("microvm", "blk"), "virtio-blk-device");
  assert.equal(virtioDevice("q35", "scsi"), "virtio-scsi-pci");
});

test("IDE devices take master/slave slots on pc and one AHCI port each on q35", () => {
  const drive = (id: string) => ({ id, path: `/${id}`, format: "raw" as const, bus: "ide" as const, media: "disk" as const, readOnly: false, cache: "writeback" as const, discard: false });
  const devices = (m: MachineConfig["machine"]) => buildQemuArgs({ ...base, machine: m, drives: ["a", "b", "c"].map(drive) }).filter((a) => a.startsWith("ide-hd"));
  assert.deepEqual(devices("pc").map((d) => /bus=[^,]+(,unit=\d)?/.exec(d)?.[0]), ["bus=ide.0,unit=0", "bus=ide.0,unit=1", "bus=ide.1,unit=0"]);
  assert.deepEqual(devices("q35").map((d) => /bus=[^,]+/.exec(d)?.[0]), ["bus=ide.0", "bus=ide.1", "bus=ide.2"]);
});

test("a guest-to-host forward relays each connection and refuses anything but an IPv4 address and a port", () => {
  assert.equal(guestForwardRelay("127.0.0.1", 8080), "socat - TCP:127.0.0.1:8080");
  assert.throws(() => guestForwardRelay("127.0.0.1; rm -rf /", 1));
  assert.throws(() => guestForwardRelay("localhost", 80));
});

test("a virtiofs share switches guest RAM to a shared memfd backend of the same size", () => {
  const args = buildQemuArgs({ ...base, filesystems: [{ id: "fs0", tag: "t", socketPath: "/s" }] });
  assert.equal(args[args.indexOf("-machine") + 1], "q35,memory-backend=mem");
  assert.ok(args.includes("memory-backend-memfd,id=mem,size=256M,share=on"));
});

test("-action collects reboot, shutdown and panic behaviour; pvpanic is only added off microvm", () => {
  const args = buildQemuArgs({ ...base, onReboot: "shutdown", onShutdown: "pause", onPanic: "pause" });
  assert.equal(args[args.indexOf("-action") + 1], "reboot=shutdown,shutdown=pause,panic=pause");
  assert.ok(args.includes("pvpanic,id=pvpanic0"));
  assert.ok(!buildQemuArgs({ ...base, machine: "microvm", onPanic: "pause" }).includes("pvpanic,id=pvpanic0"));
});

test("a machine without domain devices gets exactly the run-style command line", () => {
  assert.deepEqual(buildQemuArgs(base), ["-nodefaults", "-no-user-config", "-display", "none", "-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1", "-serial", "none"]);
});
