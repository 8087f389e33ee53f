/**
 * A Debian root file system as a disk image, built from Debian's packages for a release and a
 * package list, with vmstack's guest agent installed (/usr/local/sbin/vmstack-agent), cached by
 * recipe: the same release + packages + agent + image settings build once.
 *
 * Two cache layers: the bootstrap result (debian-tree.ts: mmdebstrap or debootstrap, the slow
 * step, keyed by release and packages only) and the image made from it (keyed by everything).
 * A different label, file system, size or GRUB menu reuses the tree. Unpacking the tree needs
 * root (it holds root-owned files and device nodes), as the bootstrap does; the image itself is
 * made without mounting anything: `mkfs.ext{2,3,4} -d`.
 *
 * A bootable image (`grubMenu`) also gets /etc/fstab, a hostname, GRUB menus naming the kernel
 * the package list installed (menu.lst for pv-grub, grub.cfg for pygrub and GRUB 2), and, when
 * the tree has systemd, a unit that starts the agent on its virtio-serial port at boot.
 */
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { sha256File, type BuildResult, type ContentStore } from "./cache.js";
import { checkDebianSpec, debianTree, unpackTree, type ProgressOptions } from "./debian-tree.js";
import { createDisk, imageSizeFor, treeSize, type DiskFormat, type FsType } from "./disk.js";
import { grubCfgText, menuLstText } from "./grub-menu-writer.js";
import { installGrubModules, writeGrubPcDisk } from "./grub-pc.js";
import { runChild } from "../lib/run-child.js";

export { bootstrapArgv, bootstrapTool, checkDebianSpec } from "./debian-tree.js";

export interface DebianRootfsSpec {
  readonly release: string;
  readonly packages: readonly string[];
  readonly format: DiskFormat;
  /** Absent: the tree's size plus room (see imageSizeFor) and `extraBytes`. */
  readonly sizeBytes?: number;
  /** Free room to leave in an auto-sized image (default 256 MiB: builds write into it). */
  readonly extraBytes?: number;
  readonly label?: string;
  /** File system (default ext4). pv-grub reads ext2/3 (the NixOS wiki uses ext3). */
  readonly fs?: FsType;
  /** File system UUID (default: mkfs picks one). */
  readonly uuid?: string;
  /** /etc/hostname (default: what the bootstrap left, the host's name). */
  readonly hostname?: string;
  /** Make it bootable from its own menu: fstab, GRUB menus naming the installed kernel. */
  readonly grubMenu?: boolean;
  /**
   * "grub-pc": a partitioned disk with GRUB 2 for BIOS in its boot sector (grub-pc.ts), so
   * firmware boots it (an HVM domain without a kernel). Implies grubMenu.
   */
  readonly bootloader?: "grub-pc";
}

export const ROOTFS_LABEL = "vmstack-root";
/** Where the agent lives in a vmstack Debian image. */
export const ROOTFS_AGENT_PATH = "/usr/local/sbin/vmstack-agent";
/** The systemd unit that starts the agent in a booted image. */
export const ROOTFS_AGENT_UNIT = "vmstack-agent.service";
const ROOTFS_RECIPE_VERSION = 1;

export async function debianRootfs(
  store: ContentStore,
  spec: DebianRootfsSpec,
  /** agentPath: the static vmstack-agent binary to install (guestArtifacts().agent). */
  options: ProgressOptions & { agentPath: string },
): Promise<BuildResult & { tool: string }> {
  checkDebianSpec(spec);
  if ((spec.grubMenu === true || spec.bootloader !== undefined) && !spec.packages.some((p) => p.startsWith("linux-image-"))) {
    // Checked before the bootstrap (a minute) rather than after it finds /boot empty.
    throw new VmstackError("IMAGE_NO_KERNEL", "a GRUB menu needs a kernel in the image: add a kernel package, e.g. -p linux-image-cloud-amd64,systemd-sysv");
  }
  const agent = options.agentPath;
  if (!existsSync(agent)) throw new VmstackError("GUEST_PIECE_MISSING", `the guest agent is missing at ${agent}: npm run build`);
  const label = spec.label ?? ROOTFS_LABEL;
  // Fields that are undefined drop out of the key (canonicalJson), so images made before the
  // boot options existed keep their keys.
  const recipe = {
    kind: "debian-rootfs",
    v: ROOTFS_RECIPE_VERSION,
    release: spec.release,
    packages: [...new Set(spec.packages)].sort(),
    format: spec.format,
    sizeBytes: spec.sizeBytes,
    extraBytes: spec.extraBytes,
    label,
    fs: spec.fs === "ext4" ? undefined : spec.fs,
    uuid: spec.uuid,
    hostname: spec.hostname,
    grubMenu: spec.grubMenu === true || spec.bootloader !== undefined ? true : undefined,
    bootloader: spec.bootloader,
    agent: await sha256File(agent),
  };
  let tool = "none";
  const result = await store.buildOnce(
    recipe,
    async (tmp) => {
      const tree = await debianTree(store, { release: spec.release, packages: spec.packages }, options);
      tool = tree.cached ? "cached tree" : tree.tool;
      await mkdir(join(store.root, "work"), { recursive: true });
      const work = await mkdtemp(join(store.root, "work", "rootfs-"));
      try {
        const root = join(work, "root");
        await mkdir(root);
        options.onProgress?.(`unpacking the Debian tree${tree.cached ? " (cached)" : ""}`);
        await unpackTree(tree.path, root, options.signal);
        await installAgent(root, agent, recipe);
        if (spec.hostname !== undefined) await writeFile(join(root, "etc", "hostname"), `${spec.hostname}\n`);
        if (recipe.grubMenu === true) await makeBootable(root, { label, fs: spec.fs ?? "ext4" });
        if (spec.bootloader === "grub-pc") await installGrubModules(root);
        const size = spec.sizeBytes ?? imageSizeFor(await treeSize(root)) + (spec.extraBytes ?? 256 * 1024 * 1024);
        options.onProgress?.(`making the ${spec.format} image (${spec.fs ?? "ext4"}, label ${label}, ${Math.round(size / 1024 / 1024)} MiB${spec.bootloader ? `, ${spec.bootloader} in the boot sector` : ""})`);
        const fs = { type: spec.fs ?? "ext4", label, ...(spec.uuid ? { uuid: spec.uuid } : {}), from: root } as const;
        if (spec.bootloader === undefined) {
          await createDisk(tmp, { format: spec.format, sizeBytes: size, fs });
          return;
        }
        // The file system alone first, then the whole disk around it (the size is the partition's).
        const fsImage = join(work, "fs.raw");
        await createDisk(fsImage, { format: "raw", sizeBytes: size, fs });
        const disk = spec.format === "raw" ? tmp : join(work, "disk.raw");
        await writeGrubPcDisk(fsImage, disk, work, options.signal);
        if (spec.format === "qcow2") await runChild(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", disk, tmp], { signal: options.signal });
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    },
    { ext: `.${spec.format}` },
  );
  return { ...result, tool: result.cached ? "none" : tool };
}

async function installAgent(tree: string, agent: string, recipe: unknown): Promise<void> {
  const dest = join(tree, ROOTFS_AGENT_PATH);
  await mkdir(join(dest, ".."), { recursive: true });
  await copyFile(agent, dest);
  await chmod(dest, 0o755);
  // What this image is, for people and for `vmstack image` listings.
  await writeFile(join(tree, "etc", "vmstack-image.json"), JSON.stringify(recipe, null, 2) + "\n");
}

/** The newest kernel in /boot (Debian names them vmlinuz-<release>) and its initrd, if any. */
export function pickKernel(bootFiles: readonly string[]): { release: string; initrd: boolean } | undefined {
  const releases = bootFiles
    .filter((f) => f.startsWith("vmlinuz-"))
    .map((f) => f.slice("vmlinuz-".length))
    .sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  const release = releases[releases.length - 1];
  return release === undefined ? undefined : { release, initrd: bootFiles.includes(`initrd.img-${release}`) };
}

/** The kernel command line a vmstack-made bootable image boots with (each word commented). */
export function bootCmdline(rootSpec: string): string {
  return [
    `root=${rootSpec}`, // the root file system by label: the same wherever the disk is attached (vda, xvda)
    "ro", // systemd remounts it read-write from fstab after fsck, as Debian's installer sets up
    "console=ttyS0", // the domain's console is the first UART (`vmstack console`, `create -c`)
  ].join(" ");
}

async function makeBootable(root: string, o: { label: string; fs: FsType }): Promise<void> {
  const boot = join(root, "boot");
  const kernel = pickKernel(existsSync(boot) ? await readdir(boot) : []);
  if (!kernel) {
    throw new VmstackError("IMAGE_NO_KERNEL", "a GRUB menu needs a kernel in the image's /boot: add a kernel package, e.g. -p linux-image-cloud-amd64,systemd-sysv", {
      facts: { boot },
    });
  }
  const rootSpec = `LABEL=${o.label}`;
  await writeFile(join(root, "etc", "fstab"), `# Written by vmstack image debian.\n${rootSpec} / ${o.fs} errors=remount-ro 0 1\n`);
  const entry = {
    title: "Debian GNU/Linux",
    kernel: `/boot/vmlinuz-${kernel.release}`,
    initrd: kernel.initrd ? `/boot/initrd.img-${kernel.release}` : undefined,
    cmdline: bootCmdline(rootSpec),
  };
  await mkdir(join(boot, "grub"), { recursive: true });
  await writeFile(join(boot, "grub", "menu.lst"), menuLstText(entry));
  await writeFile(join(boot, "grub", "grub.cfg"), grubCfgText({ ...entry, label: o.label }));
  if (existsSync(join(root, "lib", "systemd", "systemd"))) await installAgentUnit(root);
}

/**
 * Starts the agent at boot. The port appears once udev has loaded virtio_console, which may be
 * after the unit starts: the agent then exits and systemd starts it again a second later, without
 * a start limit, so the agent is there whenever the port is.
 */
async function installAgentUnit(root: string): Promise<void> {
  const unit = [
    "[Unit]",
    "Description=vmstack guest agent (virtio-serial port org.vmstack.agent)",
    "StartLimitIntervalSec=0",
    "",
    "[Service]",
    `ExecStart=${ROOTFS_AGENT_PATH}`,
    "Restart=always",
    "RestartSec=1",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
  const dir = join(root, "etc", "systemd", "system");
  await mkdir(join(dir, "multi-user.target.wants"), { recursive: true });
  await writeFile(join(dir, ROOTFS_AGENT_UNIT), unit);
  await symlink(`/etc/systemd/system/${ROOTFS_AGENT_UNIT}`, join(dir, "multi-user.target.wants", ROOTFS_AGENT_UNIT));
}
