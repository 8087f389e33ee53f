import { test } from "node:test";
import assert from "node:assert/strict";
import { OPS, parseExecFrame, parseRequest, parseResponse } from "../../src/vmm/api/protocol.js";
import { isVmstackError } from "../../src/lib/errors.js";

const rejects = (v: unknown, pattern: RegExp): void => {
  assert.throws(() => parseRequest(v), (e: unknown) => isVmstackError(e, "BAD_REQUEST") && pattern.test(e.message));
};

test("parseRequest accepts each op in its documented shape", () => {
  assert.deepEqual(parseRequest({ op: "ping" }), { op: "ping" });
  assert.deepEqual(parseRequest({ op: "list", domains: ["a", "3"] }), { op: "list", domains: ["a", "3"] });
  assert.deepEqual(parseRequest({ op: "shutdown", domain: null, wait: true, forceAfterMs: 5000 }), { op: "shutdown", domain: null, wait: true, forceAfterMs: 5000 });
  assert.deepEqual(parseRequest({ op: "exec", domain: "a", argv: ["uname", "-a"], timeoutMs: null }), { op: "exec", domain: "a", argv: ["uname", "-a"], timeoutMs: null, stream: false });
  assert.equal((parseRequest({ op: "exec", domain: "a", argv: ["cat"], timeoutMs: 5, stream: true }) as { stream: boolean }).stream, true);
  assert.deepEqual(parseRequest({ op: "trigger", domain: "a", trigger: "nmi" }), { op: "trigger", domain: "a", trigger: "nmi" });
  assert.deepEqual(parseRequest({ op: "create", config: { name: "x" }, paused: false, force: true }), { op: "create", config: { name: "x" }, paused: false, force: true });
  assert.deepEqual(parseRequest({ op: "cli", argv: ["list", "--json"] }), { op: "cli", argv: ["list", "--json"] });
  assert.equal(OPS.length, new Set(OPS).size);
});

test("parseRequest rejects unknown ops, unknown keys and wrong types, saying which", () => {
  rejects(null, /JSON object/);
  rejects([], /JSON object/);
  rejects({ op: "reformat" }, /unknown op "reformat"/);
  rejects({ op: "pause", domain: "a", force: true }, /unknown key 'force' for pause/);
  rejects({ op: "pause" }, /'domain' must be a domain name or id/);
  rejects({ op: "pause", domain: "" }, /'domain'/);
  rejects({ op: "sysrq", domain: "a", letter: "hh" }, /'letter'/);
  rejects({ op: "trigger", domain: "a", trigger: "s3resume" }, /nmi\|reset\|power/);
  rejects({ op: "exec", domain: "a", argv: [], timeoutMs: null }, /'argv' must be a non-empty list/);
  rejects({ op: "shutdown", domain: "a", wait: "yes", forceAfterMs: null }, /'wait' must be a boolean/);
  rejects({ op: "domname", domid: -1 }, /'domid'/);
  rejects({ op: "cli", argv: [] }, /'argv' must be a non-empty list/);
  rejects({ op: "cli", argv: ["list", 3] }, /'argv'/);
});

test("parseResponse reads results and errors and rejects anything else", () => {
  assert.deepEqual(parseResponse({ ok: true, result: [1] }), { ok: true, result: [1] });
  assert.deepEqual(parseResponse({ ok: false, error: { code: "NO_SUCH_DOMAIN", message: "no domain 'x'" } }), { ok: false, error: { code: "NO_SUCH_DOMAIN", message: "no domain 'x'" } });
  assert.throws(() => parseResponse({ ok: false }), /malformed error/);
  assert.throws(() => parseResponse("ok"), /not a response/);
});

test("exec frames: output, input, end of input and the exit; anything else is rejected", () => {
  assert.deepEqual(parseExecFrame({ o: "aGk=" }), { o: "aGk=" });
  assert.deepEqual(parseExecFrame({ e: "" }), { e: "" });
  assert.deepEqual(parseExecFrame({ i: "eA==" }), { i: "eA==" });
  assert.deepEqual(parseExecFrame({ eof: true }), { eof: true });
  assert.deepEqual(parseExecFrame({ x: { exitCode: null, signal: "SIGKILL" } }), { x: { exitCode: null, signal: "SIGKILL" } });
  for (const bad of [{ o: 1 }, { o: "", e: "" }, { eof: false }, { x: { exitCode: "0", signal: null } }, [], "o"]) {
    assert.throws(() => parseExecFrame(bad), /not an exec frame/);
  }
});

test("vmstackd runs only the quick verbs for the front end, and they make plain requests only", async () => {
  const { runFastVerb, FAST_VERBS } = await import("../../src/cli/fast-path.js");
  const never = (): Promise<unknown> => Promise.reject(new Error("no request expected"));
  for (const argv of [["run", "--", "true"], ["create", "x.cfg"], ["--verbose", "list"], ["console", "a"]]) {
    await assert.rejects(runFastVerb(argv, never, new AbortController().signal), (e: unknown) => isVmstackError(e, "BAD_REQUEST") && /not a verb vmstackd runs/.test(e.message));
  }
  const seen: unknown[] = [];
  const r = await runFastVerb(["domid", "web"], (req) => (seen.push(req), Promise.resolve(7)), new AbortController().signal);
  assert.deepEqual(seen, [{ op: "domid", name: "web" }]);
  assert.deepEqual({ code: r.code, out: r.stdout.toString(), err: r.stderr.toString() }, { code: 0, out: "7\n", err: "" });
  const bad = await runFastVerb(["pause"], never, new AbortController().signal);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr.toString(), /missing DOMAIN/);
  assert.ok(FAST_VERBS.every((v) => !["run", "create", "console", "exec", "xenstored", "vmstackd"].includes(v)));
});

test("the front end's list of quick verbs is vmstackd's", async () => {
  const { FAST_VERBS } = await import("../../src/cli/fast-path.js");
  const { readFileSync } = await import("node:fs");
  const source = readFileSync(new URL("../../../front/vmstack.c", import.meta.url), "utf8");
  const block = /fast_verbs\[\] = \{([^}]*)\}/.exec(source)?.[1] ?? "";
  assert.deepEqual([...block.matchAll(/"([a-z-]+)"/g)].map((m) => m[1]), [...FAST_VERBS]);
});
