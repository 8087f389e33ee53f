/** The shapes of the Machine API: options, results, and what a machine needs from its test. */
import type { VlanRef } from "./network.js";

export interface MachineOptions {
  /** Guest memory in MiB (default 256). */
  readonly memory?: number;
  /** Virtual CPUs (default 1: two machines booting at once on a 2-core host each get a core). */
  readonly cpus?: number;
  /** VLANs to plug into, e.g. `[vlan(1)]`; peers on a VLAN reach each other by name. Default: VLAN 1; `[]` for none. */
  readonly network?: readonly VlanRef[];
  /** A user-mode NAT card (10.0.2.15, host reachable as 10.0.2.2); needed for forwardPort. */
  readonly nat?: boolean;
}

export interface CommandOptions {
  /** Deadline in ms (default: the run's command timeout, scaled with the accelerator). */
  readonly timeout?: number;
  readonly signal?: AbortSignal;
  readonly env?: Readonly<Record<string, string>>;
  readonly stdin?: string;
  readonly cwd?: string;
}

export interface WaitOptions {
  /** Deadline in ms (default: the run's wait timeout, scaled with the accelerator). */
  readonly timeout?: number;
  readonly signal?: AbortSignal;
}

export interface ExecuteResult {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  /** A background process kept stdout/stderr open after the command exited (output after that was not collected). */
  readonly outputHeldOpen: boolean;
}

export type Command = string | readonly string[];

/** What a machine needs from the test that owns it. */
export interface MachineScope {
  readonly test: string;
  /** Aborted when the run is interrupted (Ctrl-C) or the test is over. */
  readonly signal: AbortSignal;
  /** Index of the test in the run: each test gets fresh VLAN segments. */
  readonly epoch: number;
  /** Name → address of every machine of the test on a VLAN (for /etc/hosts). */
  peers(): ReadonlyArray<{ readonly name: string; readonly address: string }>;
}
