/**
 * Save files without a VM: the format's checks (magic, version, lengths, checksum, header), the
 * payload path through zstd and back, and the xendomains logic (domains start|stop) against a
 * scripted vmstackd.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { SAVE_PREFIX_BYTES, encodeHeader, encodePrefix, parsePrefix, type SaveHeader } from "../../src/vmm/save-file.js";
import { bootFileFacts, bootFileProblem, checkSaveFile, sendPayload, writePayload } from "../../src/vmm/save-stream.js";
import { domainsSettings, domainsStart, domainsStop, type DomainsProgress } from "../../src/vmm/xendomains.js";
import { parseRequest, type DomainInfo, type Request } from "../../src/vmm/api/protocol.js";
import { VmstackError, isVmstackError } from "../../src/lib/errors.js";

const dir = mkdtempSync(join(tmpdir(), "vmstack-savefile-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const header: SaveHeader = {
  name: "demo",
  uuid: "6f0b3c1e-0000-4000-8000-000000000001",
  config: { name: "demo", memory: 128 },
  accel: "tcg",
  qemuVersion: "7.2.22",
  savedAt: "2026-11-23T12:00:00.000Z",
  compression: "none",
  wasRunning: true,
  bootFiles: [{ role: "kernel", path: "/boot/vmlinuz", size: 3, mtimeMs: 1, sha256: "ab".repeat(32) }],
};

/** A well-formed save file around `payload`, as the saver writes it. */
function saveFileBytes(payload: Buffer, h: SaveHeader = header): Buffer {
  const hb = encodeHeader(h);
  const digest = createHash("sha256").update(hb).update(payload).digest();
  return Buffer.concat([encodePrefix(hb.length, payload.length, digest), hb, payload]);
}

function writeCase(name: string, bytes: Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

async function refusedWith(path: string, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(checkSaveFile(path), (e: unknown) => {
    assert.ok(isVmstackError(e, code), `expected ${code}, got ${String(e)}`);
    assert.match((e as Error).message, pattern);
    assert.ok((e as Error).message.includes(path), "the message names the file");
    return true;
  });
}

test("a well-formed save file passes every check and yields its header and payload position", async () => {
  const payload = randomBytes(5000);
  const path = writeCase("good.save", saveFileBytes(payload));
  const c = await checkSaveFile(path);
  assert.deepEqual(c.header, header);
  assert.equal(c.payloadLength, 5000);
  assert.deepEqual(readFileSync(path).subarray(c.payloadOffset), payload);
});

test("a save file with one flipped byte in its payload is refused as corrupt (checksum)", async () => {
  const bytes = saveFileBytes(randomBytes(5000));
  bytes[bytes.length - 100] = (bytes[bytes.length - 100] as number) ^ 0x01;
  await refusedWith(writeCase("flipped.save", bytes), "SAVE_FILE_CORRUPT", /checksum does not match/);
});

test("a save file with a damaged header is refused as corrupt, not read as a strange config", async () => {
  const bytes = saveFileBytes(randomBytes(100));
  bytes[SAVE_PREFIX_BYTES + 3] = 0x7b;
  await refusedWith(writeCase("header.save", bytes), "SAVE_FILE_CORRUPT", /checksum/);
});

test("a truncated save file is refused, naming the size it has and the size it should have", async () => {
  const bytes = saveFileBytes(randomBytes(5000));
  await refusedWith(writeCase("short.save", bytes.subarray(0, bytes.length - 1)), "SAVE_FILE_TRUNCATED", /truncated: \d+ bytes, the file says \d+/);
  await refusedWith(writeCase("prefix-only.save", bytes.subarray(0, 40)), "SAVE_FILE_TRUNCATED", /shorter than the 64-byte prefix/);
});

test("bytes appended after the payload make the file corrupt", async () => {
  await refusedWith(writeCase("long.save", Buffer.concat([saveFileBytes(randomBytes(10)), Buffer.from("x")])), "SAVE_FILE_CORRUPT", /the file says/);
});

test("a foreign file (text, a raw QEMU migration stream, an empty file) is refused as not a save file", async () => {
  await refusedWith(writeCase("text.save", Buffer.from("name = 'demo'\nmemory = 128\n")), "SAVE_FILE_FOREIGN", /not a vmstack save file/);
  // QEMU's own stream starts with QEVM (QEMU_VM_FILE_MAGIC): what `migrate exec:cat > f` writes.
  await refusedWith(writeCase("qemu.save", Buffer.concat([Buffer.from("QEVM\0\0\0\x03"), randomBytes(200)])), "SAVE_FILE_FOREIGN", /not a vmstack save file/);
  await refusedWith(writeCase("empty.save", Buffer.alloc(0)), "SAVE_FILE_FOREIGN", /not a vmstack save file/);
  await assert.rejects(checkSaveFile(join(dir, "nosuch.save")), (e: unknown) => isVmstackError(e, "SAVE_FILE_MISSING"));
  await assert.rejects(checkSaveFile(dir), (e: unknown) => isVmstackError(e, "SAVE_FILE_FOREIGN") || isVmstackError(e, "SAVE_FILE_UNREADABLE"));
});

test("a save file of a newer format version is refused with both versions named", () => {
  const bytes = saveFileBytes(randomBytes(10));
  bytes.writeUInt32LE(2, 16);
  assert.throws(() => parsePrefix(bytes.subarray(0, 64), bytes.length, "f"), (e: unknown) => isVmstackError(e, "SAVE_FILE_VERSION") && /version 2; this vmstack reads version 1/.test((e as Error).message));
});

test("a header with a wrong field is named in the error", async () => {
  const bad = { ...header, compression: "lzma" } as unknown as SaveHeader;
  await refusedWith(writeCase("badfield.save", saveFileBytes(randomBytes(10), bad)), "SAVE_FILE_CORRUPT", /header's compression/);
});

for (const compression of ["zstd", "none"] as const) {
  test(`a migration stream written through ${compression} reads back byte for byte, and the checksum covers what is on disk`, async () => {
    // Mostly zero pages with some noise, like a guest's memory.
    const stream = Buffer.concat([randomBytes(70_000), Buffer.alloc(2 << 20), randomBytes(1000)]);
    const path = join(dir, `stream-${compression}.save`);
    const h = { ...header, compression };
    const hb = encodeHeader(h);
    const fh = await open(path, "w");
    await fh.write(encodePrefix(hb.length, 0), 0, SAVE_PREFIX_BYTES, 0);
    await fh.write(hb, 0, hb.length, SAVE_PREFIX_BYTES);
    const hash = createHash("sha256").update(hb);
    const n = await writePayload(Readable.from([stream.subarray(0, 100_000), stream.subarray(100_000)]), fh, SAVE_PREFIX_BYTES + hb.length, hash, compression);
    await fh.write(encodePrefix(hb.length, n, hash.digest()), 0, SAVE_PREFIX_BYTES, 0);
    await fh.close();
    if (compression === "zstd") assert.ok(n < stream.length / 10, `zero pages compress (${n} bytes for ${stream.length})`);
    const c = await checkSaveFile(path);
    const got: Buffer[] = [];
    await sendPayload(path, c.payloadOffset, c.payloadLength, compression, new Writable({ write: (b: Buffer, _e, done) => (got.push(b), done()) }));
    assert.ok(Buffer.concat(got).equals(stream));
  });
}

test("domains settings: flags win over the environment, which wins over the defaults; a bad mode is refused", () => {
  assert.deepEqual(domainsSettings({}, {}), { autoDir: "/etc/vmstack/auto", saveDir: "/var/lib/vmstack/save", mode: "save", timeoutMs: 120_000 });
  const env = { VMSTACK_AUTO_DIR: "/a", VMSTACK_SAVE_DIR: "/s", VMSTACK_STOP_MODE: "shutdown", VMSTACK_STOP_TIMEOUT: "30" };
  assert.deepEqual(domainsSettings(env, {}), { autoDir: "/a", saveDir: "/s", mode: "shutdown", timeoutMs: 30_000 });
  assert.deepEqual(domainsSettings(env, { autoDir: "/x", saveDir: "/y", mode: "save", timeoutSeconds: 5 }), { autoDir: "/x", saveDir: "/y", mode: "save", timeoutMs: 5000 });
  assert.throws(() => domainsSettings({}, { mode: "hibernate" }), /stop mode 'hibernate' is not one of save, shutdown/);
});

/** A scripted vmstackd: a set of running domains; saves and restores move names between it and files. */
function fakeDaemon(o: { failRestore?: string; failSave?: string; hangSave?: string } = {}) {
  const running = new Map<string, number>();
  let next = 1;
  const requests: Request[] = [];
  const info = (name: string): DomainInfo => ({ name, domid: running.get(name) as number, uuid: "u", memoryMiB: 128, maxmemMiB: 128, vcpus: 1, state: "-b----", cpuSeconds: 0, uptimeSeconds: 0, pid: 1 });
  const byRef = (ref: string): string => {
    for (const [n, id] of running) if (String(id) === ref || n === ref) return n;
    throw new VmstackError("NO_SUCH_DOMAIN", `no domain '${ref}'`);
  };
  const request = async (req: Request, signal?: AbortSignal): Promise<unknown> => {
    requests.push(req);
    switch (req.op) {
      case "list":
        return [{ ...info("x"), name: "Domain-0", domid: 0 }, ...[...running.keys()].map(info)];
      case "restore": {
        const name = JSON.parse(readFileSync(req.file, "utf8")).name as string;
        if (name === o.failRestore) throw new VmstackError("SAVE_FILE_CORRUPT", `${req.file}: corrupt`);
        running.set(name, next++);
        return info(name);
      }
      case "create": {
        const name = req.config["name"] as string;
        running.set(name, next++);
        return info(name);
      }
      case "save": {
        const name = byRef(req.domain);
        if (name === o.failSave) throw new VmstackError("SAVE_UNSUPPORTED", `cannot save ${name}`);
        if (name === o.hangSave) {
          // A save that never finishes; the timer stands for the daemon's socket keeping the process alive (AbortSignal.timeout's timer does not).
          const alive = setTimeout(() => undefined, 10_000);
          await new Promise((_r, reject) => signal?.addEventListener("abort", () => reject(new VmstackError("ABORTED", "interrupted")))).finally(() => clearTimeout(alive));
        }
        writeFileSync(req.file, JSON.stringify({ name }));
        running.delete(name);
        return null;
      }
      case "destroy":
        running.delete(byRef(req.domain));
        return null;
      default:
        throw new Error(`unexpected request ${req.op}`);
    }
  };
  return { running, requests, request };
}

test("domains start restores and deletes good save files, keeps a failed one, then creates auto configs not already running", async () => {
  const base = mkdtempSync(join(dir, "start-"));
  const [autoDir, saveDir] = [join(base, "auto"), join(base, "save")];
  mkdirSync(autoDir);
  mkdirSync(saveDir);
  writeFileSync(join(saveDir, "a.save"), JSON.stringify({ name: "a" }));
  writeFileSync(join(saveDir, "bad.save"), JSON.stringify({ name: "bad" }));
  writeFileSync(join(saveDir, ".a.save.partial-1-1"), "half a save");
  // Config files as `vmstack create` takes them; `a` is restored first, so its config is skipped.
  for (const n of ["a", "c"]) writeFileSync(join(autoDir, `${n}.json`), JSON.stringify({ name: n, memory: 64, boot: { kernel: "/boot/vmlinuz" } }));
  const fake = fakeDaemon({ failRestore: "bad" });
  const seen: DomainsProgress[] = [];
  const out = await domainsStart({ settings: { autoDir, saveDir, mode: "save", timeoutMs: 1000 }, request: fake.request, report: (p) => seen.push(p), env: {} });
  assert.deepEqual(out, seen);
  assert.deepEqual(
    out.map((p) => [p.domain, p.action, p.ok]),
    [["a", "restore", true], [join(saveDir, "bad.save"), "restore", false], ["a", "skip", true], ["c", "create", true]],
  );
  assert.match(out[1]?.detail ?? "", /corrupt/);
  assert.equal(existsSync(join(saveDir, "a.save")), false, "a restored save file is deleted");
  assert.equal(existsSync(join(saveDir, "bad.save")), true, "a failed one is kept");
  assert.deepEqual([...fake.running.keys()], ["a", "c"]);
});

test("domains stop saves every domain; one that fails to save or misses its deadline is destroyed", async () => {
  const saveDir = join(mkdtempSync(join(dir, "stop-")), "save");
  const fake = fakeDaemon({ failSave: "nosave", hangSave: "slow" });
  for (const n of ["a", "nosave", "slow"]) await fake.request({ op: "create", config: { name: n }, paused: false, force: false });
  const out = await domainsStop({ settings: { autoDir: "/none", saveDir, mode: "save", timeoutMs: 300 }, request: fake.request, report: () => undefined, env: {} });
  assert.deepEqual(
    out.map((p) => [p.domain, p.action, p.ok]),
    [["a", "save", true], ["nosave", "save", false], ["nosave", "destroy", true], ["slow", "save", false], ["slow", "destroy", true]],
  );
  assert.match(out[3]?.detail ?? "", /no save within 0.3 s/);
  assert.equal(fake.running.size, 0);
  assert.equal(JSON.parse(readFileSync(join(saveDir, "a.save"), "utf8")).name, "a");
});

test("a boot file that is gone or changed is named; the same content with a new mtime still restores", async () => {
  const kernel = join(dir, "vmlinuz");
  writeFileSync(kernel, "kernel-1");
  const [facts] = await bootFileFacts([{ role: "kernel", path: kernel }]);
  assert.ok(facts);
  assert.equal(await bootFileProblem(facts), undefined);
  utimesSync(kernel, new Date(), new Date(Date.now() + 5000));
  assert.equal(await bootFileProblem(facts), undefined, "same bytes, touched");
  writeFileSync(kernel, "kernel-2");
  utimesSync(kernel, new Date(), new Date(Date.now() + 10_000));
  assert.match((await bootFileProblem(facts)) ?? "", /its kernel .*vmlinuz has changed since the save/);
  rmSync(kernel);
  assert.match((await bootFileProblem(facts)) ?? "", /its kernel .*vmlinuz no longer exists/);
});

test("save and restore requests need an absolute path and reject unknown keys", () => {
  assert.deepEqual(parseRequest({ op: "save", domain: "a", file: "/var/tmp/a.save", keepRunning: true, paused: false }), { op: "save", domain: "a", file: "/var/tmp/a.save", keepRunning: true, paused: false });
  assert.deepEqual(parseRequest({ op: "restore", file: "/var/tmp/a.save", paused: true, force: false }), { op: "restore", file: "/var/tmp/a.save", paused: true, force: false });
  assert.throws(() => parseRequest({ op: "save", domain: "a", file: "a.save", keepRunning: false, paused: false }), /'file' must be an absolute path/);
  assert.throws(() => parseRequest({ op: "restore", file: "/a.save", paused: false, force: false, config: "x.cfg" }), /unknown key 'config' for restore/);
});
