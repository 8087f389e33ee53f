/**
 * Conformance cases: watches (xenstore.txt "Watches"; xenstore-notes §1.7). Event checks use a
 * barrier round trip, never a sleep (see xenstore-harness.ts).
 */
import assert from "node:assert/strict";
import type { Case } from "./xenstore-harness.js";

export const watchCases: readonly Case[] = [
  {
    name: "WATCH replies OK and sends an initial event for the watched path, even when it does not exist",
    async run(s) {
      const c = await s.conn();
      (await c.call("WATCH", [s.p("nothing/here"), "tok"])).ok();
      await c.expectEvents([[s.p("nothing/here"), "tok"]]);
    },
  },
  {
    name: "a watch fires for changes at and below its path and not for siblings",
    async run(s) {
      const c = await s.conn();
      (await c.call("MKDIR", [s.p("w")])).ok();
      (await c.call("WATCH", [s.p("w"), "t"])).ok();
      await c.expectEvents([[s.p("w"), "t"]], "initial");
      (await c.call("WRITE", [s.p("w")], { value: "1" })).ok();
      (await c.call("WRITE", [s.p("w/a")], { value: "2" })).ok();
      (await c.call("WRITE", [s.p("w2")], { value: "3" })).ok();
      (await c.call("WRITE", [s.p("sibling")], { value: "4" })).ok();
      await c.expectEvents([
        [s.p("w"), "t"],
        [s.p("w/a"), "t"],
      ]);
    },
  },
  {
    name: "writing the same value again fires the watch again",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("v")], { value: "same" })).ok();
      (await c.call("WATCH", [s.p("v"), "t"])).ok();
      await c.expectEvents([[s.p("v"), "t"]], "initial");
      (await c.call("WRITE", [s.p("v")], { value: "same" })).ok();
      await c.expectEvents([[s.p("v"), "t"]]);
    },
  },
  {
    name: "MKDIR of an existing node and RM of a missing node fire nothing, SET_PERMS fires",
    async run(s) {
      const c = await s.conn();
      (await c.call("MKDIR", [s.p("m")])).ok();
      (await c.call("WATCH", [s.p(), "t"])).ok();
      await c.expectEvents([[s.p(), "t"]], "initial");
      (await c.call("MKDIR", [s.p("m")])).ok();
      (await c.call("RM", [s.p("absent")])).ok();
      await c.expectEvents([], "after no-op MKDIR and RM");
      (await c.call("SET_PERMS", [s.p("m"), "n0", "r3"])).ok();
      await c.expectEvents([[s.p("m"), "t"]], "after SET_PERMS");
    },
  },
  {
    name: "an implicitly created parent gets no event of its own",
    async run(s) {
      const c = await s.conn();
      (await c.call("MKDIR", [s.p()])).ok();
      (await c.call("WATCH", [s.p(), "t"])).ok();
      await c.expectEvents([[s.p(), "t"]], "initial");
      (await c.call("WRITE", [s.p("new/leaf")], { value: "x" })).ok();
      await c.expectEvents([[s.p("new/leaf"), "t"]]);
    },
  },
  {
    name: "RM of a subtree sends one event for its top to a watch above it",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("a/child/grandchild")], { value: "" })).ok();
      (await c.call("WATCH", [s.p(), "t"])).ok();
      await c.expectEvents([[s.p(), "t"]], "initial");
      (await c.call("RM", [s.p("a")])).ok();
      await c.expectEvents([[s.p("a"), "t"]]);
    },
  },
  {
    name: "a watch inside a removed subtree fires with its own path",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("w/x")], { value: "" })).ok();
      (await c.call("WATCH", [s.p("w/x"), "t"])).ok();
      await c.expectEvents([[s.p("w/x"), "t"]], "initial");
      (await c.call("RM", [s.p("w")])).ok();
      await c.expectEvents([[s.p("w/x"), "t"]]);
    },
  },
  {
    name: "the same path and token twice on one connection fails with EEXIST; another token or connection is fine",
    async run(s) {
      const a = await s.conn("a");
      const b = await s.conn("b");
      (await a.call("WATCH", [s.p(), "t"])).ok();
      (await a.call("WATCH", [s.p(), "t"])).error("EEXIST");
      (await a.call("WATCH", [s.p(), "t2"])).ok();
      (await b.call("WATCH", [s.p(), "t"])).ok();
    },
  },
  {
    name: "UNWATCH stops the events, and UNWATCH of an unknown watch fails with ENOENT",
    async run(s) {
      const c = await s.conn();
      (await c.call("WATCH", [s.p(), "t"])).ok();
      await c.expectEvents([[s.p(), "t"]], "initial");
      (await c.call("UNWATCH", [s.p(), "t"])).ok();
      (await c.call("WRITE", [s.p("x")], { value: "" })).ok();
      await c.expectEvents([], "after UNWATCH");
      (await c.call("UNWATCH", [s.p(), "t"])).error("ENOENT");
      (await c.call("UNWATCH", [s.p("other"), "never"])).error("ENOENT");
    },
  },
  {
    name: "a watch on a relative path reports relative event paths",
    async run(s) {
      const c = await s.conn();
      (await c.call("WATCH", [s.relBase, "rel"])).ok();
      await c.expectEvents([[s.relBase, "rel"]], "initial");
      (await c.call("WRITE", [`/local/domain/0/${s.relBase}/k`], { value: "1" })).ok();
      await c.expectEvents([[`${s.relBase}/k`, "rel"]]);
    },
  },
  {
    name: "a change by one connection fires the watches of every connection",
    async run(s) {
      const a = await s.conn("a");
      const b = await s.conn("b");
      (await a.call("WATCH", [s.p(), "ta"])).ok();
      (await b.call("WATCH", [s.p(), "tb"])).ok();
      await a.expectEvents([[s.p(), "ta"]], "initial");
      await b.expectEvents([[s.p(), "tb"]], "initial");
      (await b.call("WRITE", [s.p("k")], { value: "1" })).ok();
      await a.expectEvents([[s.p("k"), "ta"]]);
      await b.expectEvents([[s.p("k"), "tb"]]);
    },
  },
  {
    name: "the event caused by a connection's own write arrives before that write's reply",
    differs: { ocaml: "oxenstored sends the event after the reply (notes §1.7, §6)" },
    async run(s) {
      const c = await s.conn();
      (await c.call("WATCH", [s.p(), "t"])).ok();
      await c.expectEvents([[s.p(), "t"]], "initial");
      const before = c.frames.length;
      const id = c.post("WRITE", [s.p("own")], { value: "1" });
      (await c.replyTo(id, "WRITE")).ok();
      const ops = c.frames.slice(before).map((f) => f.op);
      assert.deepEqual(ops, ["WATCH_EVENT", "WRITE"]);
      c.takeEvents();
    },
  },
  {
    name: "@introduceDomain and @releaseDomain watches are accepted and send their initial event",
    async run(s) {
      const c = await s.conn();
      (await c.call("WATCH", ["@introduceDomain", "intro"])).ok();
      (await c.call("WATCH", ["@releaseDomain", "rel"])).ok();
      await c.expectEvents([
        ["@introduceDomain", "intro"],
        ["@releaseDomain", "rel"],
      ]);
    },
  },
  {
    name: "changes in a transaction fire only at commit, and an aborted transaction fires nothing",
    async run(s) {
      const w = await s.conn("watcher");
      const c = await s.conn("writer");
      (await c.call("MKDIR", [s.p()])).ok();
      (await w.call("WATCH", [s.p(), "t"])).ok();
      await w.expectEvents([[s.p(), "t"]], "initial");
      const tx = await c.begin();
      (await c.call("WRITE", [s.p("in-tx")], { tx, value: "1" })).ok();
      await w.expectEvents([], "before commit");
      (await c.call("TRANSACTION_END", ["T"], { tx })).ok();
      await w.expectEvents([[s.p("in-tx"), "t"]], "after commit");
      const tx2 = await c.begin();
      (await c.call("WRITE", [s.p("aborted")], { tx: tx2, value: "1" })).ok();
      (await c.call("TRANSACTION_END", ["F"], { tx: tx2 })).ok();
      await w.expectEvents([], "after abort");
    },
  },
  {
    name: "WATCH and UNWATCH ignore the transaction id",
    async run(s) {
      const c = await s.conn();
      const tx = await c.begin();
      (await c.call("WATCH", [s.p(), "t"], { tx })).ok();
      (await c.call("TRANSACTION_END", ["F"], { tx })).ok();
      await c.expectEvents([[s.p(), "t"]], "initial");
      (await c.call("WRITE", [s.p("x")], { value: "" })).ok();
      await c.expectEvents([[s.p("x"), "t"]], "watch outlives the transaction");
      (await c.call("UNWATCH", [s.p(), "t"], { tx: 999 })).ok();
    },
  },
  {
    name: "RESET_WATCHES drops every watch of the connection",
    async run(s) {
      const c = await s.conn();
      (await c.call("WATCH", [s.p(), "a"])).ok();
      (await c.call("WATCH", [s.p("x"), "b"])).ok();
      c.takeEvents();
      (await c.call("RESET_WATCHES", [""])).ok();
      await c.barrier();
      c.takeEvents();
      (await c.call("WRITE", [s.p("x")], { value: "" })).ok();
      await c.expectEvents([], "after RESET_WATCHES");
      (await c.call("WATCH", [s.p(), "a"])).ok();
    },
  },
];
