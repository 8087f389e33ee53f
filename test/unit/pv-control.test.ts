/** pvAcknowledged: how vmstackd decides that a guest took the PV shutdown path. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createXenstored } from "../../src/xenstore/index.js";
import { XenstoreClient } from "../../src/xenstore/client.js";
import { requestShutdown, writeDomain } from "../../src/vmm/domain-xenstore.js";
import { forgetGuestReports, pvAcknowledged } from "../../src/vmm/pv-control.js";

async function setup(): Promise<{ dom0: XenstoreClient; guest: XenstoreClient; close: () => void }> {
  const xsd = createXenstored();
  const dom0 = new XenstoreClient(xsd.openConnection({ domid: 0 }));
  await writeDomain(dom0, { domid: 7, name: "g", uuid: "00000000-0000-0000-0000-000000000007", memoryMiB: 64, maxmemMiB: 64, vcpus: 1, maxvcpus: 1, onPoweroff: "destroy", onReboot: "restart", onCrash: "destroy", startTime: 0 });
  const guest = new XenstoreClient(xsd.openConnection({ domid: 7 }));
  return { dom0, guest, close: () => xsd.close() };
}

void test("a guest that does not advertise feature-poweroff is not waited for", async () => {
  const { dom0, close } = await setup();
  try {
    await requestShutdown(dom0, 7, "poweroff");
    const t0 = performance.now();
    assert.equal(await pvAcknowledged(dom0, 7, "poweroff", 5000), false);
    assert.ok(performance.now() - t0 < 2000);
  } finally {
    close();
  }
});

void test("a guest that advertises and writes \"\" back has acknowledged; one that stays silent times out", async () => {
  const { dom0, guest, close } = await setup();
  try {
    // The guest may write its own control/feature-* and control/shutdown (xenstore-paths [w]).
    await guest.write("control/feature-poweroff", "1");
    await requestShutdown(dom0, 7, "poweroff");
    assert.equal(await pvAcknowledged(dom0, 7, "poweroff", 200), false);
    const acked = pvAcknowledged(dom0, 7, "poweroff", 5000);
    await guest.write("control/shutdown", "");
    assert.equal(await acked, true);
    // feature-reboot is separate: not advertised, not waited for.
    await requestShutdown(dom0, 7, "reboot");
    assert.equal(await pvAcknowledged(dom0, 7, "reboot", 5000), false);
  } finally {
    close();
  }
});

void test("after a guest reset its boot reports are gone and its PV features are back to \"\"", async () => {
  const { dom0, guest, close } = await setup();
  try {
    for (const [p, v] of [["data/booted", "1"], ["data/os_uname", "6.1"], ["attr/vif/0/ipv4/0", "10.0.2.15"], ["drivers/0", "vmstack-agent"], ["control/feature-poweroff", "1"], ["data/mine", "kept"]]) {
      await guest.write(p as string, v as string);
    }
    await forgetGuestReports(dom0, 7);
    for (const p of ["data/booted", "data/os_uname", "attr/vif", "drivers/0"]) assert.equal(await dom0.tryRead(`/local/domain/7/${p}`), undefined, p);
    assert.equal(await dom0.read("/local/domain/7/control/feature-poweroff"), "");
    assert.equal(await dom0.read("/local/domain/7/data/mine"), "kept");
    // The guest can write them again on its next boot.
    await guest.write("data/booted", "1");
    await guest.write("control/feature-poweroff", "1");
    await forgetGuestReports(dom0, 7); // and a second reset is fine with what is missing
  } finally {
    close();
  }
});
