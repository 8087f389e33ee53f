/**
 * Diagnostic logging to stderr. Quiet by default; `--verbose` (or VMSTACK_LOG=debug) shows debug
 * lines. stdout is reserved for a command's own output (and `--json`).
 */
export type LogLevel = "error" | "warn" | "info" | "debug";
const rank: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

let threshold: LogLevel = process.env["VMSTACK_LOG"] === "debug" ? "debug" : "warn";

export function setLogLevel(level: LogLevel): void {
  threshold = level;
}

export function logEnabled(level: LogLevel): boolean {
  return rank[level] <= rank[threshold];
}

export function log(level: LogLevel, scope: string, message: string): void {
  if (!logEnabled(level)) return;
  process.stderr.write(`vmstack: ${level === "info" ? "" : level + ": "}[${scope}] ${message}\n`);
}
