/** `vmstack info`: the host as vmstack sees it: versions, guest kernel, accelerator, CPUs, memory. */
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { version } from "../main.js";
import { hostInfo } from "../../vmm/host-info.js";

const options = {
  json: { type: "boolean", help: "print JSON" },
  kernel: { type: "string", arg: "PATH", help: "inspect this guest kernel instead of the default" },
  accel: { type: "string", arg: "auto|kvm|tcg", default: "auto", help: "accelerator choice to evaluate" },
} as const;

export const infoCommand: Command = {
  name: "info",
  summary: "show the host: guest kernel, QEMU version, accelerator, CPUs and memory",
  usage: "[--json] [--kernel PATH]",
  options,
  details: "The first call on a host with /dev/kvm runs a short KVM probe boot; its verdict is cached.",
  async run(argv, ctx) {
    const p = parseCommandArgs("info", argv, options);
    const accel = stringOpt(p, "accel") ?? "auto";
    if (accel !== "auto" && accel !== "kvm" && accel !== "tcg") throw usageError("info", `--accel expects auto, kvm or tcg, got '${accel}'`);
    const info = { vmstack: version(), ...(await hostInfo({ env: process.env, kernelPath: stringOpt(p, "kernel"), accel, signal: ctx.signal })) };
    if (boolOpt(p, "json")) {
      ctx.stdout.write(JSON.stringify(info, null, 2) + "\n");
      return 0;
    }
    const rows: [string, string][] = [
      ["vmstack", info.vmstack],
      ["qemu", `${info.qemu.version} (${info.qemu.binary})`],
      ["guest kernel", "error" in info.kernel ? `none: ${info.kernel.error}` : `${info.kernel.release} (${info.kernel.source}) ${info.kernel.path}`],
      ["accelerator", "error" in info.accelerator ? info.accelerator.error : `${info.accelerator.accel}: ${info.accelerator.reason}`],
      ["/dev/kvm", info.kvmDevice ? "present (used only if a probe boot works)" : "absent"],
      ["host", `${info.host.cpus} CPUs, ${info.host.memoryMiB} MiB memory (${info.host.freeMemoryMiB} MiB free)`],
      ["cache", info.cache],
      [
        "boot snapshots",
        `${info.bootSnapshots.count} (${(info.bootSnapshots.bytes / 1e6).toFixed(1)} MB) in ${info.bootSnapshots.dir}` +
          (info.bootSnapshots.count ? "; remove the directory to drop them, the next run saves a new one" : ""),
      ],
    ];
    const w = Math.max(...rows.map(([k]) => k.length));
    ctx.stdout.write(rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join("\n") + "\n");
    return 0;
  },
};
