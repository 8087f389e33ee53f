import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildInitrd } from "../../src/image/initrd.js";
import { provisionedKernel } from "../../src/image/kernel.js";
import { DEFAULT_GUEST_MODULES } from "../../src/image/modules.js";

// A real boot of the provisioned cloud kernel under TCG with an initrd from buildInitrd: the
// modules the builder chose load in its order and the virtio-serial port the agent needs appears.
const INIT = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
n=0
while read -r ko; do
  /bin/busybox insmod "$ko" || echo "INSMOD-FAILED $ko"
  n=$((n + 1))
done < /lib/modules/load-order
echo "LOADED $n PORTS $(/bin/busybox ls /sys/class/virtio-ports | /bin/busybox wc -l) UID $(/bin/busybox id -u)"
/bin/busybox poweroff -f
`;

const BUSYBOX = "/bin/busybox";
const QEMU = "qemu-system-x86_64";

function run(argv: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], signal: AbortSignal.timeout(timeoutMs) });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    child.on("error", (e) => reject(new Error(`${argv[0]} failed: ${e.message}\n${out.slice(-2000)}`)));
    child.on("close", (code) => resolve({ code, out }));
  });
}

void test("the cloud kernel boots an initrd from buildInitrd and loads every module in load-order", async (t) => {
  const kernel = await provisionedKernel(process.env);
  if (kernel === undefined) {
    t.skip("no provisioned kernel (run 'vmstack kernel fetch')");
    return;
  }
  if (!(process.env["PATH"] ?? "").split(":").some((d) => d !== "" && existsSync(join(d, QEMU)))) {
    t.skip(`${QEMU} is not installed (apt-get install qemu-system-x86)`);
    return;
  }
  if (!existsSync(BUSYBOX)) {
    t.skip("static busybox is not installed (apt-get install busybox-static)");
    return;
  }
  const cacheDir = mkdtempSync(join(tmpdir(), "vmstack-initrd-boot-"));
  t.after(() => rmSync(cacheDir, { recursive: true, force: true }));
  const initrd = await buildInitrd({
    kernel,
    files: [
      { path: "/bin/busybox", source: BUSYBOX },
      { path: "/init", bytes: INIT },
    ],
    env: { VMSTACK_CACHE: cacheDir },
  });
  // pc + PVH vmlinux: close to microvm's boot time (docs/qemu-notes.md §2) without microvm's need
  // for a host-specific tsc_early_khz. virtio-serial-pci needs virtio_pci from the initrd.
  const r = await run(
    [
      QEMU, "-M", "pc", "-smp", "1", "-m", "128", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      "-serial", "stdio", "-kernel", kernel.kernelPath, "-initrd", initrd.path,
      "-append", "console=ttyS0 quiet panic=-1 no_timer_check cryptomgr.notests rdinit=/init",
      "-device", "virtio-serial-pci", "-device", "virtserialport,name=org.vmstack.test",
    ],
    120_000,
  );
  assert.doesNotMatch(r.out, /INSMOD-FAILED/, r.out);
  assert.match(r.out, new RegExp(`LOADED ${initrd.modules.length} PORTS 1 UID 0`), r.out);
  for (const m of DEFAULT_GUEST_MODULES) assert.ok(initrd.modules.includes(m), `${m} is in the initrd`);
});
