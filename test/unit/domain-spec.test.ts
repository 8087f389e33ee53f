/**
 * DomainSpec: defaults from the option table, unknown keys with did-you-mean, every problem at
 * once with where it came from, the qemu-vm.nix-style assertions and warnings, JSON positions,
 * command-line overrides, and docs/options.md being current.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  checkDomainSpec,
  DomainConfigError,
  type DomainConfig,
  type DomainSpec,
  formatProblem,
  loadDomainText,
  parseDomainSpec,
  renderOptionsDoc,
  stableMac,
} from "../../src/domain/index.js";

const kernel = { kernel: "/k/vmlinux", cmdline: "console=ttyS0" };

function problemsOf(spec: unknown): string[] {
  return checkDomainSpec(spec).problems.map(formatProblem);
}

function errorOf(spec: unknown): DomainConfigError {
  try {
    parseDomainSpec(spec);
  } catch (e) {
    assert.ok(e instanceof DomainConfigError);
    return e;
  }
  assert.fail("expected a DomainConfigError");
}

test("parseDomainSpec fills qemu-vm.nix's defaults and derives the rest", () => {
  const { config, warnings } = parseDomainSpec({ name: "a", boot: kernel });
  assert.deepEqual(warnings, []);
  assert.equal(config.memory, 1024);
  assert.equal(config.maxmem, 1024);
  assert.equal(config.vcpus, 1);
  assert.equal(config.maxvcpus, 1);
  assert.equal(config.machine, "q35");
  assert.equal(config.rng, true);
  assert.equal(config.graphics, false);
  assert.equal(config.onReboot, "restart");
  assert.equal(config.nics.length, 1);
  const nic = config.nics[0];
  assert.ok(nic && nic.type === "user");
  assert.equal(nic.id, "net0");
  assert.equal(nic.mac, stableMac("a", 0));
  assert.deepEqual(nic.forwards, []);
  assert.equal(config.boot.firmware, "bios");
});

test("derived disk defaults: qcow2 for overlays and scratch disks, read-only for cdroms", () => {
  const { config } = parseDomainSpec({
    name: "a",
    boot: kernel,
    disks: [{ path: "/o.qcow2", backing: "/b.qcow2" }, { scratch: true, size: 10 }, { interface: "ide", media: "cdrom" }, { path: "/r.img" }],
  });
  assert.deepEqual(
    config.disks.map((d) => [d.id, d.format, d.readOnly]),
    [["disk0", "qcow2", false], ["disk1", "qcow2", false], ["disk2", "raw", true], ["disk3", "raw", false]],
  );
});

test("the typed API accepts a spec object and returns a DomainConfig", () => {
  const spec: DomainSpec = { name: "typed", memory: 256, nics: [{ type: "private", network: "lan" }], boot: kernel };
  const config: DomainConfig = parseDomainSpec(spec).config;
  assert.equal(config.nics[0]?.type, "private");
});

test("the types inferred from the option table reject wrong shapes at compile time", () => {
  // Each @ts-expect-error fails the build if the inferred type were too loose (e.g. any).
  // @ts-expect-error memory is a number of MiB
  const a: DomainSpec = { name: "x", memory: "1G" };
  // @ts-expect-error name is required
  const b: DomainSpec = { memory: 512 };
  // @ts-expect-error a private NIC needs its network name
  const c: DomainSpec = { name: "x", nics: [{ type: "private" }] };
  // @ts-expect-error disk interfaces are virtio, scsi or ide
  const d: DomainSpec = { name: "x", disks: [{ path: "/a", interface: "sata" }] };
  const config = parseDomainSpec({ name: "x", boot: kernel }).config;
  // @ts-expect-error a validated config is read-only
  config.memory = 1;
  const derived: number = config.maxmem; // derived options are always present in a DomainConfig
  assert.ok([a, b, c, d].length === 4 && derived === 1024);
});

test("stable MACs are locally administered unicast and differ per NIC and per domain", () => {
  const macs = [stableMac("a", 0), stableMac("a", 1), stableMac("b", 0)];
  assert.equal(new Set(macs).size, 3);
  for (const m of macs) assert.match(m, /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.equal(stableMac("a", 0), stableMac("a", 0));
});

test("an unknown key is rejected with a did-you-mean, at any depth", () => {
  const problems = problemsOf({ name: "a", memroy: 512, boot: { ...kernel, kernal: "/x" }, disks: [{ path: "/a", fromat: "raw" }] });
  assert.ok(problems.some((p) => p.includes("unknown option 'memroy' (did you mean 'memory'?)") && p.includes("[memroy]")));
  assert.ok(problems.some((p) => p.includes("unknown option 'kernal' (did you mean 'kernel'?)") && p.includes("[boot.kernal]")));
  assert.ok(problems.some((p) => p.includes("(did you mean 'format'?)") && p.includes("[disks[0].fromat]")));
});

test("every schema problem is reported at once", () => {
  const e = errorOf({ memory: "lots", vcpus: 0, machine: "q53", disks: [{ interface: "sata" }], nics: [{ type: "tap" }] });
  const text = e.problems.map(formatProblem).join("\n");
  assert.match(text, /missing required option 'name'/);
  assert.match(text, /expected integer \(MiB\) ≥ 16, got "lots"/);
  assert.match(text, /0 is below the minimum 1/);
  assert.match(text, /got "q53" \(did you mean 'q35'\?\)/);
  assert.match(text, /"sata"/);
  assert.match(text, /expected one of "user" \| "private" \| "stream", got "tap"/);
  assert.ok(e.problems.length >= 6);
  assert.equal(e.code, "DOMAIN_CONFIG_INVALID");
});

test("schema errors and cross-option errors come back together in one report", () => {
  const problems = problemsOf({ name: "a", boot: kernel, memroy: 5, memory: 512, maxmem: 256, nics: [{ type: "user", forwards: [{ from: "guest", guestAddress: "1.2.3.4", guestPort: 1, hostPort: 1 }] }] });
  assert.ok(problems.some((p) => p.includes("unknown option 'memroy'")));
  assert.ok(problems.some((p) => p.includes("maxmem (256 MiB) must be at least memory")));
  assert.ok(problems.some((p) => p.includes("10.0.2.0/24")));
});

test("a malformed disk or NIC skips only its own checks: the other items are still validated", () => {
  const problems = problemsOf({
    name: "a",
    boot: kernel,
    disks: [{ path: "/a", format: "qcow9" }, { media: "cdrom" }],
    nics: [{ type: "user", mac: 5 }, { type: "user", forwards: [{ from: "guest", guestAddress: "10.0.3.1", guestPort: 1, hostPort: 1 }] }],
  });
  assert.ok(problems.some((p) => p.includes('"qcow9"') && p.includes("[disks[0].format]")));
  assert.ok(problems.some((p) => p.includes("a cdrom needs interface ide or scsi") && p.includes("[disks[1].interface]")));
  assert.ok(problems.some((p) => p.includes("expected MAC address") && p.includes("[nics[0].mac]")));
  assert.ok(problems.some((p) => p.includes("10.0.2.0/24") && p.includes("[nics[1].forwards[0].guestAddress]")));
});

test("guest-to-host forwards must be tcp and target a 10.0.2.x address (qemu-vm.nix's assertions)", () => {
  const problems = problemsOf({
    name: "a",
    boot: kernel,
    nics: [{ type: "user", forwards: [{ from: "guest", proto: "udp", guestAddress: "192.168.1.1", guestPort: 53, hostPort: 53 }] }],
  });
  assert.ok(problems.some((p) => p.includes("must use tcp") && p.includes("[nics[0].forwards[0].proto]")));
  assert.ok(problems.some((p) => p.includes("10.0.2.0/24") && p.includes("[nics[0].forwards[0].guestAddress]")));
});

test("maxmem below memory and maxvcpus below vcpus are errors; maxmem above memory warns about the balloon", () => {
  const problems = problemsOf({ name: "a", boot: kernel, memory: 512, maxmem: 256, vcpus: 4, maxvcpus: 2 });
  assert.ok(problems.some((p) => p.includes("error: maxmem (256 MiB) must be at least memory (512 MiB)")));
  assert.ok(problems.some((p) => p.includes("error: maxvcpus (2) must be at least vcpus (4)")));
  const { warnings } = parseDomainSpec({ name: "a", boot: kernel, memory: 512, maxmem: 1024 });
  assert.match(formatProblem(warnings[0] as never), /balloon/);
});

test("a direct kernel with an explicitly chosen bootloader warns that the bootloader will not run", () => {
  const { warnings } = parseDomainSpec({ name: "a", boot: { ...kernel, firmware: "uefi" }, disks: [{ path: "/d.img" }] });
  assert.ok(warnings.some((w) => w.message.includes("bootloader on the disks will not run")));
});

test("boot assertions: initrd without kernel, nothing to boot, guestGrub with a kernel", () => {
  assert.ok(problemsOf({ name: "a", boot: { initrd: "/i" } }).some((p) => p.includes("boot.initrd needs boot.kernel")));
  assert.ok(problemsOf({ name: "a" }).some((p) => p.includes("nothing to boot")));
  assert.ok(problemsOf({ name: "a", boot: { kernel: "/k", guestGrub: {} }, disks: [{ path: "/d" }] }).some((p) => p.includes("exclude each other")));
  assert.ok(problemsOf({ name: "a", boot: { guestGrub: { disk: 2 } }, disks: [{ path: "/d" }] }).some((p) => p.includes("has 1 disk(s)")));
});

test("disk assertions: cdroms, scratch disks, overlays, IDE slots and read-only IDE disks", () => {
  const problems = problemsOf({
    name: "a",
    machine: "pc",
    boot: kernel,
    disks: [
      { media: "cdrom" },
      { scratch: true },
      { path: "/o", backing: "/b", format: "raw" },
      { path: "/1", interface: "ide" },
      { path: "/2", interface: "ide" },
      { path: "/3", interface: "ide" },
      { path: "/4", interface: "ide", readOnly: true },
      { path: "/5", interface: "ide" },
      {},
    ],
  });
  const want = ["a cdrom needs interface ide or scsi", "a scratch disk needs a size", "overlay is qcow2, not raw", "2 IDE slots", "cannot be read-only", "a disk needs a path"];
  for (const w of want) assert.ok(problems.some((p) => p.includes(w.replace("2 IDE", "4 IDE"))), `missing '${w}' in\n${problems.join("\n")}`);
});

test("microvm rejects what it cannot do: firmware boot, IDE, graphics, shares", () => {
  const problems = problemsOf({ name: "a", machine: "microvm", graphics: true, disks: [{ path: "/d", interface: "ide" }], shares: [{ tag: "t", source: "/s" }] });
  for (const w of ["boots only a direct kernel", "only virtio disks", "no display device", "virtiofs shares need PCI"]) assert.ok(problems.some((p) => p.includes(w)), w);
});

test("duplicate ids, MACs, share tags and host ports are errors; a multicast MAC is an error", () => {
  const problems = problemsOf({
    name: "a",
    boot: kernel,
    disks: [{ id: "x", path: "/a" }, { id: "x", path: "/b" }],
    shares: [{ tag: "t", source: "/1" }, { tag: "t", source: "/2" }],
    nics: [
      { type: "user", mac: "52:54:00:00:00:01", forwards: [{ hostPort: 80, guestPort: 80 }, { hostPort: 80, guestPort: 81 }] },
      { type: "private", network: "n", mac: "52:54:00:00:00:01" },
      { type: "private", network: "n", mac: "01:00:5e:00:00:01" },
    ],
  });
  for (const w of ["device id 'x' is used twice", "share tag 't' is used twice", "MAC address 52:54:00:00:00:01 is used twice", "port 80 is forwarded twice", "multicast address"])
    assert.ok(problems.some((p) => p.includes(w)), w);
});

test("a JSON domain file's problems point at file:line:col", () => {
  const text = '{\n  "name": "j",\n  "boot": { "kernel": "/k" },\n  "memory": 8,\n  "disks": [ { "path": "/a", "fromat": "raw" } ]\n}\n';
  try {
    loadDomainText(text, "dom.json");
    assert.fail("expected errors");
  } catch (e) {
    assert.ok(e instanceof DomainConfigError);
    assert.match(e.message, /dom\.json:4:3: error: 8 is below the minimum 16 \[memory\]/);
    assert.match(e.message, /dom\.json:5:30: error: unknown option 'fromat' \(did you mean 'format'\?\)/);
  }
});

test("a JSON syntax error says line:col and what was expected", () => {
  assert.throws(() => loadDomainText('{\n  "name": "j",\n  "memory" 5\n}', "bad.json"), /bad\.json:3:12: error: expected ':' after key "memory"/);
});

test("command-line overrides win over the file, for JSON paths and xl settings alike", () => {
  const json = loadDomainText('{"name":"j","boot":{"kernel":"/k"}}', "d.json", { overrides: ["memory=256", "boot.cmdline=console=ttyS0 quiet", "disks[0].path=/x.img"] });
  assert.equal(json.config.memory, 256);
  assert.equal(json.config.boot.cmdline, "console=ttyS0 quiet");
  assert.equal(json.config.disks[0]?.path, "/x.img");
  const xl = loadDomainText('name="x"\ntype="pvh"\nkernel="/k"\nmemory=512\n', "d.cfg", { overrides: ["memory=128", 'vif=["bridge=lan"]'] });
  assert.equal(xl.config.memory, 128);
  assert.equal(xl.config.nics[0]?.type, "private");
});

test("a bad override names the command line as its origin", () => {
  assert.throws(() => loadDomainText('name="x"\ntype="pvh"\nkernel="/k"\n', "d.cfg", { overrides: ["memory=="] }), /<command line>:1:8: error: expected a value/);
});

test("docs/options.md is generated from the option table and is current (npm run docs:options)", () => {
  const onDisk = readFileSync(new URL("../../../docs/options.md", import.meta.url), "utf8");
  assert.equal(onDisk, renderOptionsDoc(), "docs/options.md is stale: run `npm run docs:options`");
  assert.match(onDisk, /\| `nics\[\]\{type=user\}\.forwards\[\]\.from` \|/);
});

test("checkDomainSpec reports problems and never throws, however a spec is mangled", () => {
  const everything = JSON.parse(readFileSync(new URL("../../../test/golden/argv/everything.json", import.meta.url), "utf8")) as { spec: unknown };
  const junk: unknown[] = [null, 0, -1, 1.5, "", "x", true, [], {}, [1, "a"], { type: "user" }, { from: "guest" }];
  // A fixed linear congruential generator: the same 400 mutations on every run.
  let seed = 12345;
  const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const paths = (v: unknown, prefix: (string | number)[] = []): (string | number)[][] =>
    typeof v === "object" && v !== null ? [prefix, ...Object.entries(v).flatMap(([k, c]) => paths(c, [...prefix, Array.isArray(v) ? Number(k) : k]))] : [prefix];
  const all = paths(everything.spec).filter((p) => p.length > 0);
  for (let i = 0; i < 400; i++) {
    const spec = structuredClone(everything.spec) as Record<string | number, unknown>;
    const path = all[rand(all.length)] as (string | number)[];
    let o = spec;
    for (const k of path.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
    o[path[path.length - 1] as string | number] = junk[rand(junk.length)];
    const r = checkDomainSpec(spec);
    if (r.config === undefined) assert.ok(r.problems.some((p) => p.severity === "error"), `no error for a mangled ${path.join(".")}`);
  }
});
