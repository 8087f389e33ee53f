/**
 * Conformance cases: transactions (xenstore-notes §1.8, including the EAGAIN cases observed on
 * both Xen daemons), error names, payload limits, unknown ops and pipelining (§1.1–1.3).
 */
import assert from "node:assert/strict";
import type { Case } from "./xenstore-harness.js";

export const txCases: readonly Case[] = [
  {
    name: "a transaction sees its own writes while outside readers see the old value until commit",
    async run(s) {
      const c = await s.conn("tx");
      const o = await s.conn("outside");
      (await c.call("WRITE", [s.p("k")], { value: "old" })).ok();
      const tx = await c.begin();
      assert.ok(tx > 0);
      (await c.call("WRITE", [s.p("k")], { tx, value: "new" })).ok();
      (await c.call("READ", [s.p("k")], { tx })).value("new");
      (await o.call("READ", [s.p("k")])).value("old");
      (await c.call("READ", [s.p("k")])).value("old");
      (await c.call("TRANSACTION_END", ["T"], { tx })).ok();
      (await o.call("READ", [s.p("k")])).value("new");
    },
  },
  {
    name: "an aborted transaction changes nothing",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("k")], { value: "old" })).ok();
      const tx = await c.begin();
      (await c.call("WRITE", [s.p("k")], { tx, value: "new" })).ok();
      (await c.call("RM", [s.p("k")], { tx })).ok();
      (await c.call("WRITE", [s.p("n/x")], { tx, value: "created" })).ok();
      (await c.call("TRANSACTION_END", ["F"], { tx })).ok();
      (await c.call("READ", [s.p("k")])).value("old");
      (await c.call("READ", [s.p("n")])).error("ENOENT");
    },
  },
  {
    name: "MKDIR, RM, DIRECTORY and permissions work inside a transaction",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("gone")], { value: "" })).ok();
      const tx = await c.begin();
      (await c.call("MKDIR", [s.p("d")], { tx })).ok();
      (await c.call("RM", [s.p("gone")], { tx })).ok();
      (await c.call("DIRECTORY", [s.p()], { tx })).list(["d"]);
      (await c.call("SET_PERMS", [s.p("d"), "n0", "r4"], { tx })).ok();
      (await c.call("GET_PERMS", [s.p("d")], { tx })).list(["n0", "r4"], true);
      (await c.call("DIRECTORY", [s.p()])).list(["gone"]);
      (await c.call("TRANSACTION_END", ["T"], { tx })).ok();
      (await c.call("DIRECTORY", [s.p()])).list(["d"]);
      (await c.call("GET_PERMS", [s.p("d")])).list(["n0", "r4"], true);
    },
  },
  {
    name: "TRANSACTION_START with a non-zero transaction id fails with EBUSY",
    async run(s) {
      const c = await s.conn();
      const tx = await c.begin();
      (await c.call("TRANSACTION_START", [""], { tx })).error("EBUSY");
      (await c.call("TRANSACTION_END", ["F"], { tx })).ok();
    },
  },
  {
    name: "an unknown transaction id fails with ENOENT, and an ended transaction is unknown",
    differs: { ocaml: "oxenstored replies EIO for an unknown transaction (notes §1.3, §6)" },
    async run(s) {
      const c = await s.conn();
      (await c.call("READ", [s.p("x")], { tx: 424242 })).error("ENOENT");
      const tx = await c.begin();
      (await c.call("TRANSACTION_END", ["T"], { tx })).ok();
      (await c.call("TRANSACTION_END", ["T"], { tx })).error("ENOENT");
      (await c.call("WRITE", [s.p("x")], { tx, value: "1" })).error("ENOENT");
    },
  },
  {
    name: "a transaction is private to its connection",
    differs: { ocaml: "oxenstored replies EIO for an unknown transaction (notes §1.3, §6)" },
    async run(s) {
      const a = await s.conn("a");
      const b = await s.conn("b");
      const tx = await a.begin();
      (await b.call("WRITE", [s.p("x")], { tx, value: "1" })).error("ENOENT");
      (await a.call("TRANSACTION_END", ["F"], { tx })).ok();
    },
  },
  {
    name: "a commit fails with EAGAIN when a node the transaction read was changed outside it",
    async run(s) {
      const c = await s.conn("tx");
      const o = await s.conn("outside");
      (await c.call("WRITE", [s.p("k")], { value: "1" })).ok();
      const tx = await c.begin();
      (await c.call("READ", [s.p("k")], { tx })).value("1");
      (await c.call("WRITE", [s.p("k")], { tx, value: "from-tx" })).ok();
      (await o.call("WRITE", [s.p("k")], { value: "outside" })).ok();
      (await c.call("TRANSACTION_END", ["T"], { tx })).error("EAGAIN");
      (await c.call("READ", [s.p("k")])).value("outside");
      (await c.call("TRANSACTION_END", ["T"], { tx })).error(s.target.flavour === "ocaml" ? "EIO" : "ENOENT");
    },
  },
  {
    name: "a transaction creating a node conflicts with an outside create under the same parent",
    differs: { ocaml: "oxenstored coalesces creations of different absent subtrees (transaction.ml merge; notes §1.8)" },
    async run(s) {
      const c = await s.conn("tx");
      const o = await s.conn("outside");
      (await c.call("MKDIR", [s.p()])).ok();
      const tx = await c.begin();
      (await c.call("WRITE", [s.p("t/x")], { tx, value: "1" })).ok();
      (await o.call("WRITE", [s.p("other")], { value: "2" })).ok();
      (await c.call("TRANSACTION_END", ["T"], { tx })).error("EAGAIN");
      (await c.call("READ", [s.p("t/x")])).error("ENOENT");
    },
  },
  {
    name: "a transaction writing an existing node commits despite an outside write to an unrelated node",
    async run(s) {
      const c = await s.conn("tx");
      const o = await s.conn("outside");
      (await c.call("WRITE", [s.p("e/x")], { value: "0" })).ok();
      (await c.call("WRITE", [s.p("f/x")], { value: "0" })).ok();
      const tx = await c.begin();
      (await c.call("WRITE", [s.p("e/x")], { tx, value: "tx" })).ok();
      (await o.call("WRITE", [s.p("f/x")], { value: "outside" })).ok();
      (await c.call("TRANSACTION_END", ["T"], { tx })).ok();
      (await c.call("READ", [s.p("e/x")])).value("tx");
      (await c.call("READ", [s.p("f/x")])).value("outside");
    },
  },
  {
    name: "of two transactions writing the same existing node, the second to commit fails with EAGAIN",
    differs: { ocaml: "oxenstored coalesces the blind writes: both commit and the last one wins (notes §1.8)" },
    async run(s) {
      const a = await s.conn("a");
      const b = await s.conn("b");
      (await a.call("WRITE", [s.p("k")], { value: "0" })).ok();
      const ta = await a.begin();
      const tb = await b.begin();
      (await a.call("WRITE", [s.p("k")], { tx: ta, value: "a" })).ok();
      (await b.call("WRITE", [s.p("k")], { tx: tb, value: "b" })).ok();
      (await a.call("TRANSACTION_END", ["T"], { tx: ta })).ok();
      (await b.call("TRANSACTION_END", ["T"], { tx: tb })).error("EAGAIN");
      (await a.call("READ", [s.p("k")])).value("a");
    },
  },
  {
    name: "RESET_WATCHES also ends the connection's open transactions",
    differs: { ocaml: "oxenstored replies EIO for an unknown transaction (notes §1.3, §6)" },
    async run(s) {
      const c = await s.conn();
      const tx = await c.begin();
      (await c.call("WRITE", [s.p("x")], { tx, value: "1" })).ok();
      (await c.call("RESET_WATCHES", [""])).ok();
      (await c.call("READ", [s.p("x")], { tx })).error("ENOENT");
      (await c.call("READ", [s.p("x")])).error("ENOENT");
    },
  },
  {
    name: "a request with an empty payload is rejected with EINVAL",
    differs: { ocaml: "oxenstored 4.17 never answers a request with an empty payload (observed here)" },
    async run(s) {
      const c = await s.conn();
      (await c.call("GET_DOMAIN_PATH", [], { payload: Buffer.alloc(0) })).error("EINVAL");
      const tx = await c.begin();
      (await c.call("TRANSACTION_END", [], { tx, payload: Buffer.alloc(0) })).error("EINVAL");
    },
  },
  {
    name: "unknown message types fail with ENOSYS and echo req_id and tx_id",
    async run(s) {
      const c = await s.conn();
      for (const type of [20, 27, 99, 0xfffe]) {
        const id = c.post(type, [""], { reqId: 7000 + type });
        const r = await c.replyTo(id, `type ${type}`);
        r.error("ENOSYS");
        assert.equal(r.msg.reqId, 7000 + type);
      }
      (await c.call("WATCH_EVENT", [s.p(), "t"])).error("ENOSYS");
    },
  },
  {
    name: "replies echo req_id and tx_id, on errors too",
    async run(s) {
      const c = await s.conn();
      const tx = await c.begin();
      const ok = await c.call("WRITE", [s.p("k")], { tx, value: "1", reqId: 0xdeadbeef });
      ok.ok();
      assert.equal(ok.msg.reqId, 0xdeadbeef);
      assert.equal(ok.msg.txId, tx);
      const err = await c.call("READ", [s.p("missing")], { tx, reqId: 77 });
      err.error("ENOENT");
      assert.equal(err.msg.reqId, 77);
      assert.equal(err.msg.txId, tx);
      (await c.call("TRANSACTION_END", ["F"], { tx })).ok();
    },
  },
  {
    name: "a WRITE whose payload is exactly 4096 bytes is accepted",
    differs: { ocaml: "oxenstored's quota-maxsize 2048 applies to dom0 too: E2BIG (notes §1.6, §6)" },
    async run(s) {
      const c = await s.conn();
      const path = s.p("max");
      const value = "m".repeat(4096 - path.length - 1);
      (await c.call("WRITE", [path], { value })).ok();
      (await c.call("READ", [path])).value(value);
    },
  },
  {
    name: "a request over 4096 bytes closes that connection without a reply and leaves others alone",
    differs: { ocaml: "oxenstored 4.17 replies E2BIG and keeps the connection (notes §1.1, §6)" },
    async run(s) {
      const bad = await s.conn("oversized");
      const good = await s.conn("bystander");
      bad.post("WRITE", [s.p("huge")], { value: "x".repeat(5000) });
      while (!bad.closed) await bad.changed();
      assert.deepEqual(bad.frames, [], "no reply to an oversized request");
      (await good.call("WRITE", [s.p("fine")], { value: "1" })).ok();
      (await good.call("READ", [s.p("huge")])).error("ENOENT");
    },
  },
  {
    name: "pipelined requests are all answered with their own req_ids",
    async run(s) {
      const c = await s.conn();
      const ids: number[] = [];
      for (let i = 0; i < 64; i++) ids.push(c.post("WRITE", [s.p(`pipe/k${i}`)], { value: `v${i}` }));
      for (let i = 0; i < 64; i++) ids.push(c.post("READ", [s.p(`pipe/k${i}`)]));
      for (const [n, id] of ids.entries()) {
        const r = await c.replyTo(id, `request ${n}`);
        if (n < 64) r.ok();
        else r.value(`v${n - 64}`);
      }
      const order = c.frames.filter((f) => ids.includes(f.reqId)).map((f) => f.reqId);
      assert.deepEqual(order, ids, "replies come in request order on one connection");
    },
  },
];

/**
 * Unprivileged domains (xenstore-notes §1.5, §1.7, XSA-115/352). Xen's daemons treat every socket
 * connection as dom0, so only vmstack's daemon (openConnection({ domid })) can run these.
 */
export const domainCases: readonly Case[] = [
  {
    name: "an unprivileged domain gets EACCES on a node it has no rights to, and exactly the rights it is granted",
    unprivileged: true,
    async run(s) {
      const d0 = await s.conn("dom0");
      const d5 = await s.domain(5);
      (await d0.call("WRITE", [s.p("secret")], { value: "s" })).ok();
      (await d5.call("READ", [s.p("secret")])).error("EACCES");
      (await d5.call("WRITE", [s.p("secret")], { value: "x" })).error("EACCES");
      (await d0.call("SET_PERMS", [s.p("secret"), "n0", "r5"])).ok();
      (await d5.call("READ", [s.p("secret")])).value("s");
      (await d5.call("WRITE", [s.p("secret")], { value: "x" })).error("EACCES");
      (await d0.call("SET_PERMS", [s.p("secret"), "n0", "b5"])).ok();
      (await d5.call("WRITE", [s.p("secret")], { value: "x" })).ok();
      (await d0.call("READ", [s.p("secret")])).value("x");
    },
  },
  {
    name: "a domain's relative paths are below its own home, and nodes it creates are owned by it",
    unprivileged: true,
    async run(s) {
      const d0 = await s.conn("dom0");
      const d5 = await s.domain(5);
      const home = `/local/domain/5/${s.relBase.replace("/", "-")}`;
      (await d0.call("MKDIR", [home])).ok();
      (await d0.call("SET_PERMS", [home, "n5"])).ok();
      try {
        const rel = home.slice("/local/domain/5/".length);
        (await d5.call("WRITE", [`${rel}/x`], { value: "mine" })).ok();
        (await d0.call("READ", [`${home}/x`])).value("mine");
        (await d0.call("GET_PERMS", [`${home}/x`])).list(["n5"], true);
      } finally {
        (await d0.call("RM", [home])).ok();
      }
    },
  },
  {
    name: "the owner may change a node's permissions but only dom0 may change its owner (EPERM)",
    unprivileged: true,
    async run(s) {
      const d0 = await s.conn("dom0");
      const d5 = await s.domain(5);
      (await d0.call("WRITE", [s.p("o")], { value: "" })).ok();
      (await d0.call("SET_PERMS", [s.p("o"), "n5"])).ok();
      (await d5.call("SET_PERMS", [s.p("o"), "n5", "r6"])).ok();
      (await d5.call("SET_PERMS", [s.p("o"), "n6"])).error("EPERM");
      (await d0.call("GET_PERMS", [s.p("o")])).list(["n5", "r6"], true);
      (await d0.call("SET_PERMS", [s.p("o"), "n6"])).ok();
    },
  },
  {
    name: "a watcher gets no events for nodes it cannot read",
    unprivileged: true,
    async run(s) {
      const d0 = await s.conn("dom0");
      const d5 = await s.domain(5);
      (await d0.call("MKDIR", [s.p()])).ok();
      (await d0.call("SET_PERMS", [s.p(), "n0", "r5"])).ok();
      (await d5.call("WATCH", [s.p(), "t"])).ok();
      await d5.barrier();
      d5.takeEvents();
      (await d0.call("WRITE", [s.p("hidden")], { value: "1" })).ok();
      (await d0.call("SET_PERMS", [s.p("hidden"), "n0"])).ok();
      (await d0.call("WRITE", [s.p("hidden")], { value: "2" })).ok();
      await d5.barrier();
      d5.takeEvents(); // the create and perms change may be reported while it was still readable
      (await d0.call("WRITE", [s.p("hidden")], { value: "3" })).ok();
      await d5.expectEvents([], "for a node dom5 cannot read");
      (await d0.call("WRITE", [s.p("visible")], { value: "1" })).ok();
      await d5.expectEvents([[s.p("visible"), "t"]], "for a node dom5 can read");
    },
  },
];
