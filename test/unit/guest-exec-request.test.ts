import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isVmstackError } from "../../src/lib/errors.js";
import { parseExecRequest } from "../../src/guest/exec-request.js";

const rejects = (input: unknown, pattern: RegExp): void =>
  assert.throws(
    () => parseExecRequest(input),
    (e: unknown) => isVmstackError(e, "GUEST_BAD_EXEC_REQUEST") && pattern.test(e.message),
  );

describe("parseExecRequest", () => {
  test("an argv request becomes exec fields with stdin from /dev/null", () => {
    const p = parseExecRequest({ argv: ["ls", "-l"], env: { A: "1" }, cwd: "/tmp", timeoutMs: 1000 });
    assert.deepEqual(p.fields, {
      shell: false, stdin: false, clearEnv: false, timeoutMs: 1000, graceMs: 0, cwd: "/tmp", argv: ["ls", "-l"], env: ["A=1"],
    });
    assert.equal(p.stdinData, undefined);
  });

  test("a shell request carries its script as the only argv element", () => {
    const p = parseExecRequest({ shell: "echo $HOME", clearEnv: true, outputGraceMs: 50 });
    assert.equal(p.fields.shell, true);
    assert.deepEqual(p.fields.argv, ["echo $HOME"]);
    assert.equal(p.fields.clearEnv, true);
    assert.equal(p.fields.graceMs, 50);
  });

  test("stdin given as data is piped and sent before EOF; 'pipe' is piped without data", () => {
    assert.deepEqual(parseExecRequest({ argv: ["cat"], stdin: "hi" }).stdinData, Buffer.from("hi"));
    assert.equal(parseExecRequest({ argv: ["cat"], stdin: Uint8Array.of(1, 2) }).fields.stdin, true);
    const piped = parseExecRequest({ argv: ["cat"], stdin: "pipe" });
    assert.equal(piped.fields.stdin, true);
    assert.equal(piped.stdinData, undefined);
  });

  test("bad requests are rejected with a message that says what is wrong", () => {
    rejects(null, /must be an object/);
    rejects({}, /argv must be a non-empty array/);
    rejects({ argv: [] }, /argv must be a non-empty array/);
    rejects({ argv: ["a"], shell: "b" }, /not both/);
    rejects({ argv: ["a", 3] }, /argv\[1\] must be a string/);
    rejects({ argv: ["a\0b"] }, /NUL/);
    rejects({ argv: ["a"], env: { "A=B": "x" } }, /env name/);
    rejects({ argv: ["a"], timeoutMs: -1 }, /timeoutMs/);
    rejects({ argv: ["a"], timeoutMs: 1.5 }, /timeoutMs/);
    rejects({ argv: ["a"], stdin: 42 }, /stdin must be/);
    rejects({ argv: ["a"], color: true }, /unknown key "color"/);
    rejects({ argv: Array.from({ length: 5000 }, () => "x") }, /at most 4096/);
    rejects({ argv: ["a".repeat(2 << 20)] }, /limit/);
  });
});
