/**
 * The xenstore conformance suite against Xen 4.17's own daemons (C xenstored and OCaml
 * oxenstored, via ../shared/peers/xenstored-peer): checks that the suite's expectations are
 * Xen's behaviour, not just vmstack's. Documented differences (notes §6) skip with their reason.
 * Runs whenever Xen's daemons are installed; VMSTACK_XEN_PEERS=0 turns it off.
 */
import { test } from "node:test";
import { runCases } from "./xenstore-harness.js";
import { xenstoreCases } from "./xenstore-cases.js";
import { startXenPeer } from "./xenstore-targets.js";

for (const kind of ["c", "ocaml"] as const) {
  await test(`Xen's ${kind === "c" ? "C xenstored" : "OCaml oxenstored"} passes the xenstore conformance suite`, async (t) => {
    const target = await startXenPeer(kind);
    if (typeof target === "string") {
      t.skip(target);
      return;
    }
    try {
      await runCases(t, target, xenstoreCases);
    } finally {
      await target.stop();
    }
  });
}
