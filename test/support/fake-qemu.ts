/**
 * A fake QEMU for vmstackd tests: a small Node script that listens on every `-chardev socket,…`
 * path its argv names, greets QMP clients and answers their commands, so the daemon's own logic
 * runs in seconds without booting anything. Each test supplies only its command handling.
 */
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface FakeQemuParts {
  /** Script text run once at start, with `args` (argv after the program) and `event` in scope. */
  readonly prelude?: string;
  /**
   * Script text run for each QMP command, with `m` (the command), `a` (its arguments, or {}),
   * `reply(result)`, `fail(errorClass, desc)`, `event(name, data)` (to every QMP client), `c`
   * (this QMP connection) and `args` in scope.
   */
  readonly qmp: string;
  /** Script text run for each connection to the console socket (`c`); default: nothing. */
  readonly console?: string;
  /** Append each command but qmp_capabilities and query-status to `<qmp socket>.log`, one JSON line each. */
  readonly logCommands?: boolean;
}

/** Writes the fake QEMU to DIR/fake-qemu (executable) and returns its path. */
export function writeFakeQemu(dir: string, parts: FakeQemuParts): string {
  const log = parts.logCommands
    ? `if (!["qmp_capabilities", "query-status"].includes(m.execute)) fs.appendFileSync(s.path + ".log", JSON.stringify({ execute: m.execute, arguments: m.arguments }) + "\\n");`
    : "";
  const script = `#!/usr/bin/env node
const net = require("node:net");
const fs = require("node:fs");
const args = process.argv.slice(2);
const sockets = args.filter((a) => a.startsWith("socket,")).map((a) => Object.fromEntries(a.split(",").slice(1).map((kv) => kv.split("="))));
const qmpClients = new Set();
const event = (name, data) => { for (const c of qmpClients) c.write(JSON.stringify({ event: name, data, timestamp: { seconds: 1, microseconds: 0 } }) + "\\n"); };
${parts.prelude ?? ""}
for (const s of sockets) {
  net.createServer((c) => {
    c.on("error", () => {});
    if (s.id === "qmp") {
      qmpClients.add(c);
      c.on("close", () => qmpClients.delete(c));
      c.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: "fake" }, capabilities: [] } }) + "\\n");
      let buf = "";
      c.on("data", (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf("\\n")) >= 0) {
          const m = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
          ${log}
          const reply = (r) => c.write(JSON.stringify({ return: r, id: m.id }) + "\\n");
          const fail = (cls, desc) => c.write(JSON.stringify({ error: { class: cls, desc }, id: m.id }) + "\\n");
          const a = m.arguments || {};
          ${parts.qmp}
        }
      });
    } else if (s.id === "con0") {
      ${parts.console ?? ""}
    }
  }).listen(s.path);
}
setInterval(() => {}, 1000);
`;
  const path = join(dir, "fake-qemu");
  writeFileSync(path, script);
  chmodSync(path, 0o755);
  return path;
}
