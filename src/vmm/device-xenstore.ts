/**
 * A domain's devices in xenstore, laid out as Xen's toolstack lays out its split drivers
 * (docs/misc/xenstore-paths.pandoc, docs/misc/vbd-interface.txt), so Xen-aware readers
 * (`xenstore-ls`, `xl block-list` habits, monitoring) find them where they look:
 *
 *   frontend  /local/domain/<domid>/device/vbd/<devid>/{backend, backend-id, state, virtual-device, device-type}
 *   backend   /local/domain/0/backend/vbd/<domid>/<devid>/{frontend, frontend-id, online, state, params,
 *                                                          type, mode, device-type, dev, removable, bootable}
 *   frontend  /local/domain/<domid>/device/vif/<devid>/{backend, backend-id, state, handle, mac}
 *   backend   /local/domain/0/backend/vif/<domid>/<devid>/{frontend, frontend-id, online, state, mac, bridge, handle, type}
 *
 * The device itself is emulated by QEMU (type "qdisk" in Xen's terms: the device model is the
 * backend); `state` is XenbusState 4 (Connected) while the device is plugged. The frontend
 * directory is readable by the domain, the backend one by dom0 only, as libxl sets them.
 */
import type { XenstoreClient, XenstoreOps } from "../xenstore/client.js";
import type { DiskConfig, DomainConfig, NicConfig } from "../domain/index.js";
import { isVmstackError } from "../lib/errors.js";
import { VmstackError } from "../lib/errors.js";

/** XenbusState (xen/include/public/io/xenbus.h). */
export const XENBUS_CONNECTED = 4;

const letters = (s: string): number => [...s].reduce((n, ch) => n * 26 + (ch.charCodeAt(0) - 96), 0) - 1;

/**
 * A vdev name's Xen device number (docs/misc/vbd-interface.txt): xvd disks 0-15 are
 * (202<<8)|(disk<<4)|partition and above that (1<<28)|(disk<<8)|partition; sd is major 8; hd a-h
 * majors 3, 22, 33, 34 with minor 64 per disk. vd* (virtio) is no Xen name: numbered like xvd.
 */
export function vdevNumber(vdev: string): number {
  const m = /^(xvd|vd|hd|sd)([a-z]+)([0-9]*)$/.exec(vdev);
  if (!m) throw new VmstackError("BAD_VDEV", `'${vdev}' is not a virtual device name like xvdb, hdc or sdb`, { facts: { vdev } });
  const disk = letters(m[2] as string);
  const part = m[3] === "" ? 0 : Number(m[3]);
  switch (m[1]) {
    case "xvd":
    case "vd":
      return disk < 16 && part < 16 ? (202 << 8) | (disk << 4) | part : (1 << 28) | (disk << 8) | part;
    case "sd":
      if (disk >= 16) break;
      return (8 << 8) | (disk << 4) | part;
    case "hd": {
      const major = [3, 22, 33, 34][disk >> 1];
      if (major === undefined) break;
      return (major << 8) | ((disk & 1) << 6) | part;
    }
  }
  throw new VmstackError("BAD_VDEV", `'${vdev}' has no Xen device number (hd goes to hdh, sd to sdp)`, { facts: { vdev } });
}

/** A disk's vdev: the one it was given, else the first xvd name no other disk of the domain uses. */
export function vdevOf(disks: readonly DiskConfig[], index: number): string {
  const d = disks[index];
  if (d?.vdev !== undefined) return d.vdev;
  const taken = new Set(disks.map((x) => x.vdev).filter((v): v is string => v !== undefined));
  let n = 0;
  for (let i = 0; i < index; i++) if (disks[i]?.vdev === undefined) n++;
  for (let k = 0; ; k++) {
    const name = `xvd${letterName(k)}`;
    if (taken.has(name)) continue;
    if (n-- === 0) return name;
  }
}

function letterName(k: number): string {
  return k < 26 ? String.fromCharCode(97 + k) : letterName(Math.floor(k / 26) - 1) + String.fromCharCode(97 + (k % 26));
}

const fe = (domid: number, kind: string, devid: number): string => `/local/domain/${domid}/device/${kind}/${devid}`;
const be = (domid: number, kind: string, devid: number): string => `/local/domain/0/backend/${kind}/${domid}/${devid}`;

export const vbdBackendPath = (domid: number, devid: number): string => be(domid, "vbd", devid);
export const vbdFrontendPath = (domid: number, devid: number): string => fe(domid, "vbd", devid);
export const vifBackendPath = (domid: number, devid: number): string => be(domid, "vif", devid);
export const vifFrontendPath = (domid: number, devid: number): string => fe(domid, "vif", devid);

async function writePair(tx: XenstoreOps, domid: number, frontend: string, backend: string, feEntries: [string, string][], beEntries: [string, string][]): Promise<void> {
  // Permissions first: the nodes written below inherit their directory's (xenstore.txt, WRITE).
  for (const dir of [frontend, backend]) {
    await tx.mkdir(dir);
    await tx.setPerms(dir, [{ access: "n", domid: 0 }, { access: "r", domid }]);
  }
  const feAll: [string, string][] = [["backend", backend], ["backend-id", "0"], ["state", String(XENBUS_CONNECTED)], ...feEntries];
  const beAll: [string, string][] = [["frontend", frontend], ["frontend-id", String(domid)], ["online", "1"], ["state", String(XENBUS_CONNECTED)], ...beEntries];
  for (const [k, v] of feAll) await tx.write(`${frontend}/${k}`, v);
  for (const [k, v] of beAll) await tx.write(`${backend}/${k}`, v);
}

async function writeVbd(tx: XenstoreOps, domid: number, d: DiskConfig, vdev: string): Promise<void> {
  const devid = vdevNumber(vdev);
  await writePair(
    tx,
    domid,
    vbdFrontendPath(domid, devid),
    vbdBackendPath(domid, devid),
    [["virtual-device", String(devid)], ["device-type", d.media]],
    [
      ["params", d.path ?? ""],
      ["type", "qdisk"],
      ["mode", d.readOnly ? "r" : "w"],
      ["device-type", d.media],
      ["dev", vdev],
      ["removable", d.media === "cdrom" ? "1" : "0"],
      ["bootable", "1"],
      ["discard-enable", d.discard ? "1" : "0"],
    ],
  );
}

async function writeVif(tx: XenstoreOps, domid: number, n: NicConfig, devid: number): Promise<void> {
  await writePair(
    tx,
    domid,
    vifFrontendPath(domid, devid),
    vifBackendPath(domid, devid),
    [["handle", String(devid)], ["mac", n.mac]],
    [["mac", n.mac], ["bridge", n.type === "private" ? n.network : n.type === "user" ? "user" : n.path], ["handle", String(devid)], ["type", "vif_ioemu"]],
  );
}

/**
 * A NIC's Xen device number (xl's network-list Idx): N for the default ids `netN`, which stay
 * with the NIC when another is detached; the list index for NICs with ids of their own.
 */
export function nicDevid(nics: readonly NicConfig[], index: number): number {
  const m = /^net(\d+)$/.exec(nics[index]?.id ?? "");
  return m ? Number(m[1]) : index;
}

async function rmQuiet(tx: XenstoreOps, path: string): Promise<void> {
  try {
    await tx.rm(path);
  } catch (e) {
    if (!isVmstackError(e, "XS_ENOENT")) throw e;
  }
}

/**
 * Rewrites the domain's whole device tree from its config, in one transaction: after create, and
 * after every attach or detach (the config is the truth; xenstore shows it).
 */
export async function writeDevices(xs: XenstoreClient, domid: number, c: Pick<DomainConfig, "disks" | "nics">): Promise<void> {
  await xs.transaction(async (tx) => {
    for (const kind of ["vbd", "vif"]) {
      await rmQuiet(tx, `/local/domain/${domid}/device/${kind}`);
      await rmQuiet(tx, `/local/domain/0/backend/${kind}/${domid}`);
    }
    for (let i = 0; i < c.disks.length; i++) await writeVbd(tx, domid, c.disks[i] as DiskConfig, vdevOf(c.disks, i));
    for (let i = 0; i < c.nics.length; i++) await writeVif(tx, domid, c.nics[i] as NicConfig, nicDevid(c.nics, i));
  });
}

/** Backend directories live under dom0's home, so a domain's removal must take them too. */
export async function removeDeviceBackends(xs: XenstoreClient, domid: number): Promise<void> {
  await xs.transaction(async (tx) => {
    for (const kind of ["vbd", "vif"]) await rmQuiet(tx, `/local/domain/0/backend/${kind}/${domid}`);
  });
}

export async function writeMemoryTarget(xs: XenstoreClient, domid: number, targetMiB: number): Promise<void> {
  await xs.write(`/local/domain/${domid}/memory/target`, String(targetMiB * 1024));
}

/** cpu/<n>/availability for every possible vCPU (xl vcpu-set writes the same). */
export async function writeCpuAvailability(xs: XenstoreClient, domid: number, online: number, max: number): Promise<void> {
  await xs.transaction(async (tx) => {
    for (let i = 0; i < max; i++) await tx.write(`/local/domain/${domid}/cpu/${i}/availability`, i < online ? "online" : "offline");
  });
}
