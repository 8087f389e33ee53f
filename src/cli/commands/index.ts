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
  { name: "create", summary: "create a domain from an xl.cfg, xm or JSON config (only --dry-run for now)", load: async () => (await import("./create.js")).createCommand },
  { name: "config", summary: "convert domain configs between xl.cfg and JSON, check them, show them normalized", load: async () => (await import("./config.js")).configCommand },
  { name: "xenstore", summary: "read, write, list, remove, watch and chmod xenstore nodes (like Xen's xenstore-* tools)", load: async () => (await import("./xenstore.js")).xenstoreCommand },
  { name: "xenstored", summary: "run the xenstore daemon (Xen wire protocol on a Unix socket)", load: async () => (await import("./xenstored.js")).xenstoredCommand },
  { name: "test", summary: "run VM integration tests (files using vmstack/testing)", load: async () => (await import("./test.js")).testCommand },
];
