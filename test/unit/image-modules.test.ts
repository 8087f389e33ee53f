import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  DEFAULT_GUEST_MODULES,
  guestModulesFor,
  moduleName,
  parseModulesBuiltin,
  parseModulesDep,
  resolveModules,
  type ModuleIndex,
} from "../../src/image/modules.js";
import { provisionedKernel } from "../../src/image/kernel.js";
import { isVmstackError } from "../../src/lib/errors.js";

// A small modules.dep in depmod's format: each line lists all transitive dependencies.
const DEP = `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/fuse/fuse.ko:
kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/fs/fuse/fuse.ko
kernel/drivers/hid/hid-generic.ko.zst:
`;

const index = (): ModuleIndex => ({
  modules: parseModulesDep(DEP),
  builtin: parseModulesBuiltin("kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n"),
});

const names = (wanted: string[]): string[] => resolveModules(index(), wanted).map((m) => m.name);

void test("moduleName drops the directory and .ko/.ko.xz/.ko.zst and treats '-' as '_'", () => {
  assert.equal(moduleName("kernel/drivers/net/virtio_net.ko.xz"), "virtio_net");
  assert.equal(moduleName("kernel/drivers/hid/hid-generic.ko.zst"), "hid_generic");
  assert.equal(moduleName("virtio-pci"), "virtio_pci");
});

void test("a module with no dependencies resolves to itself", () => {
  assert.deepEqual(names(["fuse"]), ["fuse"]);
});

void test("the closure puts every dependency before the module that needs it", () => {
  assert.deepEqual(names(["virtio_pci"]), ["virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci"]);
});

void test("a dependency shared by several requested modules is loaded once", () => {
  const order = names(["virtio_console", "virtio_net", "virtiofs"]);
  assert.deepEqual(order, ["virtio_ring", "virtio", "virtio_console", "failover", "net_failover", "virtio_net", "fuse", "virtiofs"]);
  assert.equal(new Set(order).size, order.length);
});

void test("a module asked for twice, or also pulled in as a dependency, appears once", () => {
  assert.deepEqual(names(["virtio", "virtio_console", "virtio"]), ["virtio_ring", "virtio", "virtio_console"]);
});

void test("names with '-' find modules spelled with '_' and keep the file's path", () => {
  const [m] = resolveModules(index(), ["hid_generic"]);
  assert.equal(m?.path, "kernel/drivers/hid/hid-generic.ko.zst");
});

void test("a built-in module needs no loading and is not an error", () => {
  assert.deepEqual(names(["ext4", "fuse"]), ["fuse"]);
});

void test("an unknown module is an error that names it", () => {
  assert.throws(
    () => resolveModules(index(), ["fuse", "vsock"], "6.1.0-test"),
    (e) => isVmstackError(e, "MODULE_UNKNOWN") && /'vsock'/.test(e.message) && /6\.1\.0-test/.test(e.message),
  );
});

void test("an unknown dependency is an error naming the module that needs it", () => {
  const idx = { modules: parseModulesDep("a.ko: b.ko\n"), builtin: new Set<string>() };
  assert.throws(() => resolveModules(idx, ["a"]), (e) => isVmstackError(e, "MODULE_UNKNOWN") && /'b' \(needed by 'a'\)/.test(e.message));
});

void test("a dependency cycle is reported instead of recursing forever", () => {
  const idx = { modules: parseModulesDep("a.ko: b.ko\nb.ko: a.ko\n"), builtin: new Set<string>() };
  assert.throws(() => resolveModules(idx, ["a"]), (e) => isVmstackError(e, "MODULE_CYCLE") && /a -> b -> a/.test(e.message));
});

void test("a malformed modules.dep line is reported with its line number", () => {
  assert.throws(() => parseModulesDep("a.ko:\nnot a module line\n", "x/modules.dep"), (e) => isVmstackError(e, "MODULES_DEP_INVALID") && /x\/modules\.dep:2/.test(e.message));
});

void test("the default guest modules resolve on the provisioned cloud kernel", async (t) => {
  const kernel = await provisionedKernel(process.env);
  const dir = kernel?.modulesDir;
  if (dir === undefined || !existsSync(join(dir, "modules.dep"))) {
    t.skip("no provisioned kernel (run 'vmstack kernel fetch')");
    return;
  }
  const idx = {
    modules: parseModulesDep(readFileSync(join(dir, "modules.dep"), "utf8")),
    builtin: parseModulesBuiltin(readFileSync(join(dir, "modules.builtin"), "utf8")),
  };
  const order = resolveModules(idx, DEFAULT_GUEST_MODULES).map((m) => m.name);
  for (const wanted of DEFAULT_GUEST_MODULES) assert.ok(order.includes(wanted), `${wanted} is in the closure`);
  for (const dep of ["virtio", "virtio_ring", "fuse", "failover", "net_failover"]) assert.ok(order.includes(dep), `${dep} is in the closure`);
  assert.ok(order.indexOf("virtio_ring") < order.indexOf("virtio"));
  assert.ok(order.indexOf("fuse") < order.indexOf("virtiofs"));
  assert.deepEqual(resolveModules(idx, ["ext4"]), [], "ext4 is built into the cloud kernel");
});

void test("guestModulesFor picks the transport's driver and only the devices the VM has", () => {
  assert.deepEqual(guestModulesFor({ transport: "mmio" }), ["virtio_mmio", "virtio_console"]);
  assert.deepEqual(guestModulesFor({ transport: "pci", block: true, net: true, virtiofs: true }), [
    "virtio_pci", "virtio_console", "virtio_blk", "virtio_net", "virtiofs",
  ]);
  assert.deepEqual(guestModulesFor({ transport: "pci", console: false }), ["virtio_pci"]);
  for (const m of guestModulesFor({ transport: "mmio", block: true, net: true, virtiofs: true })) {
    assert.ok(DEFAULT_GUEST_MODULES.includes(m), `${m} is also in the default list`);
  }
});
