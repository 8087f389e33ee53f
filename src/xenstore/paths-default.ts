/**
 * Default locations: `$VMSTACK_RUN_DIR/xenstored/socket`, else `/run/vmstack/xenstored/socket` as
 * root, else `$XDG_RUNTIME_DIR/vmstack/xenstored/socket` or a per-user directory under /tmp. The state
 * directory follows `$VMSTACK_STATE_DIR`, else `/var/lib/vmstack/xenstored` as root, else
 * `~/.local/state/vmstack/xenstored`.
 */
import * as os from "node:os";
import * as path from "node:path";

export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const run = env["VMSTACK_RUN_DIR"];
  if (run) return path.join(run, "xenstored", "socket");
  if (process.getuid?.() === 0) return "/run/vmstack/xenstored/socket";
  const xdg = env["XDG_RUNTIME_DIR"];
  if (xdg) return path.join(xdg, "vmstack", "xenstored", "socket");
  return path.join(os.tmpdir(), `vmstack-${process.getuid?.() ?? "user"}`, "xenstored", "socket");
}

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const st = env["VMSTACK_STATE_DIR"];
  if (st) return path.join(st, "xenstored");
  if (process.getuid?.() === 0) return "/var/lib/vmstack/xenstored";
  return path.join(os.homedir(), ".local", "state", "vmstack", "xenstored");
}
