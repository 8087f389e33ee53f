/** The pure parts of bootable Debian images: menus, kernel choice, dumpe2fs parsing, the GRUB MBR. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { grubCfgText, menuLstText } from "../../src/image/grub-menu-writer.js";
import { chooseGrubEntry, parseGrubCfg, parseMenuLst } from "../../src/image/grub-menu.js";
import { bootCmdline, debianRootfs, pickKernel } from "../../src/image/rootfs.js";
import { ContentStore } from "../../src/image/cache.js";
import { parseDumpe2fs, rootEntries } from "../../src/image/install-into.js";
import { GRUB_PC_DIR, PARTITION_START_SECTOR, grubMbr } from "../../src/image/grub-pc.js";
import { readPartitionTable } from "../../src/image/partition-table.js";
import { bootstrapArgv, debianTreeRecipe } from "../../src/image/debian-tree.js";

const entry = { title: "Debian GNU/Linux", kernel: "/boot/vmlinuz-6.1.0-9-cloud-amd64", initrd: "/boot/initrd.img-6.1.0-9-cloud-amd64", cmdline: bootCmdline("LABEL=nixos") };

test("the menu.lst and grub.cfg vmstack writes are read back by the pv-grub resolver as the same entry", () => {
  for (const menu of [parseMenuLst(menuLstText(entry)), parseGrubCfg(grubCfgText({ ...entry, label: "nixos" }))]) {
    const { entry: e } = chooseGrubEntry(menu);
    assert.equal(e.title, "Debian GNU/Linux");
    assert.equal(e.kernel, entry.kernel);
    assert.deepEqual(e.initrds, [entry.initrd]);
    assert.equal(e.args, "root=LABEL=nixos ro console=ttyS0");
  }
});

test("the newest kernel in /boot is chosen, numerically, with its initrd when there is one", () => {
  assert.deepEqual(pickKernel(["vmlinuz-6.1.0-9-cloud-amd64", "vmlinuz-6.1.0-10-cloud-amd64", "initrd.img-6.1.0-10-cloud-amd64", "config-6.1.0-10-cloud-amd64"]), {
    release: "6.1.0-10-cloud-amd64",
    initrd: true,
  });
  assert.deepEqual(pickKernel(["vmlinuz-6.1.0-9-cloud-amd64"]), { release: "6.1.0-9-cloud-amd64", initrd: false });
  assert.equal(pickKernel(["grub"]), undefined);
});

test("dumpe2fs output gives the file system's type, label, UUID and size; a label of <none> is no label", () => {
  const head = (features: string, label = "nixos"): string =>
    `Filesystem volume name:   ${label}\nFilesystem UUID:          0b0e7c3e-1111-4222-8333-444455556666\nFilesystem features:      ${features}\nBlock count:              262144\nBlock size:               4096\n`;
  assert.deepEqual(parseDumpe2fs(head("has_journal ext_attr resize_inode dir_index filetype sparse_super large_file"), "x"), {
    type: "ext3",
    label: "nixos",
    uuid: "0b0e7c3e-1111-4222-8333-444455556666",
    sizeBytes: 1024 ** 3,
  });
  assert.equal(parseDumpe2fs(head("has_journal extent 64bit flex_bg"), "x").type, "ext4");
  assert.equal(parseDumpe2fs(head("ext_attr filetype"), "x").type, "ext2");
  assert.equal(parseDumpe2fs(head("has_journal", "<none>"), "x").label, undefined);
  assert.throws(() => parseDumpe2fs("dumpe2fs: Bad magic number in super-block", "disk.img"), /disk\.img does not hold an ext2\/3\/4 file system/);
});

test("debugfs ls -p lines give the root directory's names without . and ..", () => {
  const ls = "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/11/040700/0/0/lost+found//\n/12/100644/0/0/etc/4096/\n";
  assert.deepEqual(rootEntries(ls), ["lost+found", "etc"]);
});

test("the bootstrap is keyed by release and the set of packages, in any order", () => {
  assert.deepEqual(debianTreeRecipe({ release: "bookworm", packages: ["make", "gcc", "make"] }), debianTreeRecipe({ release: "bookworm", packages: ["gcc", "make"] }));
  assert.deepEqual(bootstrapArgv("mmdebstrap", { release: "bookworm", packages: ["b", "a"] }, "/t"), ["mmdebstrap", "--variant=apt", "--format=tar", "--include=a,b", "bookworm", "/t"]);
});

test("the GRUB MBR keeps boot.img's code, loads core.img from sector 1, and has one bootable partition at 1 MiB", (t) => {
  const bootImg = join(GRUB_PC_DIR, "boot.img");
  if (!existsSync(bootImg)) return t.skip("grub-pc-bin is not installed (./setup installs it)");
  const boot = readFileSync(bootImg);
  const mbr = grubMbr(boot, 1000);
  assert.ok(mbr.subarray(0, 0x66).equals(boot.subarray(0, 0x66)));
  assert.deepEqual([...mbr.subarray(0x66, 0x68)], [0x90, 0x90], "the boot-drive check is a NOP for hard disks");
  assert.equal(mbr.readUInt32LE(0x5c), 1);
  assert.equal(mbr[446], 0x80);
  assert.deepEqual(readPartitionTable(mbr), { scheme: "mbr", partitions: [{ index: 0, offsetBytes: PARTITION_START_SECTOR * 512, sizeBytes: 1000 * 512 }] });
  assert.throws(() => grubMbr(Buffer.alloc(100), 1), /must be 512 bytes/);
});

test("a bootable image without a kernel package is refused before the bootstrap starts", async () => {
  const store = new ContentStore("/nonexistent/vmstack-cache");
  await assert.rejects(
    debianRootfs(store, { release: "bookworm", packages: ["bash"], format: "raw", grubMenu: true }, { agentPath: "/nonexistent/agent" }),
    /a GRUB menu needs a kernel in the image: add a kernel package/,
  );
});
