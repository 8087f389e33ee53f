import { test } from "node:test";
import assert from "node:assert/strict";
import { createXenstored } from "../../src/xenstore/index.js";
import { XenstoreClient } from "../../src/xenstore/client.js";
import { domainIdsInStore, removeDomain, renameDomain, requestShutdown, writeDom0, writeDomain } from "../../src/vmm/domain-xenstore.js";

const facts = { domid: 5, name: "web", uuid: "11111111-2222-3333-4444-555555555555", memoryMiB: 256, maxmemMiB: 512, vcpus: 1, maxvcpus: 2, onPoweroff: "destroy", onReboot: "restart", onCrash: "preserve", startTime: 1700000000.5 };

test("a domain is laid out in xenstore as Xen's toolstack does, with Domain-0 beside it", async () => {
  const d = createXenstored({});
  const xs = new XenstoreClient(d.openConnection({ domid: 0 }));
  try {
    await writeDom0(xs, 1024);
    await writeDomain(xs, facts);
    assert.equal(await xs.read("/local/domain/0/name"), "Domain-0");
    assert.equal(await xs.read("/local/domain/0/memory/target"), String(1024 * 1024));
    assert.equal(await xs.read("/local/domain/5/name"), "web");
    assert.equal(await xs.read("/local/domain/5/domid"), "5");
    assert.equal(await xs.read("/local/domain/5/vm"), `/vm/${facts.uuid}`);
    assert.equal(await xs.read("/local/domain/5/memory/target"), "262144");
    assert.equal(await xs.read("/local/domain/5/memory/static-max"), "524288");
    assert.equal(await xs.read("/local/domain/5/cpu/0/availability"), "online");
    assert.equal(await xs.read("/local/domain/5/cpu/1/availability"), "offline");
    assert.equal(await xs.read(`/vm/${facts.uuid}/name`), "web");
    assert.equal(await xs.read(`/vm/${facts.uuid}/on_crash`), "preserve");
    assert.deepEqual((await domainIdsInStore(xs)).sort(), [0, 5]);
  } finally {
    await xs.close();
    d.close();
  }
});

test("the guest may read its home and write control/shutdown, but not its name", async () => {
  const d = createXenstored({});
  const xs = new XenstoreClient(d.openConnection({ domid: 0 }));
  const guest = new XenstoreClient(d.openConnection({ domid: 5 }));
  try {
    await writeDomain(xs, facts);
    await requestShutdown(xs, 5, "poweroff");
    assert.equal(await guest.read("/local/domain/5/control/shutdown"), "poweroff");
    await guest.write("/local/domain/5/control/shutdown", ""); // the PV acknowledgement
    assert.equal(await guest.read("/local/domain/5/memory/target"), "262144");
    await assert.rejects(guest.write("/local/domain/5/name", "evil"), /EACCES/);
  } finally {
    await guest.close();
    await xs.close();
    d.close();
  }
});

test("rename updates both names; removal leaves no trace of the domain", async () => {
  const d = createXenstored({});
  const xs = new XenstoreClient(d.openConnection({ domid: 0 }));
  try {
    await writeDomain(xs, facts);
    await renameDomain(xs, 5, facts.uuid, "www");
    assert.equal(await xs.read("/local/domain/5/name"), "www");
    assert.equal(await xs.read(`/vm/${facts.uuid}/name`), "www");
    await removeDomain(xs, 5, facts.uuid);
    await removeDomain(xs, 5, facts.uuid); // twice is fine
    assert.equal(await xs.exists("/local/domain/5"), false);
    assert.equal(await xs.exists(`/vm/${facts.uuid}`), false);
  } finally {
    await xs.close();
    d.close();
  }
});
