/**
 * `vmstack test --interactive`: when a test does not succeed, its machines stay up and a prompt
 * gives a shell into any of them (each line runs through the agent, with stdout, stderr and the
 * exit status kept apart) and shows their consoles. The machines are stopped when the prompt ends.
 */
import { createInterface } from "node:readline";
import type { Machine } from "./machine.js";
import type { Outcome } from "./errors.js";
import { messageOf } from "../lib/errors.js";

export interface InteractiveIo {
  readonly input: NodeJS.ReadableStream;
  readonly output: NodeJS.WritableStream;
  readonly signal?: AbortSignal;
}

const HELP = [
  "  NAME COMMAND…    run COMMAND with /bin/sh -c on machine NAME",
  "  :use NAME        make NAME the default machine; then a bare COMMAND runs there",
  "  :console NAME    show the last 40 console lines of NAME",
  "  :machines        list the machines and whether they are up",
  "  :continue        stop the machines and go on (also Ctrl-D)",
].join("\n");

export async function startInteractive(
  info: { test: string; outcome: Outcome; error: unknown; machines: ReadonlyMap<string, Machine> },
  io: InteractiveIo,
): Promise<void> {
  const out = (s: string): void => void io.output.write(s + "\n");
  out(`\n${info.outcome}: ${info.test}: ${messageOf(info.error).split("\n")[0] ?? ""}`);
  out(`The machines stay up. Commands:\n${HELP}`);
  let current = [...info.machines.keys()][0];
  const rl = createInterface({ input: io.input, output: io.output, terminal: false });
  const onAbort = (): void => rl.close();
  io.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    io.output.write(`${current ?? ""}> `);
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === ":continue" || line === ":q") break;
      if (line === ":help") out(HELP);
      else if (line === ":machines") for (const m of info.machines.values()) out(`  ${m.name}: ${m.isUp ? "up" : "down"}`);
      else if (line.startsWith(":console ")) out(info.machines.get(line.slice(9).trim())?.consoleText.split("\n").slice(-40).join("\n") ?? "no such machine");
      else if (line.startsWith(":use ")) {
        const name = line.slice(5).trim();
        if (info.machines.has(name)) current = name;
        else out(`no machine named ${name}`);
      } else if (line !== "") {
        const [first = "", ...rest] = line.split(/\s+/);
        const named = info.machines.get(first);
        const machine = named ?? (current !== undefined ? info.machines.get(current) : undefined);
        const command = named ? rest.join(" ") : line;
        if (!machine) out("no machine: use NAME COMMAND");
        else {
          try {
            const r = await machine.execute(command);
            if (r.stdout) io.output.write(r.stdout);
            if (r.stderr) io.output.write(r.stderr);
            if (r.exitCode !== 0) out(`[exit ${r.exitCode ?? r.signal}]`);
          } catch (e) {
            out(`error: ${messageOf(e)}`);
          }
        }
      }
      io.output.write(`${current ?? ""}> `);
    }
  } finally {
    io.signal?.removeEventListener("abort", onAbort);
    rl.close();
    out("");
  }
}
