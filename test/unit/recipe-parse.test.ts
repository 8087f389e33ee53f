/** Recipe, share and size parsing, and the argv builders for mkfs and virtiofsd: pure, no I/O. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseLockFile, parseRecipe } from "../../src/image/recipe.js";
import { mkfsArgv, parseSize } from "../../src/image/disk.js";
import { parseShareSpec, shareVirtiofsdArgv as virtiofsdArgv, virtiofsQemuArgs } from "../../src/vmm/share.js";
import { compileDomain, loadDomainText } from "../../src/domain/index.js";
import { isVmstackError } from "../../src/lib/errors.js";

const SHA = "a".repeat(64);

test("parseRecipe reads every input kind, the image and the defaults", () => {
  const r = parseRecipe({
    name: "demo",
    image: { debian: { packages: ["gcc"] } },
    inputs: { "a.c": { path: "src/a.c" }, "z.tgz": { url: "https://example.org/z.tgz", sha256: SHA.toUpperCase() }, "m.deb": { debian: "make", version: "4.3-4.1" } },
    script: "make",
    outputs: ["bin/a"],
  });
  assert.equal(r.name, "demo");
  assert.deepEqual(r.image, { kind: "debian", release: "bookworm", packages: ["gcc"] });
  assert.deepEqual(r.inputs.get("z.tgz"), { kind: "url", url: "https://example.org/z.tgz", sha256: SHA });
  assert.deepEqual(r.inputs.get("m.deb"), { kind: "debian", package: "make", version: "4.3-4.1" });
  assert.equal(r.network, false);
  assert.equal(r.memoryMiB, 512);
  assert.deepEqual(parseRecipe({ script: "true" }).image, { kind: "busybox" });
});

test("parseRecipe refuses unknown keys and says where", () => {
  assert.throws(
    () => parseRecipe({ script: "x", inputs: { a: { path: "a", sha: "x" } } }),
    (e: unknown) => isVmstackError(e, "BAD_RECIPE") && /recipe\.inputs\.a\.sha: unknown key/.test(e.message),
  );
  assert.throws(() => parseRecipe({ script: "x", outptus: [] }), /recipe\.outptus: unknown key/);
});

test("parseRecipe refuses a URL input without a sha256 and unsafe names", () => {
  assert.throws(() => parseRecipe({ script: "x", inputs: { a: { url: "https://e.org/a" } } }), /needs its sha256/);
  assert.throws(() => parseRecipe({ script: "x", inputs: { "../a": { path: "a" } } }), /not a safe relative name/);
  assert.throws(() => parseRecipe({ script: "x", outputs: ["/etc/passwd"] }), /not a safe relative name/);
  assert.throws(() => parseRecipe({ script: "x", inputs: { a: { path: "a", url: "https://e.org" } } }), /exactly one of/);
});

test("parseLockFile round-trips what fetch writes and rejects a bad hash", () => {
  const lock = { version: 1, inputs: { a: { sha256: SHA, size: 3, kind: "file", source: "path:a" } }, image: { path: "/x.qcow2" } };
  assert.deepEqual(parseLockFile(JSON.parse(JSON.stringify(lock)), "l"), lock);
  assert.throws(() => parseLockFile({ version: 1, inputs: { a: { sha256: "nope", size: 1, kind: "file", source: "s" } } }, "l"), /64 hex digits/);
});

test("parseSize understands binary units and refuses nonsense", () => {
  assert.equal(parseSize("64M"), 64 * 1024 * 1024);
  assert.equal(parseSize("2G"), 2 * 1024 ** 3);
  assert.equal(parseSize("1.5K"), 1536);
  assert.equal(parseSize("4096"), 4096);
  assert.throws(() => parseSize("lots"), /not a size/);
  assert.throws(() => parseSize("0"), /more than 0/);
});

test("mkfsArgv populates from a directory with a label and refuses a label over 16 bytes", () => {
  assert.deepEqual(mkfsArgv({ type: "ext3", label: "root", from: "/src" }, "/img", 64 * 1024 * 1024), [
    "mkfs.ext3", "-q", "-F", "-E", "root_owner=0:0", "-L", "root", "-d", "/src", "/img", "65536k",
  ]);
  assert.throws(() => mkfsArgv({ type: "ext4", label: "x".repeat(17) }, "/img", 1024), /at most 16 bytes/);
});

test("parseShareSpec reads HOST:GUEST[:ro] and refuses guest system paths", () => {
  assert.deepEqual(parseShareSpec("data:/data:ro", "/home/u"), { hostPath: "/home/u/data", guestPath: "/data", readOnly: true });
  assert.deepEqual(parseShareSpec("/srv:/mnt/srv/", "/"), { hostPath: "/srv", guestPath: "/mnt/srv", readOnly: false });
  assert.throws(() => parseShareSpec("/srv:/proc"), /system directory/);
  assert.throws(() => parseShareSpec("/srv"), /HOST:GUEST/);
  assert.throws(() => parseShareSpec("/srv:rel"), /must be absolute/);
});

test("a read-only share runs virtiofsd behind a read-only bind mount; paths are arguments, not script text", () => {
  const argv = virtiofsdArgv({ hostPath: "/h/a b;rm", guestPath: "/g", readOnly: true }, "/run/s.sock", "/usr/lib/qemu/virtiofsd");
  assert.equal(argv[0], "unshare");
  assert.ok(argv.includes("/h/a b;rm"));
  assert.ok(!argv.some((a) => a.includes("mount") && a.includes("/h/a b")));
  assert.ok(argv.includes("source=/h/a b;rm"));
  assert.equal(virtiofsdArgv({ hostPath: "/h", guestPath: "/g", readOnly: false }, "/s", "/v")[0], "/v");
});

test("virtiofs on microvm uses the mmio device, shared memfd RAM and modern virtio-mmio", () => {
  const args = virtiofsQemuArgs([{ tag: "share0", socketPath: "/r/v,0.sock" }], 256);
  assert.ok(args.includes("memory-backend-memfd,id=mem,size=256M,share=on"));
  assert.ok(args.includes("virtio-mmio.force-legacy=false"));
  assert.ok(args.includes("socket,id=fs0.sock,path=/r/v,,0.sock"));
  assert.ok(args.some((a) => a.startsWith("vhost-user-fs-device,")));
  assert.deepEqual(virtiofsQemuArgs([], 256), []);
});

test("a domain's read-only share gets the same virtiofsd as vmstack run --share: read-only on the host", () => {
  const { config } = loadDomainText(JSON.stringify({ name: "g", machine: "q35", boot: { kernel: "/k" }, shares: [{ source: "/srv/ro", tag: "ro", readOnly: true }] }), "g.json");
  const plan = compileDomain(config, { runDir: "/r" });
  const argv = plan.helpers[0]?.argv ?? [];
  assert.deepEqual(argv, virtiofsdArgv({ hostPath: "/srv/ro", guestPath: "/x", readOnly: true }, "/r/virtiofs-0.sock", "/usr/lib/qemu/virtiofsd"));
  assert.equal(argv[0], "unshare");
});
