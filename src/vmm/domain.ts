/**
 * One running domain as vmstackd sees it: its QEMU (which is NOT vmstackd's child for life: it
 * runs detached in its own session so it survives the daemon), QMP, the shared console, the guest
 * agent (connected on demand), and one operation queue so that operations on a domain never
 * interleave (pause while destroying, two shutdowns…). Policy (what to do when QEMU exits) lives
 * in the manager; this class reports the exit with the reason QEMU gave.
 */
import { connect } from "node:net";
import { once } from "node:events";
import { existsSync } from "node:fs";
import type { ChildProcess } from "node:child_process";
import { QmpClient } from "./qmp/index.js";
import type { QmpEvent } from "./qmp/index.js";
import { ConsoleHub } from "./console-hub.js";
import { type DomainRecord, procStat, qemuAlive, vcpuRunning } from "./domain-record.js";
import { AgentClient } from "../guest/index.js";
import { retryUntil } from "../lib/retry.js";
import { VmstackError, messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";

/** Why QEMU ended, from the last SHUTDOWN event (QAPI ShutdownCause), or "killed" with none. */
export type ExitCause = "guest-shutdown" | "guest-reset" | "guest-panic" | "host" | "killed";

export interface DomainHooks {
  /** QEMU is gone (after it was reaped or seen as a zombie). */
  onExit(d: Domain, cause: ExitCause): void;
  /** The guest panicked and QEMU paused it (on_crash preserve or coredump-*): QEMU still runs. */
  onPanic?(d: Domain): void;
  log(message: string): void;
  /** The guest was reset (it rebooted inside the same QEMU). */
  onReset?(d: Domain): void;
}

export class Domain {
  record: DomainRecord;
  qmp: QmpClient | undefined;
  console: ConsoleHub | undefined;
  /** QEMU's run state from query-status / events: running, paused, shutdown, guest-panicked, … */
  status = "running";
  dying = false;
  #lastShutdown: ExitCause | undefined;
  #agent: AgentClient | undefined;
  #agentConnecting: Promise<AgentClient> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #child: ChildProcess | undefined;
  #exitReported = false;

  constructor(record: DomainRecord, private readonly hooks: DomainHooks, child?: ChildProcess) {
    this.record = record;
    this.#child = child;
  }

  get name(): string {
    return this.record.name;
  }
  get domid(): number {
    return this.record.domid;
  }

  /** Runs `fn` after every operation queued before it (one queue per domain). */
  enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  /** Connects QMP and the console, learns the run state and starts watching for QEMU's end. */
  async connect(consoleLog: string | null, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const label = `domain ${this.name}`;
    const qmp = await QmpClient.connect(this.record.qmpSocket, { timeoutMs, label, ...(signal ? { signal } : {}) });
    this.qmp = qmp;
    qmp.onEvent((e) => this.#onEvent(e));
    // The client has no close callback; waiting for an event that never comes rejects exactly when the connection is lost.
    qmp.waitForEvent("VMSTACK-CONNECTION-WATCH").catch(() => void this.#qmpLost());
    if (this.record.consoleSocket !== null && consoleLog !== null) {
      this.console = await ConsoleHub.open(this.record.consoleSocket, { path: consoleLog }, label, { timeoutMs, ...(signal ? { signal } : {}) });
    }
    await this.refreshStatus();
  }

  async refreshStatus(): Promise<void> {
    const s = await this.qmp?.execute<{ status: string }>("query-status", undefined, { timeoutMs: 5000 });
    if (s) this.status = s.status;
  }

  #onEvent(e: QmpEvent): void {
    switch (e.event) {
      case "SHUTDOWN": {
        const reason = String(e.data["reason"] ?? "");
        // A panicked guest that vmstackd ends (after its core dump) still ended by crashing.
        if (!(this.#lastShutdown === "guest-panic" && reason.startsWith("host"))) {
          this.#lastShutdown = reason === "guest-shutdown" ? "guest-shutdown" : reason === "guest-reset" ? "guest-reset" : reason === "guest-panic" ? "guest-panic" : "host";
        }
        this.hooks.log(`${this.name}: SHUTDOWN (${reason})`);
        break;
      }
      case "GUEST_PANICKED":
        this.hooks.log(`${this.name}: guest panicked (${String(e.data["action"] ?? "")})`);
        this.#lastShutdown = "guest-panic";
        // A dead guest never answers: commands running through its agent fail now instead of hanging.
        this.#agent?.close();
        this.#agent = undefined;
        if (e.data["action"] === "pause") this.hooks.onPanic?.(this);
        break;
      case "RESET":
        this.hooks.log(`${this.name}: reset (${String(e.data["reason"] ?? "")})`);
        this.#lastShutdown = undefined;
        // A reset guest has a fresh agent; the old session is dead.
        this.#agent?.close();
        this.#agent = undefined;
        this.hooks.onReset?.(this);
        break;
      default:
        break;
    }
    if (["STOP", "RESUME", "SHUTDOWN", "GUEST_PANICKED", "RESET"].includes(e.event)) {
      this.refreshStatus().catch((err: unknown) => log("debug", this.name, `query-status: ${messageOf(err)}`));
    }
  }

  async #qmpLost(): Promise<void> {
    // QMP closes when QEMU exits. Our own child is reaped by us; an adopted one by PID 1, maybe late,
    // so a zombie counts as gone (libvirt-peer.md).
    const pid = this.record.qemuPid;
    if (this.#child && this.#child.exitCode === null && this.#child.signalCode === null) {
      await Promise.race([once(this.#child, "exit"), new Promise((r) => setTimeout(r, 5000))]);
    } else if (pid !== null) {
      await retryUntil(() => (qemuAlive(pid, this.record.qemuStartTime) ? undefined : true), { what: `QEMU ${pid} to exit`, timeoutMs: 10_000, maxDelayMs: 50 }).catch(
        (e: unknown) => this.hooks.log(`${this.name}: QMP closed but QEMU ${pid} still runs: ${messageOf(e)}`),
      );
    }
    this.#reportExit(this.#lastShutdown ?? "killed");
  }

  #reportExit(cause: ExitCause): void {
    if (this.#exitReported) return;
    this.#exitReported = true;
    this.console?.close();
    this.#agent?.close();
    this.hooks.onExit(this, cause);
  }

  /** xl's six state columns: r b p s c d. */
  stateLetters(): string {
    const alive = this.record.qemuPid !== null && this.qmp?.connected === true;
    const crashed = this.record.preserved === "crashed" || this.status === "guest-panicked" || this.status === "internal-error";
    const shut = this.record.preserved === "shutdown" || this.status === "shutdown";
    const paused = alive && !crashed && !shut && (this.status === "paused" || this.status === "prelaunch" || this.status === "suspended" || this.status === "postmigrate");
    const running = alive && this.status === "running" && this.record.qemuPid !== null && vcpuRunning(this.record.qemuPid);
    const blocked = alive && this.status === "running" && !running;
    return [running ? "r" : "-", blocked ? "b" : "-", paused ? "p" : "-", shut ? "s" : "-", crashed ? "c" : "-", this.dying ? "d" : "-"].join("");
  }

  cpuSeconds(): number {
    const pid = this.record.qemuPid;
    const s = pid === null ? undefined : procStat(pid);
    // USER_HZ is 100 on every Linux architecture vmstack runs on (proc(5)).
    return s ? s.cpuTicks / 100 : 0;
  }

  async qmpExecute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    if (!this.qmp?.connected) throw new VmstackError("DOMAIN_NOT_RUNNING", `domain ${this.name} has no running QEMU`, { facts: { domain: this.name } });
    return this.qmp.execute<T>(command, args, { timeoutMs });
  }

  /** The guest agent, connected on first use (and again after a reset or a daemon restart). */
  agent(timeoutMs: number): Promise<AgentClient> {
    if (this.#agent?.connected) return Promise.resolve(this.#agent);
    // QEMU's chardev takes one client: concurrent callers share one connection attempt.
    this.#agentConnecting ??= this.#connectAgent(timeoutMs).finally(() => {
      this.#agentConnecting = undefined;
    });
    return this.#agentConnecting;
  }

  async #connectAgent(timeoutMs: number): Promise<AgentClient> {
    const path = this.record.agentSocket;
    if (path === null || !existsSync(path)) throw new VmstackError("NO_AGENT", `domain ${this.name} has no guest agent channel (agent=false)`, { facts: { domain: this.name } });
    const s = connect(path);
    await once(s, "connect");
    this.#agent = await AgentClient.connect(s, { timeoutMs, clientName: "vmstackd" });
    return this.#agent;
  }

  /** Stops watching without touching QEMU (daemon shutting down: domains keep running). */
  detach(): void {
    this.#exitReported = true;
    this.console?.close();
    this.#agent?.close();
    this.qmp?.close();
  }
}
