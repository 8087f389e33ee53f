/** xl disk specs (canonical, positional, legacy) and vif specs, per xl-disk-configuration(5) and xl-network-configuration(5). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseDiskSpec, parseVifSpec } from "../../src/domain/index.js";

function disk(spec: string): Record<string, unknown> {
  const r = parseDiskSpec(spec);
  assert.deepEqual(r.errors, [], spec);
  const d = r.disk;
  assert.ok(d);
  return { target: d.target, format: d.format, vdev: d.vdev, access: d.access, devtype: d.devtype };
}

test("the three equivalent forms from the man page give the same disk", () => {
  const want = { target: "/dev/vg/guest", format: "raw", vdev: "hda", access: "rw", devtype: "disk" };
  assert.deepEqual(disk("/dev/vg/guest,,hda"), want);
  assert.deepEqual(disk("/dev/vg/guest,raw,hda,rw"), want);
  assert.deepEqual(disk("format=raw, vdev=hda, access=rw, target=/dev/vg/guest"), want);
});

test("target= takes the rest of the spec, commas included", () => {
  assert.equal(disk("vdev=xvda, target=/srv/a,b.img").target, "/srv/a,b.img");
});

test("a relative target gets /dev prepended", () => {
  assert.equal(disk("vg0/lv,raw,xvda").target, "/dev/vg0/lv");
});

test("legacy forms: file:, phy:, tap:qcow2:, format prefixes and the :cdrom suffix", () => {
  assert.deepEqual(disk("file:/vmdisks/root.img,xvda1,w"), { target: "/vmdisks/root.img", format: "raw", vdev: "xvda1", access: "rw", devtype: "disk" });
  assert.deepEqual(disk("phy:/dev/vg0/lv,xvda,w"), { target: "/dev/vg0/lv", format: "raw", vdev: "xvda", access: "rw", devtype: "disk" });
  assert.equal(disk("tap:qcow2:/img/a.qcow2,xvda,w").format, "qcow2");
  assert.deepEqual(disk("raw:/root/x.iso,hdc:cdrom,ro"), { target: "/root/x.iso", format: "raw", vdev: "hdc", access: "ro", devtype: "cdrom" });
  assert.deepEqual(disk(",hdc:cdrom,r"), { target: undefined, format: "raw", vdev: "hdc", access: "ro", devtype: "cdrom" });
});

test("script prefixes and backend keys are accepted and named in a warning", () => {
  const r = parseDiskSpec("backendtype=qdisk, trusted, vdev=xvda, target=/a.img");
  assert.deepEqual(r.errors, []);
  assert.match(r.warnings[0] ?? "", /ignored.*backendtype=qdisk, trusted/);
  assert.match(parseDiskSpec("nbd:localhost:10809,xvda,w").warnings[0] ?? "", /nbd:/);
});

test("flags: cdrom, discard, direct-io-safe; a cdrom defaults to read-only", () => {
  const r = parseDiskSpec("/a.iso,raw,hdc,cdrom");
  assert.equal(r.disk?.devtype, "cdrom");
  assert.equal(r.disk?.access, "ro");
  assert.equal(parseDiskSpec("/a,raw,xvda,rw,discard").disk?.discard, true);
  assert.equal(parseDiskSpec("direct-io-safe,/a,raw,xvda").disk?.directIoSafe, true);
});

test("disk spec errors: missing vdev, bad format with did-you-mean, bad access, unknown key, empty non-cdrom target", () => {
  assert.match(parseDiskSpec("target=/a").errors.join(), /no vdev/);
  assert.match(parseDiskSpec("/a,qcow3,xvda").errors.join(), /format 'qcow3'.*did you mean 'qcow/);
  assert.match(parseDiskSpec("/a,raw,xvda,rx").errors.join(), /access 'rx'/);
  assert.match(parseDiskSpec("vdev=xvda, fromat=raw, target=/a").errors.join(), /unknown disk parameter 'fromat' \(did you mean 'format'\?\)/);
  assert.match(parseDiskSpec(",raw,xvda").errors.join(), /no target/);
});

test("vif specs: '' is one default NIC; mac, bridge, model and ignored keys", () => {
  assert.deepEqual(parseVifSpec("").vif, { model: "virtio", ignored: [] });
  const r = parseVifSpec("mac=00:16:3E:12:34:56, bridge=xenbr1, model=e1000, ip=10.0.0.2, rate=10Mb/s");
  assert.equal(r.vif?.mac, "00:16:3e:12:34:56");
  assert.equal(r.vif?.bridge, "xenbr1");
  assert.equal(r.vif?.model, "e1000");
  assert.match(r.warnings.join(), /ignored.*ip=10\.0\.0\.2, rate=10Mb\/s/);
});

test("vif spec errors: bad MAC, unknown key with did-you-mean; an unknown model falls back to virtio with a warning", () => {
  assert.match(parseVifSpec("mac=00:16:3e:zz:00:01").errors.join(), /not a MAC address/);
  assert.match(parseVifSpec("brige=xenbr0").errors.join(), /did you mean 'bridge'/);
  const m = parseVifSpec("model=i82559er");
  assert.equal(m.vif?.model, "virtio");
  assert.match(m.warnings.join(), /i82559er/);
});
