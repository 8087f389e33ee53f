/**
 * A booted VM running vmstack's guest agent: QEMU started with direct kernel boot, its console
 * kept (tail + optional sink), and an AgentClient connected over the virtio-serial channel.
 * Throwaway runs (`vmstack run`), the accelerator probe and the test framework all boot through here.
 */
import type { Socket } from "node:net";
import { join } from "node:path";
import { existsSync, rmSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { buildQemuArgs, type Accel, type DriveConfig, type MachineConfig, type MachineType, type NicArgsConfig } from "./qemu-args.js";
import { qemuBinary, tscKhz } from "./host.js";
import { AgentClient, AGENT_PORT_NAME } from "../guest/index.js";
import { spawnManaged, TailBuffer, type Exit, type ManagedChild } from "../lib/process.js";
import { retryUntil } from "../lib/retry.js";
import { VmstackError, isVmstackError, messageOf } from "../lib/errors.js";
import { log, logEnabled } from "../lib/log.js";
import { connectWhenListening } from "../lib/unix-socket.js";

export interface GuestVmOptions {
  /** For messages: "run", a machine name. */
  readonly name: string;
  readonly kernelPath: string;
  readonly initrdPath: string;
  readonly accel: Accel;
  readonly machine?: MachineType;
  readonly memoryMiB: number;
  readonly cpus: number;
  /** A private directory for this VM's sockets (short path: Unix socket paths max 107 bytes). */
  readonly runDir: string;
  /** Extra kernel command line words. */
  readonly extraAppend?: readonly string[];
  readonly extraArgs?: readonly string[];
  /** Every console byte, as it arrives. */
  readonly onConsole?: (chunk: Buffer) => void;
  /** Deadline for boot + agent handshake, all attempts together. */
  readonly bootTimeoutMs: number;
  /** Fresh boots that stall are retried within the deadline, up to this many attempts (default 3). */
  readonly bootAttempts?: number;
  readonly signal?: AbortSignal | undefined;
  /** The QEMU to run (default: qemuBinary(), i.e. $VMSTACK_QEMU or qemu-system-x86_64). */
  readonly qemu?: string;
  /** A QMP monitor on this Unix socket (the test framework drives QEMU through it). */
  readonly qmpSocket?: string;
  /** Network cards (test VLANs, user-mode NAT). */
  readonly nics?: readonly NicArgsConfig[];
  /** Disks (scratch disks, images; `vmstack run --scratch`). */
  readonly drives?: readonly DriveConfig[];
  /** Start from a saved state (`-incoming URI`, e.g. "exec:cat state.bin") instead of booting. */
  readonly incoming?: string;
  /** Keep QEMU's stdin open so bytes can be typed on the serial console (writeConsole). */
  readonly consoleInput?: boolean;
  /**
   * Called once QEMU is spawned, before the agent handshake; the boot deadline's signal is passed.
   * E.g. connect QMP, or resume a VM restored with `incoming` (its agent answers only once running).
   */
  readonly afterSpawn?: (signal: AbortSignal) => Promise<void>;
  /**
   * Called once the agent socket is connected, before the handshake. A restored VM is resumed
   * here rather than in afterSpawn: with the host already connected when its vCPUs run again, the
   * guest's port never looks hung up, and the agent answers the first HELLO instead of noticing
   * a returning host on its next 50 ms check.
   */
  readonly afterConnect?: (signal: AbortSignal) => Promise<void>;
}

/**
 * The kernel command line, each word for a reason (timings in docs/boot.md):
 * - console=ttyS0 quiet loglevel=1: every serial byte is an emulated UART write; quiet saves ~0.3 s.
 *   loglevel=1 still prints KERN_EMERG, so a panic shows up in the console tail of the error.
 * - no_timer_check tsc=reliable: skip timer/TSC sanity loops that are slow and pointless in a VM.
 * - i8042.*: no PS/2 controller probing (microvm has none; on pc it costs probe time).
 * - cryptomgr.notests: skip crypto self-tests at boot.
 * - random.trust_cpu=on: do not wait for entropy.
 * - panic=-1: reboot at once on a panic; with -no-reboot that ends QEMU, so a panicking guest is
 *   reported (with the console tail) instead of hanging.
 * - tsc_early_khz: microvm has no PIT/HPET to calibrate the TSC against under TCG; without it the
 *   guest hangs at boot (qemu-notes §2).
 */
export function kernelCommandLine(machine: MachineType, accel: Accel, khz: number | undefined, extra: readonly string[] = []): string {
  const words = [
    "console=ttyS0",
    "quiet",
    "loglevel=1",
    "no_timer_check",
    "tsc=reliable",
    "i8042.noaux",
    "i8042.nomux",
    "i8042.nopnp",
    "i8042.dumbkbd",
    "cryptomgr.notests",
    "random.trust_cpu=on",
    "panic=-1",
  ];
  if (machine === "microvm" && accel === "tcg" && khz !== undefined) words.push(`tsc_early_khz=${khz}`);
  return [...words, ...extra].join(" ");
}

export class GuestVm {
  readonly console = new TailBuffer(16384);
  #qemu: ManagedChild | undefined;
  #agent: AgentClient | undefined;
  #socket: Socket | undefined;
  readonly argv: readonly string[];

  private constructor(
    readonly options: GuestVmOptions,
    /** This attempt's share of the boot deadline. */
    private readonly attemptTimeoutMs: number = options.bootTimeoutMs,
  ) {
    this.argv = GuestVm.argvFor(options);
  }

  /** The QEMU command line these options give (pure but for host facts: QEMU binary, TSC). */
  static argvFor(options: GuestVmOptions): string[] {
    const machine = options.machine ?? defaultMachine(options.accel);
    const config: MachineConfig = {
      machine,
      accel: options.accel,
      memoryMiB: options.memoryMiB,
      cpus: options.cpus,
      kernel: options.kernelPath,
      initrd: options.initrdPath,
      append: kernelCommandLine(machine, options.accel, tscKhz(), options.extraAppend),
      serial: { kind: "stdio" },
      channels: [{ name: AGENT_PORT_NAME, socketPath: join(options.runDir, "agent.sock") }],
      noReboot: true,
      ...(options.qmpSocket !== undefined ? { qmpSocket: options.qmpSocket } : {}),
      ...(options.nics ? { nics: options.nics } : {}),
      ...(options.drives ? { drives: options.drives } : {}),
      ...(options.extraArgs || options.incoming !== undefined
        ? { extraArgs: [...(options.extraArgs ?? []), ...(options.incoming !== undefined ? ["-incoming", options.incoming] : [])] }
        : {}),
    };
    return [options.qemu ?? qemuBinary(), ...buildQemuArgs(config)];
  }

  /** Starts QEMU and waits for the agent; on any failure QEMU is stopped before this throws. */
  static async boot(options: GuestVmOptions): Promise<GuestVm> {
    // A stalled boot is retried. Under TCG on a loaded host, about one fresh boot in 30–40 stops
    // making progress in the kernel's initcalls (seen after "Loading compiled-in X.509
    // certificates", guest clock frozen) and never recovers; a new QEMU boots normally. A restore
    // (`incoming`) is not retried: it is not a fresh boot, and its failure has another cause.
    const attempts = options.incoming === undefined ? Math.max(1, options.bootAttempts ?? 3) : 1;
    const overallDeadline = Date.now() + options.bootTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      const left = Math.max(1, overallDeadline - Date.now());
      const last = attempt >= attempts;
      const budget = last ? left : Math.min(left, Math.ceil(options.bootTimeoutMs / attempts));
      const vm = new GuestVm(options, budget);
      try {
        await vm.#start();
        return vm;
      } catch (e) {
        await vm.destroy();
        if (last || !isVmstackError(e, "BOOT_FAILED") || e.facts["stalled"] !== true || overallDeadline - Date.now() <= 0) throw e;
        log("warn", options.name, `boot attempt ${attempt} stalled after ${budget} ms; starting a new QEMU`);
        rmSync(join(options.runDir, "agent.sock"), { force: true });
      }
    }
  }

  get agent(): AgentClient {
    if (!this.#agent) throw new Error("GuestVm.agent used before boot");
    return this.#agent;
  }

  get exited(): Promise<Exit> {
    if (!this.#qemu) throw new Error("GuestVm.exited used before boot");
    return this.#qemu.exited;
  }

  /** Types bytes on the serial console (needs `consoleInput`). */
  writeConsole(data: string | Uint8Array): void {
    const stdin = this.#qemu?.process.stdin;
    if (!stdin) throw new VmstackError("CONSOLE_INPUT_OFF", `${this.options.name}: the console takes no input (start the VM with consoleInput)`);
    stdin.write(data);
  }

  get pid(): number {
    return this.#qemu?.pid ?? -1;
  }

  async #start(): Promise<void> {
    const o = this.options;
    log("debug", o.name, `QEMU: ${this.argv.map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(" ")}`);
    const qemu = spawnManaged(this.argv, { label: "QEMU", stdio: [o.consoleInput ? "pipe" : "ignore", "pipe", "pipe"] });
    this.#qemu = qemu;
    // Typing on the console of a QEMU that just exited must not crash the host process (EPIPE).
    qemu.process.stdin?.on("error", (e) => log("debug", o.name, `console input: ${messageOf(e)}`));
    qemu.process.stdout?.on("data", (c: Buffer) => {
      this.console.push(c);
      o.onConsole?.(c);
    });
    const started = performance.now();
    // One deadline for the whole boot; QEMU exiting early ends the wait at once.
    const deadline = AbortSignal.timeout(this.attemptTimeoutMs);
    const early = new AbortController();
    void qemu.exited.then(
      (exit) => early.abort(this.#bootFailure(`QEMU exited during boot (${describeExit(exit)})`)),
      (e: unknown) => early.abort(e),
    );
    const signal = AbortSignal.any([deadline, early.signal, ...(o.signal ? [o.signal] : [])]);
    try {
      if (o.afterSpawn) await o.afterSpawn(signal);
      const sockPath = join(o.runDir, "agent.sock");
      this.#socket = await retryUntil(() => (existsSync(sockPath) ? connectWhenListening(sockPath) : undefined), {
        what: "QEMU's agent socket",
        timeoutMs: this.attemptTimeoutMs,
        signal,
        initialDelayMs: 5,
        maxDelayMs: 50,
      });
      if (o.afterConnect) await o.afterConnect(signal);
      this.#agent = await AgentClient.connect(this.#socket, { timeoutMs: this.attemptTimeoutMs, signal, clientName: "vmstack" });
      log("debug", o.name, `agent ready after ${Math.round(performance.now() - started)} ms: ${this.#agent.info.kernel}`);
    } catch (e) {
      // A connection that broke (EPIPE on QMP, the agent socket closed) is usually QEMU failing,
      // e.g. refusing a broken snapshot: give it up to 0.5 s to exit or at least to say why on
      // stderr (the failure below quotes it), so that the reason is QEMU's, not "write EPIPE".
      const timedOut = deadline.aborted || isVmstackError(e, "TIMEOUT");
      if (!early.signal.aborted && !timedOut && !o.signal?.aborted) {
        const done = new AbortController();
        const wait = sleep(500, undefined, { signal: AbortSignal.any([done.signal, ...(o.signal ? [o.signal] : [])]) }).catch(() => undefined);
        await Promise.race([qemu.exited.catch(() => undefined), wait]);
        done.abort(); // QEMU exited first: no timer left to keep the process alive
      }
      if (early.signal.aborted) throw early.signal.reason;
      o.signal?.throwIfAborted();
      if (timedOut) {
        throw this.#bootFailure(`the guest agent did not answer within ${this.attemptTimeoutMs} ms`, undefined, { stalled: true });
      }
      throw this.#bootFailure(`could not reach the guest agent: ${messageOf(e)}`, e);
    }
  }

  #bootFailure(what: string, cause?: unknown, extraFacts: Record<string, unknown> = {}): VmstackError {
    const lines = this.console.lines(15);
    const stderr = this.#qemu?.stderrTail.lines(5) ?? [];
    return new VmstackError(
      "BOOT_FAILED",
      (this.options.name === "run" ? what : `${this.options.name}: ${what}`) +
        (lines.length ? `\nlast console lines:\n  ${lines.join("\n  ")}` : "\n(the guest printed nothing on its console)") +
        (stderr.length ? `\nQEMU said:\n  ${stderr.join("\n  ")}` : ""),
      { cause, facts: { consoleTail: lines, qemuStderr: stderr, ...extraFacts } },
    );
  }

  /** Failure description for a VM that died while a command was running. */
  diedError(exit: Exit): VmstackError {
    const panic = /Kernel panic - not syncing: [^\r\n]*/.exec(this.console.text())?.[0];
    return this.#bootFailure(`the VM stopped unexpectedly (${panic ? `the guest kernel panicked: "${panic}"` : describeExit(exit)})`);
  }

  /**
   * Stops QEMU at once. A throwaway VM has nothing to flush: its disks are temporary, and files
   * coming out have already been copied over the agent channel.
   */
  async destroy(): Promise<void> {
    this.#agent?.close();
    this.#socket?.destroy();
    await this.#qemu?.stop(1000);
    if (logEnabled("debug") && this.#qemu) log("debug", this.options.name, "QEMU stopped");
  }
}

/** microvm boots fastest under TCG (no PCI scan, no firmware); it is also fine under KVM. */
function defaultMachine(_accel: Accel): MachineType {
  return "microvm";
}

function describeExit(exit: Exit): string {
  return exit.signal ? `killed by ${exit.signal}` : `exit status ${exit.code}`;
}

