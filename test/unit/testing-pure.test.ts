/** The pure parts of vmstack/testing: outcomes, expect, JUnit XML, the human log, networks, snapshot keys, timeouts. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { AssertionError } from "node:assert";
import {
  MachineCrashed,
  OUTCOME_EXIT,
  TestFailure,
  TestSkipped,
  classifyError,
  defaultTimeouts,
  expect,
  humanLine,
  junitXml,
  worstOutcome,
  type Stamped,
} from "../../src/testing/index.js";
import { hostsFile, macAddress, networkScript, parseMachineName, parseVlan, vlanAddress, vlanEndpoint } from "../../src/testing/network.js";
import { snapshotKey } from "../../src/testing/snapshot.js";
import { parseMachineOptions } from "../../src/testing/machine-options.js";
import { commandFailure, crashError, portProbe, timeoutFailure } from "../../src/testing/machine-messages.js";
import { VmstackError } from "../../src/lib/errors.js";

test("what a test throws decides its outcome: failure, skip, crash, infrastructure error", () => {
  assert.equal(classifyError(new TestFailure("x")), "FAILURE");
  assert.equal(classifyError(new AssertionError({ message: "x" })), "FAILURE");
  assert.equal(classifyError(new TestSkipped("no kvm")), "SKIP");
  assert.equal(classifyError(new MachineCrashed("panic")), "CRASH");
  assert.equal(classifyError(new VmstackError("BOOT_FAILED", "no boot")), "ERROR");
  assert.equal(classifyError(new TypeError("bug in the script")), "ERROR");
});

test("the worst outcome of a run picks the exit status, and each bad outcome has its own", () => {
  assert.equal(worstOutcome([]), "SUCCESS");
  assert.equal(worstOutcome(["SUCCESS", "SKIP"]), "SKIP");
  assert.equal(worstOutcome(["FAILURE", "CRASH", "ERROR"]), "CRASH");
  const codes = [OUTCOME_EXIT.FAILURE, OUTCOME_EXIT.ERROR, OUTCOME_EXIT.CRASH];
  assert.equal(new Set(codes).size, 3);
  assert.ok(!codes.includes(0) && !codes.includes(2));
  assert.equal(OUTCOME_EXIT.SKIP, 0);
});

test("expect passes silently and throws TestFailure naming both sides on a mismatch", () => {
  expect("hello world").toContain("hello");
  expect([1, 2]).toEqual([1, 2]);
  expect("abc").toMatch(/b/);
  expect(3).not.toBe(4);
  assert.throws(() => expect("bye").toContain("hello"), (e: unknown) => e instanceof TestFailure && /'bye' to contain 'hello'/.test(e.message));
  assert.throws(() => expect(1).not.toBe(1), (e: unknown) => e instanceof TestFailure && /not to be 1/.test(e.message));
});

test("JUnit XML has one testcase per test, failures and errors apart, and escapes console junk", () => {
  const xml = junitXml("suite <1>", [
    { name: "ok", file: "a.ts", outcome: "SUCCESS", ms: 1500 },
    { name: "bad", file: "a.ts", outcome: "FAILURE", ms: 10, message: 'expected "x" & <y>\nmore' },
    { name: "boom", file: "a.ts", outcome: "CRASH", ms: 10, message: "panic\x1b[0m" },
    { name: "later", file: "a.ts", outcome: "SKIP", ms: 0, message: "no kvm" },
  ]);
  assert.match(xml, /<testsuite name="suite &lt;1&gt;" tests="4" failures="1" errors="1" skipped="1"/);
  assert.match(xml, /<testcase classname="a.ts" name="ok" time="1.500"\/>/);
  assert.match(xml, /<failure message="expected &quot;x&quot; &amp; &lt;y&gt;" type="FAILURE">/);
  assert.match(xml, /<error message="panic\[0m" type="CRASH">/);
  assert.match(xml, /<skipped message="no kvm"\/>/);
  assert.ok(!xml.includes("\x1b"));
});

test("the human log has one line per step with its duration and dims console lines by machine", () => {
  const at = { t: 0, at: "2026-01-01T00:00:00.000Z" };
  const step: Stamped = { ...at, type: "step", test: "t", machine: "server", what: 'succeed "true"', ms: 1234, ok: true };
  assert.equal(humanLine(step, { color: false, console: true }), '  server: succeed "true" (1.23 s)');
  const cons: Stamped = { ...at, type: "console", test: "t", machine: "client", line: "hello" };
  assert.equal(humanLine(cons, { color: true, console: true }), "\x1b[2m    client # hello\x1b[0m");
  assert.equal(humanLine(cons, { color: false, console: false }), undefined);
  const held: Stamped = { ...at, type: "command", test: "t", machine: "server", command: "sleep 9 &", exitCode: 0, signal: null, timedOut: false, outputHeldOpen: true, ms: 300, stdoutBytes: 0, stderrBytes: 0 };
  assert.match(humanLine(held, { color: false, console: false }) ?? "", /server: note: a background process kept the command's output open/);
  assert.equal(humanLine({ ...held, outputHeldOpen: false }, { color: false, console: false }), undefined);
  const end: Stamped = { ...at, type: "test-end", test: "t", outcome: "FAILURE", ms: 2000, message: "line1\nline2" };
  assert.equal(humanLine(end, { color: false, console: false }), "✘ t: FAILURE (2.00 s)\n    line1\n    line2");
});

test("VLAN endpoints are multicast, differ between runs and VLANs, and addresses follow declaration order", () => {
  const a = vlanEndpoint(1, 1);
  assert.match(a.group, /^239\.\d+\.\d+\.\d+$/);
  assert.ok(a.port >= 20000 && a.port < 50000);
  assert.notDeepEqual(vlanEndpoint(1, 2), a);
  assert.notDeepEqual(vlanEndpoint(2, 1), a);
  assert.deepEqual(vlanEndpoint(1, 1), a);
  assert.equal(vlanAddress(3, 0), "192.168.3.1");
  assert.throws(() => parseVlan(0), /1 to 254/);
  assert.throws(() => parseMachineName("Server 1"), /lowercase/);
});

test("MACs are stable per machine and card, locally administered and distinct", () => {
  const m = macAddress("server", "vlan1");
  assert.equal(m, macAddress("server", "vlan1"));
  assert.match(m, /^52:54(:[0-9a-f]{2}){4}$/);
  assert.notEqual(m, macAddress("client", "vlan1"));
  assert.notEqual(m, macAddress("server", "vlan2"));
});

test("the guest network script finds cards by MAC and fails when one is missing", () => {
  const s = networkScript("server", [{ id: "vlan1", mac: "52:54:00:00:00:01", address: "192.168.1.1/24" }]);
  assert.match(s, /^echo 'server' >\/proc\/sys\/kernel\/hostname$/m);
  assert.match(s, /52:54:00:00:00:01\) ip addr add 192\.168\.1\.1\/24 dev "\$dev" && ip link set "\$dev" up \|\| exit 1/);
  assert.match(s, /\[ "\$found" = 1 \]/);
  assert.equal(hostsFile("a", [{ name: "a", address: "192.168.1.1" }, { name: "b", address: "192.168.1.2" }]), "127.0.0.1 localhost\n127.0.1.1 a\n192.168.1.2 b\n");
});

test("snapshot keys change with anything that must match between save and restore", () => {
  const base = { name: "server", memoryMiB: 256, cpus: 1, nicIds: ["vlan1"], addresses: ["1=192.168.1.1"], hosts: "127.0.0.1 localhost\n", imageKey: "k", accel: "tcg" };
  const k = snapshotKey(base);
  assert.equal(k, snapshotKey({ ...base }));
  for (const change of [{ memoryMiB: 512 }, { nicIds: ["vlan1", "nat"] }, { imageKey: "other" }, { name: "client" }, { addresses: ["1=192.168.1.2"] }]) {
    assert.notEqual(snapshotKey({ ...base, ...change }), k);
  }
});

test("default timeouts are longer under TCG and scale with VMSTACK_TEST_TIMEOUT_SCALE", () => {
  const kvm = defaultTimeouts("kvm", {});
  const tcg = defaultTimeouts("tcg", {});
  assert.ok(tcg.waitMs > kvm.waitMs && tcg.commandMs > kvm.commandMs && tcg.bootMs > kvm.bootMs);
  assert.equal(defaultTimeouts("tcg", { VMSTACK_TEST_TIMEOUT_SCALE: "2" }).waitMs, tcg.waitMs * 2);
});

test("machine options are checked where they enter, naming the machine and the option", () => {
  assert.deepEqual(parseMachineOptions("s", undefined), { network: [{ vlan: 1 }] });
  assert.deepEqual(parseMachineOptions("s", { memory: 128 }), { memory: 128, network: [{ vlan: 1 }] });
  assert.deepEqual(parseMachineOptions("s", { network: [] }), { network: [] });
  assert.deepEqual(parseMachineOptions("s", { memory: 512, network: [parseVlan(2)], nat: true }), { memory: 512, network: [{ vlan: 2 }], nat: true });
  assert.throws(() => parseMachineOptions("s", { memroy: 512 }), /machine "s": unknown option "memroy"/);
  assert.throws(() => parseMachineOptions("s", { memory: "512" }), /memory must be an integer/);
  assert.throws(() => parseMachineOptions("s", { network: [parseVlan(1), parseVlan(1)] }), /listed twice/);
  assert.throws(() => parseMachineOptions("s", { network: [1] }), /vlan\(n\)/);
});

test("a crash message quotes the guest's panic line and ends with the console tail", () => {
  const console = "booting\nKernel panic - not syncing: sysrq triggered crash\n---[ end Kernel panic ]---\n";
  const e = crashError("box", { code: 0, signal: null }, console);
  assert.match(e.message, /^box stopped unexpectedly \(guest kernel panic: "Kernel panic - not syncing: sysrq triggered crash"\)\nlast console lines:\n {2}booting/);
  assert.match(crashError("box", { code: null, signal: "SIGKILL" }, "").message, /QEMU killed by SIGKILL\)\n\(the machine printed nothing on its console\)/);
});

test("timeout and command failures say what was expected and show the last output", () => {
  const last = { exitCode: 1, signal: null, stdout: "", stderr: "no such file\n", timedOut: false, outputHeldOpen: false };
  const t = timeoutFailure("server", 'waitForFile("/x")', 1500, "line one\n", last);
  assert.equal(t.message, 'server: timed out after 1500 ms waiting for waitForFile("/x")\nlast try: exit 1, stderr "no such file"\nlast console lines:\n  line one');
  const c = commandFailure("server", "succeed", ["ls", "/x"], { ...last, stdout: "partial\n" }, "to exit 0");
  assert.equal(c.message, 'server: succeed("ls /x"): expected the command to exit 0, got exit status 1\nstdout: partial\nstderr: no such file');
});

test("port probes read the guest's socket table in hex, or connect when given an address", () => {
  assert.match(String(portProbe(80, undefined)), /\$2 ~ \/:0050\$\//);
  assert.deepEqual(portProbe(8080, "server"), ["nc", "-w", "1", "server", "8080"]);
  assert.throws(() => portProbe(70000, undefined), /not a TCP port/);
});
