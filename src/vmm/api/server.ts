/**
 * vmstackd's control socket: JSON lines in, JSON lines out. It only decodes (parseRequest) and
 * calls the handler; the one error translation of this boundary is here: a VmstackError becomes
 * `{ok:false, error:{code, message}}`, anything else is a bug and is reported as INTERNAL.
 */
import { createServer, type Server, type Socket } from "node:net";
import { chmodSync, rmSync } from "node:fs";
import { once } from "node:events";
import { encodeLine, parseRequest, type Request, type Response } from "./protocol.js";
import type { Outcome } from "../manager-ops.js";
import { VmstackError, isVmstackError, messageOf } from "../../lib/errors.js";

export type Handler = (req: Request, signal: AbortSignal) => Promise<Outcome>;

/** Longest request line accepted (a create carries a whole config). */
const MAX_LINE = 1 << 20;

export async function listenApi(path: string, handler: Handler, onBug: (e: unknown) => void): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((s) => serve(s, handler, onBug));
  server.listen(path);
  await once(server, "listening");
  chmodSync(path, 0o600);
  return server;
}

function serve(s: Socket, handler: Handler, onBug: (e: unknown) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  let busy = false;
  let handedOver = false;
  const closed = new AbortController();
  s.on("close", () => closed.abort(new VmstackError("CLIENT_GONE", "the client went away")));
  s.on("error", () => undefined);
  const pump = async (): Promise<void> => {
    if (busy || handedOver) return;
    const nl = buf.indexOf("\n");
    if (nl < 0) {
      if (buf.length > MAX_LINE) s.destroy();
      return;
    }
    const line = buf.subarray(0, nl).toString("utf8");
    buf = buf.subarray(nl + 1);
    busy = true;
    let response: Response;
    let outcome: Outcome | undefined;
    try {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        throw new VmstackError("BAD_REQUEST", "bad request: not JSON");
      }
      outcome = await handler(parseRequest(value), closed.signal);
      response = { ok: true, result: outcome.value ?? null };
    } catch (e) {
      if (!isVmstackError(e)) onBug(e);
      response = { ok: false, error: isVmstackError(e) ? { code: e.code, message: e.message } : { code: "INTERNAL", message: `internal error: ${messageOf(e)}` } };
    }
    if (s.destroyed) return;
    s.write(encodeLine(response));
    busy = false;
    if (outcome?.kind === "handover") {
      // From here on the connection belongs to the operation (console bytes, exec frames).
      handedOver = true;
      s.off("data", onData);
      outcome.attach(s);
      return;
    }
    void pump();
  };
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    void pump();
  };
  s.on("data", onData);
}
