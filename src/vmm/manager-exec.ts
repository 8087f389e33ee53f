/**
 * A streamed `vmstack exec`: the command's stdout/stderr go to the client as they come, the
 * client's stdin goes to the command, and the exit status comes last (frames in api/protocol.ts).
 * A client that goes away kills the command.
 */
import type { Socket } from "node:net";
import { finished } from "node:stream/promises";
import type { AgentClient } from "../guest/index.js";
import { encodeLine, parseExecFrame, type ExecFrame } from "./api/protocol.js";
import { messageOf } from "../lib/errors.js";

export function streamExec(agent: AgentClient, argv: readonly string[], timeoutMs: number | null, log: (m: string) => void): (s: Socket) => void {
  const h = agent.exec({ argv, stdin: "pipe", ...(timeoutMs === null ? {} : { timeoutMs }) });
  // Until the client takes over, a failure to start must not become an unhandled rejection.
  h.result.catch(() => undefined);
  h.pid.catch(() => undefined);
  return (s) => {
    const send = (f: ExecFrame): void => {
      if (!s.destroyed) s.write(encodeLine(f));
    };
    h.stdout.on("data", (c: Buffer) => send({ o: c.toString("base64") }));
    h.stderr.on("data", (c: Buffer) => send({ e: c.toString("base64") }));
    let done = false;
    let buf: Buffer = Buffer.alloc(0);
    s.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.subarray(0, nl).toString("utf8");
        buf = buf.subarray(nl + 1);
        let f: ExecFrame;
        try {
          f = parseExecFrame(JSON.parse(line));
        } catch (e) {
          log(`exec: dropping a bad frame from the client: ${messageOf(e)}`);
          continue;
        }
        if ("i" in f) h.writeStdin(Buffer.from(f.i, "base64")).catch((e: unknown) => log(`exec stdin: ${messageOf(e)}`));
        else if ("eof" in f) h.closeStdin().catch((e: unknown) => log(`exec stdin: ${messageOf(e)}`));
      }
    });
    s.on("close", () => {
      if (!done) h.kill("KILL");
    });
    s.on("error", () => undefined);
    h.result.then(
      async (r) => {
        await Promise.all([finished(h.stdout), finished(h.stderr)]).catch(() => undefined);
        done = true;
        send({ x: { exitCode: r.exitCode ?? null, signal: r.signal ?? null } });
        s.end();
      },
      (e: unknown) => {
        done = true;
        send({ e: Buffer.from(`vmstack exec: ${messageOf(e)}\n`).toString("base64") });
        send({ x: { exitCode: null, signal: null } });
        s.end();
      },
    );
  };
}
