/**
 * A machine in a VM test: the verbs users know from the NixOS test driver, in camelCase, over
 * vmstack's guest agent (commands with separate stdout/stderr/exit status, file transfer) and QMP.
 *
 * Differences from the NixOS driver, on purpose:
 * - Commands are argv arrays or one shell string run by the agent, never text typed into a shell;
 *   a background process that keeps stdout open does not hang `succeed` (the agent reports the
 *   exit after a short grace period, with outputHeldOpen).
 * - Every wait has a deadline (scaled with the accelerator) and an AbortSignal, and its timeout
 *   error names what was awaited and shows the machine's last console lines.
 * - Polls go through src/lib/retry.ts with backoff instead of a fixed 1 s sleep; console waits are
 *   event-driven, not polled.
 * - A machine that dies unexpectedly is a CRASH with the console tail, never a hang.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { GuestVm } from "../vmm/guest-vm.js";
import { LineSplitter, QmpClient, type QmpEvent } from "../vmm/qmp/index.js";
import type { RunOutput } from "../guest/index.js";
import type { Exit } from "../lib/process.js";
import { VmstackError, isVmstackError, messageOf } from "../lib/errors.js";
import { retryUntil } from "../lib/retry.js";
import { log } from "../lib/log.js";
import { TestFailure, type MachineCrashed } from "./errors.js";
import { commandFailure, crashError, escapeRegExp, formatConsole, portProbe, show, timeoutFailure } from "./machine-messages.js";
import type { Command, CommandOptions, ExecuteResult, MachineOptions, MachineScope, WaitOptions } from "./machine-types.js";
import type { MachineHost } from "./machine-host.js";
import { NAT_GATEWAY, NAT_GUEST_ADDRESS, hostsFile, natNicArgs, networkScript, vlanNicArgs, type GuestNic } from "./network.js";
import { resumeRestored } from "./snapshot.js";
import { planLaunch, saveShape } from "./machine-launch.js";

export type { Command, CommandOptions, ExecuteResult, MachineOptions, MachineScope, WaitOptions } from "./machine-types.js";

type State = "off" | "starting" | "up" | "stopping" | "exited";

const CONSOLE_KEEP = 256 * 1024;

export class Machine {
  #state: State = "off";
  #vm: GuestVm | undefined;
  #qmp: QmpClient | undefined;
  /** Boot plus guest setup plus queued /etc/hosts refreshes; every verb waits on it. */
  #ready: Promise<void> = Promise.resolve();
  /** The machine stopped without shutdown()/crash()/waitForShutdown() asking for it. */
  #unexpected: Exit | undefined;
  #console = "";
  readonly #consoleWaiters = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly options: MachineOptions,
    private readonly host: MachineHost,
    private readonly scope: MachineScope,
    /** This machine's address on each of its VLANs. */
    readonly addresses: ReadonlyMap<number, string>,
  ) {}

  // ---------------------------------------------------------------- lifecycle

  /**
   * Boots the machine (or restores it from a snapshot) and waits until it answers; idempotent
   * while running. The boot itself is bounded by the run's boot deadline (scaled with the
   * accelerator, a stalled boot retried); `timeout` and `signal` bound this wait for it.
   */
  async start(o: WaitOptions = {}): Promise<void> {
    const ready = this.#kick();
    if (o.timeout === undefined && o.signal === undefined) return ready;
    const timeoutMs = o.timeout ?? this.host.timeouts.bootMs;
    const signal = AbortSignal.any([this.#signal(o.signal), AbortSignal.timeout(timeoutMs)]);
    const stop = new Promise<never>((_, reject) =>
      signal.addEventListener(
        "abort",
        () => reject(this.#signal(o.signal).aborted ? signal.reason : new VmstackError("TIMEOUT", `${this.name}: not up within ${timeoutMs} ms${formatConsole(this.#console)}`)),
        { once: true },
      ),
    );
    stop.catch(() => undefined);
    return Promise.race([ready, stop]);
  }

  #kick(): Promise<void> {
    if (this.#state === "off" || this.#state === "exited") {
      this.#state = "starting";
      const t0 = performance.now();
      this.#ready = this.#boot().then(
        (how) => this.#emitStep(how, performance.now() - t0, true),
        (e: unknown) => {
          this.#emitStep("boot", performance.now() - t0, false, messageOf(e));
          throw e;
        },
      );
      // Nobody may be awaiting yet (machines of a test boot in parallel): keep a failure for the
      // next verb instead of crashing the process with an unhandled rejection.
      this.#ready.catch(() => undefined);
    }
    return this.#ready;
  }

  /** QEMU's process id (-1 before the first boot). */
  get pid(): number {
    return this.#vm?.pid ?? -1;
  }

  get isUp(): boolean {
    return this.#state === "up";
  }

  /** Full console output since the last boot (bounded to the last 256 KiB). */
  get consoleText(): string {
    return this.#console;
  }

  /** Set when the machine stopped without the test asking; the runner reports this as CRASH. */
  get unexpectedExit(): Exit | undefined {
    return this.#unexpected;
  }

  /** Clean power-off through the agent, then waits for QEMU to exit. */
  async shutdown(o: WaitOptions = {}): Promise<void> {
    await this.#step("shutdown", async () => {
      const vm = await this.#up();
      this.#state = "stopping";
      await vm.agent.poweroff(this.#opts(o));
      await this.#awaitExit(vm, o.timeout ?? this.host.timeouts.shutdownMs, o.signal, "shutdown");
    });
  }

  /** Pulls the plug: QEMU quits at once (QMP `quit`), the guest gets no say. */
  async crash(): Promise<void> {
    await this.#step("crash", async () => {
      const vm = this.#vm;
      if (!vm || this.#state === "exited") return;
      this.#state = "stopping";
      await this.#qmp?.execute("quit", undefined, { timeoutMs: 5000 }).catch(() => undefined);
      await vm.destroy();
    });
  }

  /**
   * Power-cycles the machine. The guest lives in RAM (an initramfs), so a reboot is a fresh boot,
   * exactly as on hardware; QEMU runs with -no-reboot, so this is shutdown + start.
   */
  async reboot(o: WaitOptions = {}): Promise<void> {
    await this.shutdown(o);
    await this.start(o);
  }

  /** Waits for the machine to stop by itself (e.g. after the test ran `poweroff`). */
  async waitForShutdown(o: WaitOptions = {}): Promise<void> {
    await this.#step("waitForShutdown", async () => {
      await this.#ready.catch(() => undefined);
      const vm = this.#vm;
      if (!vm) throw new VmstackError("MACHINE_NOT_STARTED", `${this.name}: waitForShutdown on a machine that never started`);
      await this.#awaitExit(vm, o.timeout ?? this.host.timeouts.waitMs, o.signal, "waitForShutdown()");
    });
  }

  /**
   * Stops QEMU whatever its state; used by the runner's cleanup, after it aborted the test's
   * signal. Never throws. A boot still in flight is awaited first (the aborted signal ends it
   * within moments, and GuestVm stops its own QEMU when a boot fails), so no QEMU outlives this.
   */
  async destroy(): Promise<void> {
    if (this.#state !== "exited") this.#state = "stopping";
    await Promise.race([this.#ready.catch(() => undefined), new Promise((r) => setTimeout(r, 10_000).unref())]);
    this.#qmp?.close();
    await this.#vm?.destroy().catch(() => undefined);
  }

  // ---------------------------------------------------------------- commands

  /** Runs a command (argv array, or a string for /bin/sh -c); never throws on a non-zero exit. */
  async execute(command: Command, o: CommandOptions = {}): Promise<ExecuteResult> {
    return this.#step(`execute ${show(command)}`, () => this.#exec(command, o));
  }

  /** Runs a command that must exit 0; returns its stdout. */
  async succeed(command: Command, o: CommandOptions = {}): Promise<string> {
    return this.#step(`succeed ${show(command)}`, async () => {
      const r = await this.#exec(command, o);
      if (r.exitCode !== 0) throw this.#commandFailure("succeed", command, r, "to exit 0");
      return r.stdout;
    });
  }

  /** Runs a command that must fail (exit non-zero); returns its stdout. */
  async fail(command: Command, o: CommandOptions = {}): Promise<string> {
    return this.#step(`fail ${show(command)}`, async () => {
      const r = await this.#exec(command, o);
      if (r.exitCode === 0) throw this.#commandFailure("fail", command, r, "to fail");
      return r.stdout;
    });
  }

  /** Repeats a command until it exits 0 (backing off between tries); returns its stdout. */
  async waitUntilSucceeds(command: Command, o: WaitOptions = {}): Promise<string> {
    return this.#step(`waitUntilSucceeds ${show(command)}`, () => this.#pollCommand(`waitUntilSucceeds(${show(command)})`, command, true, o));
  }

  /** Repeats a command until it exits non-zero; returns its stdout. */
  async waitUntilFails(command: Command, o: WaitOptions = {}): Promise<string> {
    return this.#step(`waitUntilFails ${show(command)}`, () => this.#pollCommand(`waitUntilFails(${show(command)})`, command, false, o));
  }

  async waitForFile(path: string, o: WaitOptions = {}): Promise<void> {
    await this.#step(`waitForFile ${path}`, () => this.#pollCommand(`waitForFile(${JSON.stringify(path)})`, ["test", "-e", path], true, o));
  }

  /**
   * Waits until something listens on TCP `port`: in the guest's own socket table by default
   * (busybox nc has no -z), or by connecting to `address` when one is given.
   */
  async waitForOpenPort(port: number, o: WaitOptions & { address?: string } = {}): Promise<void> {
    await this.#step(`waitForOpenPort ${port}`, () => this.#pollCommand(`waitForOpenPort(${port})`, portProbe(port, o.address), true, o));
  }

  async waitForClosedPort(port: number, o: WaitOptions & { address?: string } = {}): Promise<void> {
    await this.#step(`waitForClosedPort ${port}`, () => this.#pollCommand(`waitForClosedPort(${port})`, portProbe(port, o.address), false, o));
  }

  /** Waits until the serial console (since the last boot) matches `pattern`; returns the match. */
  async waitForConsoleText(pattern: RegExp | string, o: WaitOptions = {}): Promise<string> {
    const re = typeof pattern === "string" ? new RegExp(escapeRegExp(pattern)) : pattern;
    return this.#step(`waitForConsoleText ${String(re)}`, () => {
      const timeoutMs = o.timeout ?? this.host.timeouts.waitMs;
      return new Promise<string>((resolve, reject) => {
        const signal = this.#signal(o.signal);
        const check = (): void => {
          const m = re.exec(this.#console);
          if (m) done(() => resolve(m[0]));
        };
        const timer = setTimeout(() => done(() => reject(this.#timeout(`waitForConsoleText(${String(re)})`, timeoutMs))), timeoutMs);
        const onAbort = (): void => done(() => reject(signal.reason));
        const done = (f: () => void): void => {
          clearTimeout(timer);
          this.#consoleWaiters.delete(check);
          signal.removeEventListener("abort", onAbort);
          f();
        };
        signal.addEventListener("abort", onAbort, { once: true });
        this.#consoleWaiters.add(check);
        check();
      });
    });
  }

  /** Types characters on the serial console (e.g. for a program reading /dev/ttyS0). */
  async sendConsole(chars: string): Promise<void> {
    await this.#step(`sendConsole ${JSON.stringify(chars)}`, async () => (await this.#up()).writeConsole(chars));
  }

  // ---------------------------------------------------------------- files, network, monitor

  /** Copies a host file into the guest (parent directories are created). */
  async copyFromHost(hostPath: string, guestPath: string, o: { mode?: number; signal?: AbortSignal } = {}): Promise<void> {
    await this.#step(`copyFromHost ${hostPath} → ${guestPath}`, async () => {
      const vm = await this.#up();
      const data = readFileSync(hostPath);
      await this.#guard(vm, vm.agent.writeFile(guestPath, data, { mkdirs: true, mode: o.mode ?? 0o644, signal: this.#signal(o.signal) }));
    });
  }

  /** Copies a guest file to the host (default: the run's output directory/<machine>/); returns the host path. */
  async copyFromVm(guestPath: string, hostDir?: string, o: { signal?: AbortSignal } = {}): Promise<string> {
    return this.#step(`copyFromVm ${guestPath}`, async () => {
      const vm = await this.#up();
      const { data } = await this.#guard(vm, vm.agent.readFile(guestPath, { signal: this.#signal(o.signal) }));
      const dir = hostDir ?? join(this.host.outDir, this.name);
      mkdirSync(dir, { recursive: true });
      const target = join(dir, basename(guestPath));
      writeFileSync(target, data);
      return target;
    });
  }

  /** Forwards host TCP port 127.0.0.1:hostPort to guestPort (needs `nat: true`). */
  async forwardPort(hostPort: number, guestPort: number): Promise<void> {
    if (!this.options.nat) throw new VmstackError("NO_NAT", `${this.name}: forwardPort needs a NAT card (machine option nat: true)`);
    await this.#step(`forwardPort ${hostPort} → ${guestPort}`, async () => {
      await this.#up();
      const out = await this.qmp<string>("human-monitor-command", { "command-line": `hostfwd_add nat.backend tcp:127.0.0.1:${hostPort}-:${guestPort}` });
      if (out.trim() !== "") throw new VmstackError("FORWARD_FAILED", `${this.name}: forwardPort ${hostPort} → ${guestPort}: ${out.trim()}`);
    });
  }

  /** Unplugs the machine's VLAN cables (QMP set_link off); NAT stays up. */
  async block(): Promise<void> {
    await this.#step("block", () => this.#setLinks(false));
  }

  async unblock(): Promise<void> {
    await this.#step("unblock", () => this.#setLinks(true));
  }

  /** The machine has no display device (microvm, serial console only), so there is nothing to capture. */
  screenshot(_name: string): Promise<never> {
    return Promise.reject(new VmstackError("NO_GRAPHICS", `${this.name}: screenshot needs graphics, and test machines have only a serial console`));
  }

  /** Escape hatch: any QMP command. */
  async qmp<T = unknown>(command: string, args?: Readonly<Record<string, unknown>>): Promise<T> {
    await this.#up();
    if (!this.#qmp) throw new VmstackError("NO_QMP", `${this.name}: no QMP connection`);
    return this.#qmp.execute<T>(command, args, { timeoutMs: this.host.timeouts.commandMs, signal: this.scope.signal });
  }

  async waitForQmpEvent(name: string, o: WaitOptions = {}): Promise<QmpEvent> {
    await this.#up();
    if (!this.#qmp) throw new VmstackError("NO_QMP", `${this.name}: no QMP connection`);
    return this.#qmp.waitForEvent(name, { timeoutMs: o.timeout ?? this.host.timeouts.waitMs, signal: this.#signal(o.signal) });
  }

  /** Rewrites /etc/hosts from the test's current machines (queued behind boot; called when a peer joins). */
  refreshHosts(): void {
    if (this.#state !== "starting" && this.#state !== "up") return;
    this.#ready = this.#ready.then(() => this.#writeHosts());
    this.#ready.catch(() => undefined);
  }

  // ---------------------------------------------------------------- internals

  /** Boots or restores; says which, for the log. */
  async #boot(): Promise<string> {
    // Let the test body declare its other machines first (consecutive `await machine(…)` calls
    // only take microtasks): then /etc/hosts, part of the snapshot key, is the same every time.
    await new Promise((r) => setImmediate(r));
    this.scope.signal.throwIfAborted();
    const host = this.host;
    const plan = await planLaunch(host, this.name, this.options, this.addresses, this.scope);
    const { saved, hosts } = plan;
    const timeoutMs = host.timeouts.bootMs;
    this.#console = "";
    const lines = new LineSplitter();
    const tSpawn = performance.now();
    const vm = await GuestVm.boot({
      ...plan.vm,
      onConsole: (chunk) => {
        const text = chunk.toString("utf8");
        this.#console = (this.#console + text).slice(-CONSOLE_KEEP);
        for (const line of lines.push(text)) host.timeline.emit({ type: "console", test: this.scope.test, machine: this.name, line });
        for (const w of [...this.#consoleWaiters]) w();
      },
      afterSpawn: async (signal) => {
        this.#qmp = await QmpClient.connect(plan.qmpSocket, { timeoutMs, signal, label: this.name });
        this.#qmp.onEvent((e) => host.timeline.emit({ type: "qmp", test: this.scope.test, machine: this.name, event: e.event, data: e.data }));
        if (saved) {
          await resumeRestored(this.#qmp, { timeoutMs, signal });
          log("debug", this.name, `state loaded and resumed ${Math.round(performance.now() - tSpawn)} ms after spawn`);
        }
      },
    });
    this.#vm = vm;
    if (this.scope.signal.aborted) {
      await vm.destroy();
      this.scope.signal.throwIfAborted();
    }
    void vm.exited.then((exit) => this.#onExit(vm, exit));
    this.#state = "up";
    // Every machine restored from one state would otherwise share its CRNG state and its clock
    // (docs/agent-protocol.md, REFRESH).
    if (saved) await this.#guard(vm, vm.agent.refresh({ seed: randomBytes(64), signal: this.scope.signal }));
    // Addresses and the hostname are part of the snapshot key, so a restored machine already has
    // them: right after a restore TCG's translation cache is cold and every fork+exec is slow.
    if (!saved) {
      await this.#configureNetwork(vm);
      await this.#writeHosts(hosts);
    }
    if (!saved && this.#qmp) {
      // The first machine of this shape saves it, after the network setup and before anything the
      // test does, then carries on.
      const ms = await saveShape(host, plan.key, this.#qmp, this.scope.signal);
      if (ms !== undefined) this.#emitStep("snapshot saved", ms, true);
    }
    // A peer declared while this machine booted changes its /etc/hosts.
    if (hostsFile(this.name, this.scope.peers()) !== hosts) await this.#writeHosts();
    log("debug", this.name, `${saved ? "restored" : "booted"}: ready ${Math.round(performance.now() - tSpawn)} ms after spawn`);
    return saved ? "restore from snapshot" : "boot";
  }

  async #configureNetwork(vm: GuestVm): Promise<void> {
    const nics: GuestNic[] = [
      ...(this.options.network ?? []).map((v) => ({ id: `vlan${v.vlan}`, mac: vlanNicArgs(this.name, v.vlan, { group: "", port: 0 }).mac, address: `${this.addresses.get(v.vlan) ?? ""}/24` })),
      ...(this.options.nat ? [{ id: "nat", mac: natNicArgs(this.name).mac, address: NAT_GUEST_ADDRESS, gateway: NAT_GATEWAY }] : []),
    ];
    const r = await this.#guard(vm, vm.agent.run({ shell: networkScript(this.name, nics), timeoutMs: this.host.timeouts.commandMs, signal: this.scope.signal }));
    if (r.exitCode !== 0) throw new VmstackError("GUEST_SETUP_FAILED", `${this.name}: network setup failed: ${r.stderr.toString().trim()}`);
  }

  async #writeHosts(content = hostsFile(this.name, this.scope.peers())): Promise<void> {
    const vm = this.#vm;
    if (!vm || this.#state !== "up") return;
    await this.#guard(vm, vm.agent.writeFile("/etc/hosts", content, { signal: this.scope.signal }));
  }

  #onExit(vm: GuestVm, exit: Exit): void {
    if (vm !== this.#vm) return;
    if (this.#state !== "stopping") this.#unexpected = exit;
    this.#state = "exited";
    this.#qmp?.close();
  }

  /** The running VM, after boot and setup; throws if it is down. */
  async #up(): Promise<GuestVm> {
    if (this.#state === "off") throw new VmstackError("MACHINE_NOT_STARTED", `${this.name} is not started (call start())`);
    await this.#ready;
    const vm = this.#vm;
    if (this.#state === "exited" || !vm) {
      if (this.#unexpected) throw this.#crashed(this.#unexpected);
      throw new VmstackError("MACHINE_DOWN", `${this.name} is stopped (call start() to boot it again)`);
    }
    return vm;
  }

  async #exec(command: Command, o: CommandOptions): Promise<ExecuteResult> {
    const vm = await this.#up();
    const timeoutMs = o.timeout ?? this.host.timeouts.commandMs;
    // The guest enforces the timeout; the host deadline (a little later) covers a guest that stopped answering.
    const hostDeadline = AbortSignal.timeout(timeoutMs + 5000);
    const t0 = performance.now();
    const r: RunOutput = await this.#guard(
      vm,
      vm.agent.run({
        ...(typeof command === "string" ? { shell: command } : { argv: command }),
        timeoutMs,
        signal: AbortSignal.any([this.#signal(o.signal), hostDeadline]),
        ...(o.env ? { env: o.env } : {}),
        ...(o.stdin !== undefined ? { stdin: o.stdin } : {}),
        ...(o.cwd !== undefined ? { cwd: o.cwd } : {}),
      }),
    );
    this.host.timeline.emit({
      type: "command",
      test: this.scope.test,
      machine: this.name,
      command,
      exitCode: r.exitCode,
      signal: r.signal,
      timedOut: r.timedOut,
      outputHeldOpen: r.outputHeldOpen,
      ms: Math.round(performance.now() - t0),
      stdoutBytes: r.stdout.length,
      stderrBytes: r.stderr.length,
    });
    const result: ExecuteResult = {
      exitCode: r.exitCode,
      signal: r.signal,
      stdout: r.stdout.toString("utf8"),
      stderr: r.stderr.toString("utf8"),
      timedOut: r.timedOut || (hostDeadline.aborted && !this.scope.signal.aborted),
      outputHeldOpen: r.outputHeldOpen,
    };
    if (result.timedOut) throw this.#timeout(`${show(command)} to finish`, timeoutMs, result);
    return result;
  }

  async #pollCommand(what: string, command: Command, wantSuccess: boolean, o: WaitOptions): Promise<string> {
    const timeoutMs = o.timeout ?? this.host.timeouts.waitMs;
    const started = Date.now();
    let last: ExecuteResult | undefined;
    try {
      return await retryUntil(
        async () => {
          const left = Math.max(1000, timeoutMs - (Date.now() - started));
          try {
            last = await this.#exec(command, { timeout: left, ...(o.signal ? { signal: o.signal } : {}) });
          } catch (e) {
            // One try running past its deadline is just a failed try; the overall deadline decides.
            if (e instanceof TestFailure) return undefined;
            throw e;
          }
          return (last.exitCode === 0) === wantSuccess ? last.stdout : undefined;
        },
        { what, timeoutMs, signal: this.#signal(o.signal), initialDelayMs: 50, maxDelayMs: 1000 },
      );
    } catch (e) {
      if (isVmstackError(e, "TIMEOUT")) throw this.#timeout(what, timeoutMs, last);
      throw e;
    }
  }

  async #setLinks(up: boolean): Promise<void> {
    for (const v of this.options.network ?? []) await this.qmp("set_link", { name: `vlan${v.vlan}`, up });
  }

  async #awaitExit(vm: GuestVm, timeoutMs: number, signal: AbortSignal | undefined, what: string): Promise<void> {
    const s = AbortSignal.any([this.#signal(signal), AbortSignal.timeout(timeoutMs)]);
    const aborted = new Promise<never>((_, reject) => s.addEventListener("abort", () => reject(s.reason), { once: true }));
    aborted.catch(() => undefined);
    try {
      await Promise.race([vm.exited, aborted]);
    } catch (e) {
      if (this.#signal(signal).aborted) throw e;
      throw this.#timeout(what, timeoutMs);
    }
    // The test saw it coming: not a crash.
    this.#unexpected = undefined;
    this.#state = "exited";
  }

  /** Runs an agent request, turning the VM dying underneath it into a CRASH with the console tail. */
  async #guard<T>(vm: GuestVm, p: Promise<T>): Promise<T> {
    // #onExit was attached at boot, before this: by the time this runs it has classified the exit.
    const died = vm.exited.then((exit) => {
      throw this.#exitError(exit);
    });
    died.catch(() => undefined);
    try {
      return await Promise.race([p, died]);
    } catch (e) {
      if (isVmstackError(e, "GUEST_GONE")) {
        // The channel often closes a moment before QEMU's exit is seen: wait briefly for the VM's story.
        const exit = await Promise.race([vm.exited, new Promise<undefined>((r) => setTimeout(r, 2000, undefined))]);
        if (exit) throw this.#exitError(exit);
      }
      throw e;
    }
  }

  /** Why a command could not finish: the machine crashed, or the test stopped it. */
  #exitError(exit: Exit): VmstackError {
    return this.#unexpected ? this.#crashed(exit) : new VmstackError("MACHINE_DOWN", `${this.name} was stopped`);
  }

  #crashed(exit: Exit): MachineCrashed {
    return crashError(this.name, exit, this.#console);
  }

  #timeout(what: string, timeoutMs: number, last?: ExecuteResult): TestFailure {
    return timeoutFailure(this.name, what, timeoutMs, this.#console, last);
  }

  #commandFailure(verb: string, command: Command, r: ExecuteResult, expected: string): TestFailure {
    return commandFailure(this.name, verb, command, r, expected);
  }

  #signal(extra: AbortSignal | undefined): AbortSignal {
    return extra ? AbortSignal.any([extra, this.scope.signal]) : this.scope.signal;
  }

  #opts(o: WaitOptions): { signal: AbortSignal } {
    return { signal: this.#signal(o.signal) };
  }

  /** Times a verb into the timeline (one line of the human log). */
  async #step<T>(what: string, f: () => Promise<T>): Promise<T> {
    // A verb's time is its own, not the boot it waited for.
    await this.#ready.catch(() => undefined);
    const t0 = performance.now();
    try {
      const v = await f();
      this.#emitStep(what, performance.now() - t0, true);
      return v;
    } catch (e) {
      this.#emitStep(what, performance.now() - t0, false, messageOf(e));
      throw e;
    }
  }

  #emitStep(what: string, ms: number, ok: boolean, error?: string): void {
    this.host.timeline.emit({ type: "step", test: this.scope.test, machine: this.name, what, ms: Math.round(ms), ok, ...(error !== undefined ? { error } : {}) });
  }
}
