/**
 * The registry of CLI verbs. Adding a verb: one file in this folder and one entry here.
 *
 * Verbs load lazily: `vmstack list` must not pay for importing the test runner or the xenstore
 * daemon (every ESM module costs start-up time, and scripts call the CLI in loops). The summary is
 * repeated here so `vmstack --help` loads nothing; a unit test checks it matches the command's own.
 */
import type { Command } from "../command.js";

export interface CommandEntry {
  readonly name: string;
  readonly summary: string;
  load(): Promise<Command>;
}

export const commands: readonly CommandEntry[] = [
  { name: "run", summary: "boot a fresh VM, run a command in it, print its output and exit with its status", load: async () => (await import("./run.js")).runCommand },
  { name: "info", summary: "show the host: guest kernel, QEMU version, accelerator, CPUs and memory", load: async () => (await import("./info.js")).infoCommand },
  { name: "kernel", summary: "fetch the guest kernel into the cache, or show the kernel VMs boot", load: async () => (await import("./kernel.js")).kernelCommand },
  { name: "create", summary: "create and start a domain from an xl.cfg, xm or JSON config, or from KEY=VALUE alone", load: async () => (await import("./create.js")).createCommand },
  { name: "config", summary: "convert domain configs between xl.cfg and JSON, check them, show them normalized", load: async () => (await import("./config.js")).configCommand },
  { name: "xenstore", summary: "read, write, list, remove, watch and chmod xenstore nodes (like Xen's xenstore-* tools)", load: async () => (await import("./xenstore.js")).xenstoreCommand },
  { name: "xenstored", summary: "run the xenstore daemon (Xen wire protocol on a Unix socket)", load: async () => (await import("./xenstored.js")).xenstoredCommand },
  { name: "test", summary: "run VM integration tests (files using vmstack/testing)", load: async () => (await import("./test.js")).testCommand },
  { name: "image", summary: "make disk images (raw/qcow2, ext2/3/4 from a directory, overlays, Debian root file systems)", load: async () => (await import("./image.js")).imageCommand },
  { name: "fetch", summary: "download a build recipe's inputs into the cache (hash-verified, resumable) and write its lock file", load: async () => (await import("./fetch.js")).fetchCommand },
  { name: "build", summary: "run a build recipe in a throwaway VM without network, outputs into the cache by content", load: async () => (await import("./build.js")).buildCommand },
  // Domain lifecycle (xl's verbs), served by vmstackd.
  { name: "vmstackd", summary: "run vmstackd, the domain daemon, in the foreground", load: async () => (await import("./vmstackd.js")).vmstackdCommand },
  { name: "list", summary: "list domains (Domain-0 first), with xl's state letters r b p s c d", load: async () => (await import("./list.js")).listCommand },
  { name: "console", summary: "attach to a domain's serial console (Ctrl-] detaches)", load: async () => (await import("./console.js")).consoleCommand },
  { name: "shutdown", summary: "ask a domain's guest to power off", load: async () => (await import("./shutdown.js")).shutdownCommand },
  { name: "reboot", summary: "ask a domain's guest to reboot", load: async () => (await import("./reboot.js")).rebootCommand },
  { name: "destroy", summary: "end a domain at once, without asking the guest", load: async () => (await import("./destroy.js")).destroyCommand },
  { name: "pause", summary: "pause a domain (its vCPUs stop; memory stays)", load: async () => (await import("./pause.js")).pauseCommand },
  { name: "unpause", summary: "unpause a paused domain", load: async () => (await import("./unpause.js")).unpauseCommand },
  { name: "rename", summary: "rename a domain", load: async () => (await import("./rename.js")).renameCommand },
  { name: "domid", summary: "print a domain's id", load: async () => (await import("./domid.js")).domidCommand },
  { name: "domname", summary: "print the name of the domain with this id", load: async () => (await import("./domname.js")).domnameCommand },
  { name: "uptime", summary: "print how long each domain has been up", load: async () => (await import("./uptime.js")).uptimeCommand },
  { name: "sysrq", summary: "send a magic SysRq key to a domain", load: async () => (await import("./sysrq.js")).sysrqCommand },
  { name: "trigger", summary: "send an NMI, a reset or an ACPI power-button press to a domain", load: async () => (await import("./trigger.js")).triggerCommand },
  { name: "dmesg", summary: "print vmstackd's log", load: async () => (await import("./dmesg.js")).dmesgCommand },
  { name: "exec", summary: "run a command in a domain whose guest runs vmstack's agent", load: async () => (await import("./exec.js")).execCommand },
  // Devices and resources of running domains (xl's hotplug verbs).
  { name: "block-attach", summary: "attach a disk to a running domain (xl disk spec)", load: async () => (await import("./block.js")).blockAttachCommand },
  { name: "block-detach", summary: "detach a disk from a running domain (the guest must release it)", load: async () => (await import("./block.js")).blockDetachCommand },
  { name: "block-list", summary: "list a domain's disks (xl block-list)", load: async () => (await import("./block.js")).blockListCommand },
  { name: "network-attach", summary: "attach a NIC to a running domain (xl vif spec)", load: async () => (await import("./network.js")).networkAttachCommand },
  { name: "network-detach", summary: "detach a NIC from a running domain", load: async () => (await import("./network.js")).networkDetachCommand },
  { name: "network-list", summary: "list a domain's NICs (xl network-list)", load: async () => (await import("./network.js")).networkListCommand },
  { name: "cd-insert", summary: "insert a disc image into a domain's cdrom drive", load: async () => (await import("./cd.js")).cdInsertCommand },
  { name: "cd-eject", summary: "eject the disc from a domain's cdrom drive", load: async () => (await import("./cd.js")).cdEjectCommand },
  { name: "mem-set", summary: "set a domain's memory target (the balloon), up to its maxmem", load: async () => (await import("./resize.js")).memSetCommand },
  { name: "vcpu-set", summary: "set how many vCPUs a domain has online, up to its maxvcpus", load: async () => (await import("./resize.js")).vcpuSetCommand },
  { name: "save", summary: "save a domain's memory, device state and config to a file (destroys it unless -c or -p)", load: async () => (await import("./save.js")).saveCommand },
  { name: "restore", summary: "bring a domain back from a file written by vmstack save", load: async () => (await import("./restore.js")).restoreCommand },
  { name: "domains", summary: "start or stop every domain as xendomains does: restore saved ones, create autostart ones; save or shut down all", load: async () => (await import("./domains.js")).domainsCommand },
];
