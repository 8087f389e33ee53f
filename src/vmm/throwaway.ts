/**
 * A throwaway VM (`vmstack run`): prepare the guest, choose the accelerator, boot, run one command
 * through the agent with stdin/stdout/stderr streamed, stop the VM, remove every temporary file.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { Readable, Writable } from "node:stream";
import { GuestVm } from "./guest-vm.js";
import { prepareGuestImage } from "./guest-image.js";
import type { AccelChoice, AccelDecision } from "./accel.js";
import { accelForGuest } from "./guest-accel.js";
import type { Env } from "../image/index.js";
import type { ExecRequest, ExecResult } from "../guest/index.js";
import { log } from "../lib/log.js";
import { isVmstackError } from "../lib/errors.js";
import { within } from "../lib/abort.js";
import { SYSROOT, TransferSession, type FilesOptions, type TransferReport } from "./transfer-session.js";
import { bootSnapshotEligibility, COLD_BOOT_ENV } from "./boot-snapshot-plan.js";
import { BootSnapshotStore } from "./boot-snapshot-store.js";
import { qmpSocketIn, startWithBootSnapshot, type SnapshotReport } from "./throwaway-snapshot.js";
import type { GuestVmOptions } from "./guest-vm.js";
import { QmpClient } from "./qmp/index.js";

export interface ThrowawayOptions extends FilesOptions {
  readonly command: { readonly argv: readonly string[] } | { readonly shell: string };
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Guest-side timeout for the command. */
  readonly timeoutMs?: number;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly accel: AccelChoice;
  readonly kernelPath?: string | undefined;
  /** The command's stdin; undefined means /dev/null. */
  readonly stdin?: Readable | undefined;
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly onConsole?: (chunk: Buffer) => void;
  readonly hostEnv: Env;
  readonly signal?: AbortSignal | undefined;
  /** Boot the kernel even when a boot snapshot could be used (`--cold-boot`; also $VMSTACK_COLD_BOOT). */
  readonly coldBoot?: boolean;
  /** Told before the one-time KVM probe boot, which can take its whole deadline. */
  readonly onAccelProbe?: ((deadlineMs: number) => void) | undefined;
}

export interface ThrowawayResult extends ExecResult {
  readonly accel: AccelDecision;
  readonly initrdCached: boolean;
  /** Shares, `--in`/`--out` copies: mechanism and throughput. */
  readonly files: TransferReport;
  /** Whether the VM was restored from a boot snapshot, saved one, or booted cold, and why. */
  readonly snapshot: SnapshotReport;
  /** bootMs: until the VM was ready (boot or restore); snapshotSaveMs: saving a new boot snapshot. */
  readonly timings: {
    readonly prepareMs: number;
    readonly bootMs: number;
    readonly snapshotSaveMs?: number;
    readonly commandMs: number;
    readonly totalMs: number;
  };
}

/** Boot deadlines scale with the accelerator: TCG is 10–50× slower than KVM, and shared hosts stall. */
export function bootTimeoutMs(accel: "kvm" | "tcg", env: Env = process.env): number {
  const override = Number(env["VMSTACK_BOOT_TIMEOUT_MS"]);
  if (Number.isFinite(override) && override > 0) return override;
  return accel === "kvm" ? 20_000 : 90_000;
}

export async function runThrowaway(o: ThrowawayOptions): Promise<ThrowawayResult> {
  const t0 = performance.now();
  // Unix socket paths are limited to 107 bytes: keep the run directory short.
  const runDir = mkdtempSync(join(tmpdir(), "vmstack-run-"));
  let files: TransferSession;
  try {
    files = TransferSession.plan(o, runDir, o.hostEnv);
  } catch (e) {
    rmSync(runDir, { recursive: true, force: true });
    throw e;
  }
  try {
    return await runIn(o, runDir, files, t0);
  } finally {
    await files.cleanup();
    rmSync(runDir, { recursive: true, force: true });
  }
}

async function runIn(o: ThrowawayOptions, runDir: string, files: TransferSession, t0: number): Promise<ThrowawayResult> {
  const image = await prepareGuestImage({ kernelPath: o.kernelPath, env: o.hostEnv, features: files.features, signal: o.signal });
  await files.makeDisks();
  log("debug", "run", `kernel ${image.kernel.release} (${image.kernel.source}): ${image.kernel.kernelPath}`);
  log("debug", "run", `initrd ${image.initrd.cached ? "cache hit" : "built"}: ${image.initrd.path}`);
  const eligibility = bootSnapshotEligibility({
    coldBootFlag: o.coldBoot ?? false,
    coldBootEnv: o.hostEnv[COLD_BOOT_ENV],
    virtiofsShares: files.features.includes("share") ? 1 : 0,
    drives: files.drives.length,
    nics: files.nics.length,
  });
  // Only a run that may save or restore a snapshot gets a QMP monitor: nothing else uses one.
  const qmpSocket = eligibility.eligible ? qmpSocketIn(runDir) : undefined;
  let qmp: QmpClient | undefined;
  const vmOptions = (accel: "kvm" | "tcg", shareArgs: readonly string[], signal?: AbortSignal): GuestVmOptions => ({
    name: accel === "kvm" && o.accel === "auto" ? "kvm-probe" : "run",
    kernelPath: image.kernel.kernelPath,
    initrdPath: image.initrd.path,
    accel,
    memoryMiB: o.memoryMiB,
    cpus: o.cpus,
    runDir,
    bootTimeoutMs: bootTimeoutMs(accel, o.hostEnv),
    signal,
    ...(o.onConsole ? { onConsole: o.onConsole } : {}),
    ...(files.drives.length ? { drives: files.drives } : {}),
    ...(files.nics.length ? { nics: files.nics } : {}),
    ...(shareArgs.length ? { extraArgs: shareArgs } : {}),
    ...(qmpSocket !== undefined ? { qmpSocket } : {}),
  });
  const boot = async (accel: "kvm" | "tcg", signal?: AbortSignal): Promise<GuestVm> => {
    const shareArgs = await files.startDaemons(o.memoryMiB, signal);
    const options = vmOptions(accel, shareArgs, signal);
    return GuestVm.boot({
      ...options,
      ...(qmpSocket !== undefined
        ? {
            afterSpawn: async (s: AbortSignal) => {
              qmp = await QmpClient.connect(qmpSocket, { timeoutMs: options.bootTimeoutMs, signal: s, label: options.name });
            },
          }
        : {}),
    });
  };
  let vm: GuestVm | undefined;
  try {
    // A probe VM that boots is kept and used for the command: no second boot.
    const { decision: accel, probeVm } = await accelForGuest({
      choice: o.accel,
      image,
      env: o.hostEnv,
      signal: o.signal,
      onProbe: o.onAccelProbe,
      bootKvm: (signal) => boot("kvm", signal),
    });
    log("debug", "run", `accelerator: ${accel.accel} (${accel.reason})`);
    const tBoot = performance.now();
    let snapshot: SnapshotReport = { mode: "cold", reason: eligibility.eligible ? "" : eligibility.reason };
    let snapshotSaveMs: number | undefined;
    if (eligibility.eligible && qmpSocket !== undefined) {
      const started = await startWithBootSnapshot({
        store: BootSnapshotStore.forEnv(o.hostEnv),
        vm: { ...vmOptions(accel.accel, [], o.signal), qmpSocket },
        initrdKey: image.initrd.key,
        probeVm,
        coldBoot: () => boot(accel.accel, o.signal),
        qmpOf: () => qmp,
        saveTimeoutMs: bootTimeoutMs(accel.accel, o.hostEnv),
        signal: o.signal,
      });
      vm = started.vm;
      qmp = started.qmp;
      snapshot = started.report;
      snapshotSaveMs = started.report.saveMs;
    } else {
      log("debug", "run", `cold boot: ${snapshot.reason}`);
    }
    vm ??= probeVm ?? (await boot(accel.accel, o.signal));
    await files.intoGuest(vm.agent, o.signal);
    const tCmd = performance.now();
    const result = await runCommandIn(vm, o);
    const tEnd = performance.now();
    const succeeded = result.exitCode === 0 && !result.timedOut;
    await files.outOfGuest(vm.agent, succeeded, o.signal);
    return {
      ...result,
      accel,
      initrdCached: image.initrd.cached,
      files: files.report(),
      snapshot,
      timings: {
        prepareMs: Math.round(tBoot - t0),
        bootMs: Math.round(tCmd - tBoot - (snapshotSaveMs ?? 0)),
        ...(snapshotSaveMs !== undefined ? { snapshotSaveMs } : {}),
        commandMs: Math.round(tEnd - tCmd),
        totalMs: Math.round(tEnd - t0),
      },
    };
  } finally {
    qmp?.close();
    await vm?.destroy();
  }
}

/**
 * With a root image the command runs chrooted into it: the agent lives in the initramfs, the
 * image's own programs (gcc, make) under SYSROOT. The working directory is entered inside the
 * chroot (the agent's chdir would be outside it).
 */
function commandFor(o: ThrowawayOptions): Pick<ExecRequest, "argv" | "shell" | "cwd"> {
  if (!o.rootImage) return { ...("argv" in o.command ? { argv: o.command.argv } : { shell: o.command.shell }), ...(o.cwd ? { cwd: o.cwd } : {}) };
  const inner = "argv" in o.command ? o.command.argv : ["/bin/sh", "-c", o.command.shell];
  return { argv: ["chroot", SYSROOT, "/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "vmstack-chroot", o.cwd ?? "/", ...inner] };
}

async function runCommandIn(vm: GuestVm, o: ThrowawayOptions): Promise<ExecResult> {
  const request: ExecRequest = {
    ...commandFor(o),
    ...(o.env ? { env: o.env } : {}),
    ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
    stdin: o.stdin ? "pipe" : "null",
    ...(o.signal ? { signal: o.signal } : {}),
  };
  const handle = vm.agent.exec(request);
  const outputs = Promise.all([pipeline(handle.stdout, o.stdout, { end: false }), pipeline(handle.stderr, o.stderr, { end: false })]);
  if (o.stdin) void feedStdin(o.stdin, handle);
  // The VM dying mid-command (a guest panic ends QEMU through panic=-1 + -no-reboot) is an error
  // with the console tail, never a hang.
  const died = vm.exited.then((exit) => Promise.reject(vm.diedError(exit)));
  died.catch(() => undefined);
  try {
    const result = await Promise.race([handle.result, died]);
    await outputs;
    return result;
  } catch (e) {
    // The agent channel often closes a moment before QEMU's exit is seen: prefer the VM's own
    // story (exit status + console tail) when it follows shortly.
    if (isVmstackError(e, "GUEST_GONE")) {
      const exit = await within(vm.exited, 2000);
      if (exit) throw vm.diedError(exit);
    }
    throw e;
  }
}

async function feedStdin(stdin: Readable, handle: { writeStdin(d: Uint8Array): Promise<void>; closeStdin(): Promise<void> }): Promise<void> {
  try {
    for await (const chunk of stdin) await handle.writeStdin(typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer));
    await handle.closeStdin();
  } catch (e) {
    // After the command exits, stdin is irrelevant; anything else surfaces through the result.
    log("debug", "run", `stdin: ${e instanceof Error ? e.message : String(e)}`);
  }
}

