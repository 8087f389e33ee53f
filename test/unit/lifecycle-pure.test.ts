import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseProcStat, readRecords, removeRecord, writeRecord, type DomainRecord } from "../../src/vmm/domain-record.js";
import { RotatingLog } from "../../src/vmm/console-hub.js";
import { daemonPaths, domainRunDir } from "../../src/vmm/manager-paths.js";
import { hostMemoryMiB } from "../../src/vmm/manager.js";
import { formatList } from "../../src/cli/commands/list.js";
import { formatUptime } from "../../src/cli/commands/uptime.js";
import { parseEscape } from "../../src/cli/commands/console.js";
import { exitStatus } from "../../src/cli/commands/exec.js";

const tmp = (): string => mkdtempSync(join(tmpdir(), "vmstack-lc-unit-"));

test("parseProcStat reads state, start time, CPU ticks and the last CPU even when the command name holds spaces and parentheses", () => {
  const fields = ["S", "1", "2", "3", "0", "-1", "4194560", "10", "0", "0", "0", "250", "50", "0", "0", "20", "0", "3", "0", "123456", "1000", "512"];
  const s = parseProcStat(`4242 (qemu (x) 1) ${fields.join(" ")}`);
  assert.deepEqual(s, { state: "S", startTime: "123456", cpuTicks: 300, rssPages: 512, cpu: -1 }, "an old kernel's shorter line");
  // Fields 25-38, then 39 (processor).
  const longer = [...fields, ...Array.from({ length: 14 }, () => "0"), "7", "0"];
  assert.equal(parseProcStat(`4242 (qemu (x) 1) ${longer.join(" ")}`)?.cpu, 7);
  assert.equal(parseProcStat("garbage"), undefined);
});

test("domain records round-trip; unreadable records are reported and skipped", () => {
  const dir = tmp();
  try {
    const r: DomainRecord = {
      version: 1, domid: 7, name: "web", uuid: "u", config: { name: "web" }, runDir: "/r/d/7", qmpSocket: "/r/d/7/qmp.sock",
      consoleSocket: null, agentSocket: null, qemuPid: 99, qemuStartTime: "5", helperPids: [], createdAt: 1, preserved: null,
    };
    writeRecord(dir, r);
    writeFileSync(join(dir, "8.json"), "{ not json");
    writeFileSync(join(dir, "notes.txt"), "ignored");
    const reports: string[] = [];
    assert.deepEqual(readRecords(dir, (m) => reports.push(m)), [r]);
    assert.equal(reports.length, 1);
    assert.match(reports[0] ?? "", /8\.json/);
    removeRecord(dir, 7);
    assert.deepEqual(readdirSync(dir).sort(), ["8.json", "notes.txt"]);
    assert.deepEqual(readRecords(join(dir, "missing"), () => undefined), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the console log rotates by size, keeping the configured number of generations", () => {
  const dir = tmp();
  try {
    const path = join(dir, "c.log");
    const log = new RotatingLog({ path, maxBytes: 10, keep: 2 });
    for (const w of ["aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd"]) log.write(Buffer.from(w));
    log.close();
    assert.deepEqual(readdirSync(dir).sort(), ["c.log", "c.log.1", "c.log.2"]);
    assert.equal(readFileSync(path, "utf8"), "dddddddd");
    assert.equal(readFileSync(`${path}.1`, "utf8"), "cccccccc");
    assert.equal(readFileSync(`${path}.2`, "utf8"), "bbbbbbbb");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("daemon paths follow VMSTACK_STATE_DIR and VMSTACK_RUN_DIR, flags win over both", () => {
  const p = daemonPaths({ VMSTACK_STATE_DIR: "/st", VMSTACK_RUN_DIR: "/rn" });
  assert.equal(p.socket, "/rn/vmstackd.sock");
  assert.equal(p.domainsDir, "/st/domains");
  assert.equal(p.xenstoreSocket, "/rn/xenstored/socket");
  assert.equal(p.xenstoreStateDir, "/st/xenstored");
  assert.equal(domainRunDir(p, 3), "/rn/d/3");
  assert.equal(daemonPaths({ VMSTACK_RUN_DIR: "/rn" }, { runDir: "/flag" }).socket, "/flag/vmstackd.sock");
});

test("host memory comes from MemTotal in MiB", () => {
  assert.equal(hostMemoryMiB("MemTotal:       24683520 kB\nMemFree: 1 kB\n"), 24105);
});

test("list prints xl's columns; uptime prints h:mm:ss and days", () => {
  const out = formatList([
    { name: "Domain-0", domid: 0, uuid: "0", memoryMiB: 1024, maxmemMiB: 1024, vcpus: 2, state: "r-----", cpuSeconds: 12.34, uptimeSeconds: 1, pid: 1 },
    { name: "mrkitty", domid: 1, uuid: "u", memoryMiB: 512, maxmemMiB: 512, vcpus: 1, state: "-b----", cpuSeconds: 3.21, uptimeSeconds: 1, pid: 2 },
  ]);
  assert.match(out, /^Name\s+ID\s+Mem VCPUs\s+State\s+Time\(s\)\n/);
  assert.match(out, /^mrkitty\s+1\s+512\s+1\s+-b----\s+3\.2$/m);
  assert.equal(formatUptime(3725.9), "1:02:05");
  assert.equal(formatUptime(90061), "1 day, 1:01:01");
});

test("console escapes: ^] is 0x1d, ^A is 0x01, a single character is itself, anything else is a usage error", () => {
  assert.equal(parseEscape("^]"), 0x1d);
  assert.equal(parseEscape("^a"), 0x01);
  assert.equal(parseEscape("~"), 0x7e);
  assert.throws(() => parseEscape("ctrl-x"), /-e expects/);
});

test("exec's exit status: the command's code, or 128 + the signal's number", () => {
  assert.equal(exitStatus(3, null), 3);
  assert.equal(exitStatus(null, "SIGKILL"), 137);
  assert.equal(exitStatus(null, "SIGTERM"), 143);
  assert.equal(exitStatus(null, null), 129);
});
