/**
 * Which drivers vmstack's default guest carries for a domain's SCSI and IDE drives, and which
 * drives it cannot see (the VM side is test/vm/hotplug.test.ts, which reads a disc in the guest).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadDomainText } from "../../src/domain/index.js";
import { driveModules, unseenDrives } from "../../src/vmm/manager-guest.js";

const config = (machine: string, disks: unknown[]) =>
  loadDomainText("{}", "<test>", { format: "json", overrides: ["name=d", `machine=${machine}`, "boot.kernel=/vmstack-default-guest", `disks=${JSON.stringify(disks)}`] }).config;

void test("the default guest gets the drivers of the domain's SCSI drives, and of IDE drives on pc", () => {
  assert.deepEqual(driveModules(config("q35", [])), [], "no drive: no extra module (each costs boot time)");
  assert.deepEqual(driveModules(config("q35", [{ path: "/x.raw" }])), [], "virtio disks need nothing more");
  assert.deepEqual(driveModules(config("q35", [{ media: "cdrom", interface: "scsi" }])), ["virtio_scsi", "sr_mod"]);
  assert.deepEqual(driveModules(config("q35", [{ path: "/x.raw", interface: "scsi" }])), ["virtio_scsi", "sd_mod"]);
  assert.deepEqual(driveModules(config("pc", [{ media: "cdrom", interface: "ide" }, { path: "/x.raw", interface: "ide" }])), ["ata_piix", "sd_mod", "sr_mod"]);
  assert.deepEqual(driveModules(config("q35", [{ media: "cdrom", interface: "ide" }])), [], "q35's AHCI has no driver in the cloud kernel");
});

void test("IDE drives on q35 are reported as unseen by the default guest; others are not", () => {
  const w = unseenDrives(config("q35", [{ media: "cdrom", interface: "ide", vdev: "hdc" }, { media: "cdrom", interface: "scsi" }]));
  assert.equal(w.length, 1);
  assert.match(w[0]!, /^hdc: vmstack's default guest has no driver for q35's IDE \(AHCI\) controller, so it will not see this cdrom; use interface "scsi"/);
  assert.deepEqual(unseenDrives(config("pc", [{ media: "cdrom", interface: "ide" }])), []);
});
