/**
 * Conformance cases: paths, READ/WRITE/MKDIR/RM, DIRECTORY and DIRECTORY_PART, permissions.
 * Facts from docs/misc/xenstore.txt and xs_wire.h, and behaviour observed on Xen 4.17's daemons
 * (xenstore-notes §1.4–1.6). `differs` names a documented difference (notes §6).
 */
import assert from "node:assert/strict";
import { splitNul } from "../../src/xenstore/wire.js";
import type { Case } from "./xenstore-harness.js";

const OCAML_AT_NODES = "oxenstored 4.17 stores @ names as real nodes (notes §1.4, §6)";

export const nodeCases: readonly Case[] = [
  {
    name: "a written value is read back byte for byte, with no terminator",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("a")], { value: "hello world" })).ok();
      (await c.call("READ", [s.p("a")])).value("hello world");
    },
  },
  {
    name: "a value may hold NUL and non-UTF-8 bytes, and may be empty",
    async run(s) {
      const c = await s.conn();
      const bin = Buffer.from([0, 1, 0xff, 0, 0x80]);
      (await c.call("WRITE", [s.p("bin")], { value: bin })).ok();
      (await c.call("READ", [s.p("bin")])).value(bin);
      (await c.call("WRITE", [s.p("empty")], { value: "" })).ok();
      (await c.call("READ", [s.p("empty")])).value("");
    },
  },
  {
    name: "a relative path names a node below /local/domain/0 for a socket connection",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [`${s.relBase}/x`], { value: "rel" })).ok();
      (await c.call("READ", [`/local/domain/0/${s.relBase}/x`])).value("rel");
      (await c.call("READ", [`${s.relBase}/x`])).value("rel");
      (await c.call("DIRECTORY", [s.relBase])).list(["x"]);
    },
  },
  {
    name: "malformed paths are rejected with EINVAL by READ, WRITE, MKDIR and RM",
    async run(s) {
      const c = await s.conn();
      for (const bad of [s.p("q") + "/", "//q", s.p("a b"), s.p("é"), s.p("a.b:c"), ""]) {
        (await c.call("READ", [bad])).error("EINVAL");
        (await c.call("WRITE", [bad], { value: "v" })).error("EINVAL");
        (await c.call("MKDIR", [bad])).error("EINVAL");
        (await c.call("RM", [bad])).error("EINVAL");
      }
    },
  },
  {
    name: "an absolute path of 2048 characters is accepted and one of 2049 is rejected with EINVAL",
    differs: { ocaml: "oxenstored's quota-path-max is 1024 (notes §1.4)" },
    async run(s) {
      const c = await s.conn();
      const head = s.p("long") + "/";
      const ok = head + "x".repeat(2048 - head.length);
      (await c.call("WRITE", [ok], { value: "v" })).ok();
      (await c.call("READ", [ok])).value("v");
      (await c.call("WRITE", [ok + "y"], { value: "v" })).error("EINVAL");
    },
  },
  {
    name: "a request with an argument after the path is rejected with EINVAL",
    differs: { c: "C xenstored 4.17 looks the path up anyway: READ/GET_PERMS give ENOENT, MKDIR/RM ENOMEM (observed here)" },
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("x")], { value: "1" })).ok();
      (await c.call("READ", [s.p("x"), "extra"])).error("EINVAL");
      (await c.call("GET_PERMS", [s.p("x"), "extra"])).error("EINVAL");
      (await c.call("MKDIR", [s.p("y"), "extra"])).error("EINVAL");
      (await c.call("RM", [s.p("x"), "extra"])).error("EINVAL");
      (await c.call("READ", [s.p("x")])).value("1");
    },
  },
  {
    name: "a WRITE without a NUL after the path is rejected with EINVAL",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [], { payload: Buffer.from(s.p("y")) })).error("EINVAL");
      (await c.call("READ", [s.p("y")])).error("ENOENT");
    },
  },
  {
    name: "READ of a path without its terminating NUL fails with ENOENT",
    differs: {
      ocaml: "oxenstored replies EINVAL (notes §1.2, §6)",
      vmstack: "vmstack checks arguments strictly (a path must end in its NUL) and replies EINVAL, like oxenstored",
    },
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("a")], { value: "1" })).ok();
      (await c.call("READ", [], { payload: Buffer.from(s.p("a")) })).error("ENOENT");
    },
  },
  {
    name: "WRITE creates missing parents with empty values",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("a/b/c")], { value: "deep" })).ok();
      (await c.call("READ", [s.p("a")])).value("");
      (await c.call("READ", [s.p("a/b")])).value("");
      (await c.call("DIRECTORY", [s.p("a")])).list(["b"]);
      (await c.call("READ", [s.p("a/b/c")])).value("deep");
    },
  },
  {
    name: "MKDIR creates an empty node, and on an existing node leaves its value alone",
    async run(s) {
      const c = await s.conn();
      (await c.call("MKDIR", [s.p("d/e")])).ok();
      (await c.call("READ", [s.p("d/e")])).value("");
      (await c.call("WRITE", [s.p("d/e")], { value: "kept" })).ok();
      (await c.call("MKDIR", [s.p("d/e")])).ok();
      (await c.call("READ", [s.p("d/e")])).value("kept");
    },
  },
  {
    name: "READ, DIRECTORY and GET_PERMS of a missing node fail with ENOENT",
    async run(s) {
      const c = await s.conn();
      (await c.call("READ", [s.p("missing")])).error("ENOENT");
      (await c.call("DIRECTORY", [s.p("missing")])).error("ENOENT");
      (await c.call("GET_PERMS", [s.p("missing")])).error("ENOENT");
    },
  },
  {
    name: "RM removes the whole subtree",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("t/a/b")], { value: "1" })).ok();
      (await c.call("WRITE", [s.p("t/c")], { value: "2" })).ok();
      (await c.call("RM", [s.p("t")])).ok();
      (await c.call("READ", [s.p("t/a/b")])).error("ENOENT");
      (await c.call("READ", [s.p("t")])).error("ENOENT");
      (await c.call("DIRECTORY", [s.p()])).list([]);
    },
  },
  {
    name: "RM of a missing node succeeds if its parent exists and fails with ENOENT if not",
    async run(s) {
      const c = await s.conn();
      (await c.call("MKDIR", [s.p()])).ok();
      (await c.call("RM", [s.p("nope")])).ok();
      (await c.call("RM", [s.p("nope/deeper")])).error("ENOENT");
    },
  },
  {
    name: "RM of / is rejected with EINVAL and removes nothing",
    differs: { ocaml: "oxenstored 4.17 accepts RM / and wipes the tree (notes §1.6, §6); not run" },
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("keep")], { value: "1" })).ok();
      (await c.call("RM", ["/"])).error("EINVAL");
      (await c.call("READ", [s.p("keep")])).value("1");
    },
  },
  {
    name: "WRITE to / succeeds",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", ["/"], { value: "" })).ok();
      (await c.call("READ", ["/"])).value("");
    },
  },
  {
    name: "dom0 may write a 4000-byte value",
    differs: { ocaml: "oxenstored's quota-maxsize 2048 applies to dom0 too: E2BIG (notes §1.6, §6)" },
    async run(s) {
      const c = await s.conn();
      const v = "v".repeat(4000);
      (await c.call("WRITE", [s.p("big")], { value: v })).ok();
      (await c.call("READ", [s.p("big")])).value(v);
    },
  },
  {
    name: "DIRECTORY lists child names only, and a leaf has an empty list",
    async run(s) {
      const c = await s.conn();
      for (const n of ["x", "y/deep", "z"]) (await c.call("WRITE", [s.p(`dir/${n}`)], { value: "" })).ok();
      (await c.call("DIRECTORY", [s.p("dir")])).list(["x", "y", "z"]);
      (await c.call("DIRECTORY", [s.p("dir/x")])).list([]);
    },
  },
  {
    name: "DIRECTORY_PART of a small directory returns a generation, the names and a final extra NUL",
    differs: { ocaml: "oxenstored 4.17 has no DIRECTORY_PART: ENOSYS (notes §1.2)" },
    async run(s) {
      const c = await s.conn();
      for (const n of ["a", "b"]) (await c.call("WRITE", [s.p(`dp/${n}`)], { value: "" })).ok();
      const r = await c.call("DIRECTORY_PART", [s.p("dp"), "0"]);
      assert.equal(r.errno, undefined);
      const nul = r.msg.payload.indexOf(0);
      assert.match(r.msg.payload.toString("latin1", 0, nul), /^\d+$/, "generation is decimal");
      const rest = r.msg.payload.subarray(nul + 1).toString("latin1");
      assert.ok(rest === "a\0b\0\0" || rest === "b\0a\0\0", `names then an extra NUL, got ${JSON.stringify(rest)}`);
    },
  },
  {
    name: "DIRECTORY over 4096 bytes fails with E2BIG and DIRECTORY_PART returns it in chunks cut on name boundaries",
    differs: { ocaml: "oxenstored 4.17 sends an 8400-byte DIRECTORY reply and has no DIRECTORY_PART (notes §6)" },
    async run(s) {
      const c = await s.conn();
      const names = Array.from({ length: 300 }, (_, i) => `child-name-${String(i).padStart(4, "0")}`);
      const ids = names.map((n) => c.post("WRITE", [s.p(`big/${n}`)], { value: "" }));
      for (const id of ids) (await c.replyTo(id, "WRITE")).ok();
      (await c.call("DIRECTORY", [s.p("big")])).error("E2BIG");
      const got: string[] = [];
      let offset = 0;
      let gen: string | undefined;
      for (let chunk = 0; chunk < 10; chunk++) {
        const r = await c.call("DIRECTORY_PART", [s.p("big"), String(offset)]);
        assert.equal(r.errno, undefined, `DIRECTORY_PART at ${offset}: ${r.errno ?? ""}`);
        assert.ok(r.msg.payload.length <= 4096, "each chunk fits the payload limit");
        const nul = r.msg.payload.indexOf(0);
        const g = r.msg.payload.toString("latin1", 0, nul);
        gen ??= g;
        assert.equal(g, gen, "generation stays the same while nothing changes");
        const rest = r.msg.payload.subarray(nul + 1);
        const last = rest.length >= 2 && rest[rest.length - 1] === 0 && rest[rest.length - 2] === 0;
        const part = splitNul(last ? rest.subarray(0, rest.length - 1) : rest);
        for (const n of part) assert.ok(names.includes(n), `chunk holds whole names only, got ${n}`);
        got.push(...part);
        if (last) break;
        offset += rest.length;
      }
      assert.deepEqual([...got].sort(), names);
    },
  },
  {
    name: "a node created by dom0 has the permissions n0",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("n")], { value: "" })).ok();
      (await c.call("GET_PERMS", [s.p("n")])).list(["n0"], true);
    },
  },
  {
    name: "SET_PERMS round-trips the list as sent, duplicates included",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("n")], { value: "" })).ok();
      (await c.call("SET_PERMS", [s.p("n"), "b0", "n0", "r0"])).ok();
      (await c.call("GET_PERMS", [s.p("n")])).list(["b0", "n0", "r0"], true);
      (await c.call("SET_PERMS", [s.p("n"), "r5", "w7", "b9"])).ok();
      (await c.call("GET_PERMS", [s.p("n")])).list(["r5", "w7", "b9"], true);
    },
  },
  {
    name: "a new child, and every parent created with it, inherits its parent's permissions",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("a")], { value: "" })).ok();
      (await c.call("SET_PERMS", [s.p("a"), "n0", "r5", "b7"])).ok();
      (await c.call("WRITE", [s.p("a/child")], { value: "" })).ok();
      (await c.call("GET_PERMS", [s.p("a/child")])).list(["n0", "r5", "b7"], true);
      (await c.call("WRITE", [s.p("a/x/y")], { value: "" })).ok();
      (await c.call("GET_PERMS", [s.p("a/x")])).list(["n0", "r5", "b7"], true);
    },
  },
  {
    name: "SET_PERMS with no entries or a bad letter is rejected with EINVAL",
    async run(s) {
      const c = await s.conn();
      (await c.call("WRITE", [s.p("n")], { value: "" })).ok();
      (await c.call("SET_PERMS", [s.p("n")])).error("EINVAL");
      (await c.call("SET_PERMS", [s.p("n"), "x5"])).error("EINVAL");
      (await c.call("GET_PERMS", [s.p("n")])).list(["n0"], true);
    },
  },
  {
    name: "READ and WRITE of an @ name are rejected with EINVAL",
    differs: { ocaml: OCAML_AT_NODES },
    async run(s) {
      const c = await s.conn();
      (await c.call("READ", ["@introduceDomain"])).error("EINVAL");
      (await c.call("WRITE", ["@conformance"], { value: "x" })).error("EINVAL");
    },
  },
  {
    name: "the root has the permissions n0, and MKDIR of / succeeds",
    async run(s) {
      const c = await s.conn();
      (await c.call("GET_PERMS", ["/"])).list(["n0"], true);
      (await c.call("MKDIR", ["/"])).ok();
    },
  },
  {
    name: "SET_PERMS on @introduceDomain is accepted while GET_PERMS of it is rejected with EINVAL",
    differs: { ocaml: OCAML_AT_NODES },
    async run(s) {
      const c = await s.conn();
      (await c.call("SET_PERMS", ["@introduceDomain", "n0"])).ok();
      (await c.call("GET_PERMS", ["@introduceDomain"])).error("EINVAL");
    },
  },
  {
    name: "DIRECTORY_PART at an offset inside a name or at the end of the list answers the rest, then the final NUL",
    differs: { ocaml: "oxenstored 4.17 has no DIRECTORY_PART: ENOSYS (notes §1.2)" },
    async run(s) {
      const c = await s.conn();
      for (const n of ["ab", "cd"]) (await c.call("WRITE", [s.p(`dp/${n}`)], { value: "" })).ok();
      const rest = async (offset: string): Promise<string> => {
        const r = await c.call("DIRECTORY_PART", [s.p("dp"), offset]);
        assert.equal(r.errno, undefined);
        return r.msg.payload.subarray(r.msg.payload.indexOf(0) + 1).toString("latin1");
      };
      const all = await rest("0");
      assert.ok(all === "ab\0cd\0\0" || all === "cd\0ab\0\0", JSON.stringify(all));
      assert.equal(await rest("1"), all.slice(1));
      assert.equal(await rest("6"), "\0");
    },
  },
  {
    name: "GET_DOMAIN_PATH answers /local/domain/<domid> for any domid",
    async run(s) {
      const c = await s.conn();
      (await c.call("GET_DOMAIN_PATH", ["0"])).value("/local/domain/0\0");
      (await c.call("GET_DOMAIN_PATH", ["5"])).value("/local/domain/5\0");
    },
  },
];
