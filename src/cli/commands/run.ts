/**
 * `vmstack run [options] -- COMMAND [ARG…]`: boot a fresh VM, run the command, exit with its status.
 * Parses argv into ThrowawayOptions and calls the vmm layer (house rule 3).
 */
import { constants } from "node:os";
import { resolve } from "node:path";
import type { Readable, Writable } from "node:stream";
import type { Command } from "../command.js";
import { boolOpt, intOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { runThrowaway } from "../../vmm/index.js";
import type { AccelChoice, ThrowawayResult } from "../../vmm/index.js";
import { VmstackError } from "../../lib/errors.js";
import { parseSize } from "../../image/disk.js";
import { checkGuestPath, parseShareSpec } from "../../vmm/share.js";
import { DEFAULT_GUEST_MIN_MEMORY_MIB } from "../../vmm/default-guest.js";
import type { DirMapping, ScratchSpec } from "../../vmm/transfer-session.js";

/** vmstack's own failures in `run` (the command's status is passed through otherwise). */
export const RUN_EXIT = { vmstackFailure: 125, timedOut: 124 } as const;

const options = {
  mem: { type: "string", arg: "MiB", default: "256", help: `guest memory (at least ${DEFAULT_GUEST_MIN_MEMORY_MIB} with vmstack's kernel)` },
  cpus: { type: "string", arg: "N", default: "2", help: "virtual CPUs (2 boots fastest under TCG: MTTCG)" },
  accel: { type: "string", arg: "auto|kvm|tcg", default: "auto", help: "accelerator; auto uses KVM only after a probe boot proved it works" },
  kernel: { type: "string", arg: "PATH", help: "guest kernel (bzImage or vmlinux); also $VMSTACK_KERNEL" },
  shell: { type: "string", short: "c", arg: "SCRIPT", help: "run SCRIPT with /bin/sh -c instead of COMMAND" },
  env: { type: "string", short: "e", arg: "NAME=VALUE", multiple: true, help: "set an environment variable (repeatable)" },
  workdir: { type: "string", short: "w", arg: "DIR", help: "working directory in the guest" },
  timeout: { type: "string", arg: "SECONDS", help: "kill the command (in the guest) after SECONDS; exit status 124" },
  interactive: { type: "boolean", short: "i", help: "forward stdin even when it is a terminal" },
  console: { type: "boolean", help: "copy the guest's serial console to stderr" },
  json: { type: "boolean", help: "print the result (status, timings, accelerator) as JSON on stderr at the end" },
  share: { type: "string", arg: "HOST:GUEST[:ro]", multiple: true, help: "share a host directory (virtiofs; a copy when virtiofsd cannot run)" },
  in: { type: "string", arg: "DIR[:GUEST]", multiple: true, help: "copy DIR into the guest before the command (default guest path /in)" },
  out: { type: "string", arg: "DIR[:GUEST]", multiple: true, help: "after success, the guest's GUEST (default /out) becomes DIR on the host" },
  image: { type: "string", arg: "PATH", help: "run the command inside this root file system image (vmstack image debian); it stays unchanged" },
  net: { type: "boolean", help: "give the guest a user-mode NAT network card (default: no network at all)" },
  scratch: { type: "string", arg: "SIZE[:GUEST]", multiple: true, help: "an empty ext4 disk of SIZE (e.g. 2G) mounted at GUEST (default /scratch)" },
  "cold-boot": { type: "boolean", help: "boot the kernel even if a boot snapshot could be restored (also $VMSTACK_COLD_BOOT=1)" },
} as const;

export const runCommand: Command = {
  name: "run",
  summary: "boot a fresh VM, run a command in it, print its output and exit with its status",
  usage: "[options] -- COMMAND [ARG…]\n       vmstack run [options] -c SCRIPT",
  options,
  details: [
    "stdout and stderr of the command arrive separately; stdin is forwarded when it is not a terminal.",
    "",
    "Exit status: the command's own; 128+N when a signal N killed it; 124 when --timeout fired;",
    `${RUN_EXIT.vmstackFailure} when vmstack itself failed (no kernel, boot failure, the VM died).`,
    "",
    "Examples:",
    "  vmstack run -- uname -a",
    "  vmstack run --mem 256 --cpus 2 -- sh -c 'echo out; echo err >&2; exit 3'",
    "  echo hello | vmstack run -- tr a-z A-Z",
    "  vmstack run --in src --out build -c 'cc -o /out/hello /in/hello.c'",
    "  vmstack run --share /srv/data:/data:ro --scratch 4G -c 'sort /data/big > /scratch/sorted'",
    "",
    "--out is all or nothing: the guest's files appear in DIR only when the command exits 0; an",
    "existing DIR is replaced as a whole. A failed or interrupted run leaves DIR untouched.",
    "",
    "Boot snapshots: the first run of a given kernel, initrd, QEMU and machine saves the freshly",
    "booted guest (before any command) in the cache; later runs restore that state instead of",
    "booting, each getting a pristine VM with its own fresh randomness and the current time.",
    "Runs with a virtiofs share, disks (--scratch, --image, a read-only share copied as an image)",
    "or --net always boot cold; --verbose says which happened and why (docs/boot.md).",
  ].join("\n"),
  async run(argv, ctx) {
    try {
      const code = await execute(argv, ctx);
      return ctx.signal.aborted ? interrupted(ctx) : code;
    } catch (e) {
      if (ctx.signal.aborted) return interrupted(ctx);
      // Keep the documented range: vmstack's failures must not look like the command's status.
      if (e instanceof VmstackError) {
        ctx.stderr.write(`vmstack run: ${e.message}\n`);
        if (ctx.verbose && e.cause !== undefined) ctx.stderr.write(`  cause: ${String(e.cause)}\n`);
        return RUN_EXIT.vmstackFailure;
      }
      throw e;
    }
  },
};

function describeSnapshot(s: ThrowawayResult["snapshot"]): string {
  const key = s.key ? ` ${s.key.slice(0, 12)}` : "";
  const mb = s.bytes !== undefined ? `${(s.bytes / 1e6).toFixed(1)} MB` : "";
  switch (s.mode) {
    case "restored":
      return `restored from boot snapshot${key} (${mb}) in ${s.restoreMs ?? 0} ms`;
    case "saved":
      return `cold boot: ${s.reason}; saved boot snapshot${key} (${mb}) in ${s.saveMs ?? 0} ms`;
    case "cold":
      return `cold boot: ${s.reason}`;
  }
}

/** Ctrl-C / SIGTERM: the VM is already stopped and its files removed by the time we get here. */
function interrupted(ctx: Parameters<Command["run"]>[1]): number {
  ctx.stderr.write(`vmstack run: ${String((ctx.signal.reason as Error | undefined)?.message ?? "interrupted")}; the VM was stopped\n`);
  return 130;
}

async function execute(argv: readonly string[], ctx: Parameters<Command["run"]>[1]): Promise<number> {
  const p = parseCommandArgs("run", argv, options);
  const script = stringOpt(p, "shell");
  if (script === undefined && p.positionals.length === 0) throw usageError("run", "no command given: vmstack run -- COMMAND [ARG…]");
  if (script !== undefined && p.positionals.length > 0) throw usageError("run", "give either -c SCRIPT or COMMAND, not both");
  const accel = stringOpt(p, "accel") ?? "auto";
  if (accel !== "auto" && accel !== "kvm" && accel !== "tcg") throw usageError("run", `--accel expects auto, kvm or tcg, got '${accel}'`);
  const env: Record<string, string> = {};
  for (const kv of (p.values["env"] as string[] | undefined) ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw usageError("run", `--env expects NAME=VALUE, got '${kv}'`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const timeoutS = intOpt("run", p, "timeout", 1);
  const forwardStdin = boolOpt(p, "interactive") || !ctx.stdin.isTTY;
  const workdir = stringOpt(p, "workdir");
  const list = (name: string): string[] => (p.values[name] as string[] | undefined) ?? [];
  const mapping = (flag: string, text: string, defaultGuest: string): DirMapping => {
    const [host, guest, ...rest] = text.split(":");
    if (!host || rest.length > 0) throw usageError("run", `--${flag} expects DIR[:GUEST], got '${text}'`);
    return { hostPath: resolve(host), guestPath: checkGuestPath(guest ?? defaultGuest, `--${flag}`) };
  };
  const inputs = list("in").map((t) => mapping("in", t, "/in"));
  const outputs = list("out").map((t) => mapping("out", t, "/out"));
  const shares = list("share").map((t) => parseShareSpec(t));
  const scratch = list("scratch").map((t, i): ScratchSpec => {
    const [size, guest, ...rest] = t.split(":");
    if (!size || rest.length > 0) throw usageError("run", `--scratch expects SIZE[:GUEST], got '${t}'`);
    return { sizeBytes: parseSize(size), guestPath: checkGuestPath(guest ?? (i === 0 ? "/scratch" : `/scratch${i}`), "--scratch") };
  });
  const image = stringOpt(p, "image");
  const result = await runThrowaway({
    ...(inputs.length ? { inputs } : {}),
    ...(outputs.length ? { outputs } : {}),
    ...(shares.length ? { shares } : {}),
    ...(scratch.length ? { scratch } : {}),
    ...(boolOpt(p, "net") ? { network: true } : {}),
    ...(image !== undefined ? { rootImage: { path: resolve(image), format: image.endsWith(".qcow2") ? ("qcow2" as const) : ("raw" as const) } } : {}),
    command: script !== undefined ? { shell: script } : { argv: p.positionals },
    ...(Object.keys(env).length ? { env } : {}),
    ...(workdir ? { cwd: workdir } : {}),
    ...(timeoutS ? { timeoutMs: timeoutS * 1000 } : {}),
    // vmstack's kernel panics below its floor; a kernel of the user's own may need less.
    memoryMiB: intOpt("run", p, "mem", stringOpt(p, "kernel") || process.env["VMSTACK_KERNEL"] ? 16 : DEFAULT_GUEST_MIN_MEMORY_MIB) ?? 256,
    cpus: intOpt("run", p, "cpus", 1) ?? 2,
    accel: accel as AccelChoice,
    kernelPath: stringOpt(p, "kernel"),
    stdin: forwardStdin ? (ctx.stdin as Readable) : undefined,
    stdout: ctx.stdout as Writable,
    stderr: ctx.stderr as Writable,
    ...(boolOpt(p, "console") ? { onConsole: (c: Buffer) => ctx.stderr.write(c) } : {}),
    hostEnv: process.env,
    signal: ctx.signal,
    ...(boolOpt(p, "cold-boot") ? { coldBoot: true } : {}),
    // A first run can sit silent for the probe's whole deadline: say why, to a person (a
    // terminal, or --verbose), not in a script's captured stderr.
    onAccelProbe: (ms: number) => {
      if (ctx.verbose || (ctx.stderr as { isTTY?: boolean }).isTTY === true) {
        ctx.stderr.write(`vmstack: checking whether KVM works on this host (a probe boot, once per host, QEMU and kernel; up to ${ms / 1000} s)\n`);
      }
    },
  });
  if (ctx.verbose) {
    const t = result.timings;
    ctx.stderr.write(
      `vmstack: [run] accelerator ${result.accel.accel} (${result.accel.reason}); initrd ${result.initrdCached ? "cached" : "built"}; ` +
        `prepare ${t.prepareMs} ms, boot ${t.bootMs} ms, command ${t.commandMs} ms, total ${t.totalMs} ms\n`,
    );
    ctx.stderr.write(`vmstack: [run] ${describeSnapshot(result.snapshot)}\n`);
    const f = result.files;
    if (f.shareMode) ctx.stderr.write(`vmstack: [run] shares: ${f.shareMode.mode} (${f.shareMode.reason})\n`);
    for (const [dir, list] of [["in", f.copiedIn], ["out", f.copiedOut]] as const) {
      for (const c of list) ctx.stderr.write(`vmstack: [run] copied ${dir} ${c.path}: ${c.bytes} bytes in ${Math.round(c.ms)} ms\n`);
    }
  }
  if (result.outputHeldOpen) {
    ctx.stderr.write("vmstack run: the command exited, but a background process it started still held its output open; output after the exit was not collected\n");
  }
  if (boolOpt(p, "json")) ctx.stderr.write(JSON.stringify(result) + "\n");
  if (result.timedOut) {
    ctx.stderr.write(`vmstack run: the command was killed after the ${timeoutS}s timeout\n`);
    return RUN_EXIT.timedOut;
  }
  if (result.signal) return 128 + ((constants.signals as Record<string, number>)[result.signal] ?? 0);
  return result.exitCode ?? RUN_EXIT.vmstackFailure;
}
