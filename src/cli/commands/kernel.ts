/**
 * `vmstack kernel fetch|show`: provision the guest kernel into the cache, or show which kernel
 * `vmstack run` would boot. Parses argv and calls the image layer (house rule 3).
 */
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { fetchKernel, resolveKernel, type ResolvedKernel } from "../../image/index.js";

function describe(k: ResolvedKernel): string {
  const rows: Array<[string, string | undefined]> = [
    ["release", k.release],
    ["source", k.source],
    ["kernel", k.kernelPath],
    ["vmlinux", k.vmlinuxPath],
    ["bzImage", k.bzImagePath],
    ["modules", k.modulesDir ?? "(none found)"],
    ["config", k.configPath],
  ];
  return rows
    .filter((r): r is [string, string] => r[1] !== undefined)
    .map(([name, value]) => `${name.padEnd(8)} ${value}\n`)
    .join("");
}

export const kernelCommand: Command = {
  name: "kernel",
  summary: "fetch the guest kernel into the cache, or show the kernel VMs boot",
  usage: "fetch [--update] [--json] | show [--kernel PATH] [--json]",
  options: {
    json: { type: "boolean", help: "print JSON" },
    update: { type: "boolean", help: "fetch: ask apt for a newer cloud kernel even if one is provisioned" },
    kernel: { type: "string", arg: "PATH", help: "show: inspect this bzImage or vmlinux instead" },
  },
  details: [
    "fetch downloads Debian's cloud kernel (linux-image-cloud-amd64) with apt-get download, unpacks it",
    "into the cache ($VMSTACK_CACHE, else $XDG_CACHE_HOME/vmstack, else ~/.cache/vmstack) without",
    "installing it, runs depmod and extracts the uncompressed vmlinux. It does nothing when the",
    "kernel is already there. show prints the kernel `vmstack run` would use: --kernel PATH, else",
    "$VMSTACK_KERNEL, else the fetched one.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("kernel", argv, this.options);
    const [sub, ...extra] = p.positionals;
    if (extra.length > 0) throw usageError("kernel", `unexpected argument '${extra[0] ?? ""}'`);
    const json = boolOpt(p, "json");
    let kernel: ResolvedKernel;
    let fetched: boolean | undefined;
    switch (sub) {
      case "fetch": {
        if (stringOpt(p, "kernel") !== undefined) throw usageError("kernel", "--kernel is only for 'show'");
        let r: Awaited<ReturnType<typeof fetchKernel>>;
        try {
          r = await fetchKernel({
            env: process.env,
            signal: ctx.signal,
            update: boolOpt(p, "update"),
            onProgress: (line) => ctx.stderr.write(`vmstack kernel: ${line}\n`),
          });
        } catch (e) {
          if (!ctx.signal.aborted) throw e;
          // fetchKernel removed its temporary directory: the cache is as it was.
          const why = ctx.signal.reason instanceof Error ? ctx.signal.reason.message : "interrupted";
          ctx.stderr.write(`vmstack kernel: ${why}; the fetch was abandoned and nothing was kept\n`);
          return 130;
        }
        if (!r.fetched) ctx.stderr.write(`vmstack kernel: ${r.kernel.release} is already in the cache\n`);
        kernel = r.kernel;
        fetched = r.fetched;
        break;
      }
      case "show":
        if (boolOpt(p, "update")) throw usageError("kernel", "--update is only for 'fetch'");
        kernel = await resolveKernel({ kernelPath: stringOpt(p, "kernel"), env: process.env });
        break;
      case undefined:
        throw usageError("kernel", "expected 'fetch' or 'show'");
      default:
        throw usageError("kernel", `unknown subcommand '${sub}' (expected 'fetch' or 'show')`);
    }
    ctx.stdout.write(json ? JSON.stringify(fetched === undefined ? kernel : { ...kernel, fetched }) + "\n" : describe(kernel));
    return 0;
  },
};
