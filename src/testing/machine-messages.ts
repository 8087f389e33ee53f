/**
 * What a machine says when something goes wrong, and small helpers for its commands. Pure: the
 * messages are built from facts (the console text, a command's result), so they are unit-tested.
 */
import type { Exit } from "../lib/process.js";
import { VmstackError } from "../lib/errors.js";
import { MachineCrashed, TestFailure } from "./errors.js";
import type { Command, ExecuteResult } from "./machine-types.js";

/** A machine stopped without the test asking: the panic line when there is one, and the console tail. */
export function crashError(machine: string, exit: Exit, consoleText: string): MachineCrashed {
  const tail = consoleTail(consoleText);
  const panic = /Kernel panic - not syncing: [^\r\n]*/.exec(consoleText)?.[0];
  const why = panic ? `guest kernel panic: "${panic}"` : exit.signal ? `QEMU killed by ${exit.signal}` : `QEMU exit status ${exit.code}`;
  return new MachineCrashed(`${machine} stopped unexpectedly (${why})${formatTail(tail)}`, { facts: { machine, exit, consoleTail: tail } });
}

/** A wait that ran out: what was awaited, the last try, the console tail. */
export function timeoutFailure(machine: string, what: string, timeoutMs: number, consoleText: string, last?: ExecuteResult): TestFailure {
  const tail = consoleTail(consoleText);
  const lastTry = last
    ? `\nlast try: exit ${last.exitCode ?? last.signal}` +
      (last.stdout.trim() ? `, stdout ${JSON.stringify(clip(last.stdout))}` : "") +
      (last.stderr.trim() ? `, stderr ${JSON.stringify(clip(last.stderr))}` : "")
    : "";
  return new TestFailure(`${machine}: timed out after ${timeoutMs} ms waiting for ${what}${lastTry}${formatTail(tail)}`, {
    facts: { machine, what, timeoutMs, consoleTail: tail },
  });
}

/** succeed()/fail() saw the wrong status: the command, the status, its output. */
export function commandFailure(machine: string, verb: string, command: Command, r: ExecuteResult, expected: string): TestFailure {
  const status = r.exitCode !== null ? `exit status ${r.exitCode}` : `signal ${r.signal}`;
  return new TestFailure(
    `${machine}: ${verb}(${show(command)}): expected the command ${expected}, got ${status}` +
      (r.stdout.trim() ? `\nstdout: ${clip(r.stdout)}` : "") +
      (r.stderr.trim() ? `\nstderr: ${clip(r.stderr)}` : ""),
    { facts: { machine, command, exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr } },
  );
}

export function portProbe(port: number, address: string | undefined): Command {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new VmstackError("BAD_PORT", `port ${port} is not a TCP port number`);
  if (address !== undefined) return ["nc", "-w", "1", address, String(port)];
  // A listening socket in /proc/net/tcp{,6}: state 0A, local port in hex. tcp6 is absent when the
  // guest has no IPv6, hence cat with errors ignored (port is a validated integer: no injection).
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  return `cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == "0A" && $2 ~ /:${hex}$/ { found = 1 } END { exit !found }'`;
}

export function show(command: Command): string {
  const s = typeof command === "string" ? JSON.stringify(command) : JSON.stringify(command.join(" "));
  return s.length > 80 ? s.slice(0, 77) + "…\"" : s;
}

function clip(s: string): string {
  const t = s.trim();
  return t.length > 500 ? t.slice(0, 500) + "…" : t;
}

function consoleTail(text: string): string[] {
  return text
    .split(/\r?\n/)
    .filter((l) => l.trim() !== "")
    .slice(-10);
}

function formatTail(lines: readonly string[]): string {
  return lines.length ? `\nlast console lines:\n  ${lines.join("\n  ")}` : "\n(the machine printed nothing on its console)";
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The console tail as the end of a message. */
export function formatConsole(consoleText: string): string {
  return formatTail(consoleTail(consoleText));
}
