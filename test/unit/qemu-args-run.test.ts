import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { buildQemuArgs } from "../../src/vmm/qemu-args.js";
import { kernelCommandLine } from "../../src/vmm/guest-vm.js";

const golden = (name: string): string =>
  readFileSync(fileURLToPath(new URL(`../../../test/golden/argv/${name}`, import.meta.url)), "utf8");

test("the throwaway VM's command line matches its golden file", () => {
  const argv = buildQemuArgs({
    machine: "microvm",
    accel: "tcg",
    memoryMiB: 256,
    cpus: 2,
    kernel: "/k/vmlinux",
    initrd: "/k/initrd.cpio",
    append: kernelCommandLine("microvm", "tcg", 2445432),
    serial: { kind: "stdio" },
    channels: [{ name: "org.vmstack.agent", socketPath: "/run/x/agent.sock" }],
    noReboot: true,
  });
  assert.equal(argv.join("\n") + "\n", golden("throwaway-microvm-tcg.args"));
});

test("tsc_early_khz is passed only to microvm guests under TCG", () => {
  assert.match(kernelCommandLine("microvm", "tcg", 2445432), /tsc_early_khz=2445432/);
  assert.doesNotMatch(kernelCommandLine("microvm", "kvm", 2445432), /tsc_early_khz/);
  assert.doesNotMatch(kernelCommandLine("q35", "tcg", 2445432), /tsc_early_khz/);
});

test("KVM guests get the host CPU model and TCG guests the default one", () => {
  const base = { machine: "q35", memoryMiB: 128, cpus: 1, serial: { kind: "none" }, channels: [] } as const;
  assert.deepEqual(buildQemuArgs({ ...base, accel: "kvm" }).slice(6, 10), ["-accel", "kvm", "-cpu", "host"]);
  assert.ok(!buildQemuArgs({ ...base, accel: "tcg" }).includes("-cpu"));
});
