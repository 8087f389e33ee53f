/**
 * The daemon's half of the native front end (front/vmstack.c): vmstackd runs one of the quick
 * domain verbs with the very code the Node.js CLI runs, its requests going straight to the
 * daemon's handler instead of through the socket, and hands back the exit status and output.
 *
 * Only verbs that make one request, need no stdin and stream nothing qualify; a path argument is
 * resolved against the caller's working directory, which the front end sends (`cwd`), and the verb
 * itself reads no file (vmstackd does, as it would for the Node.js CLI's request). Global flags
 * (--verbose sets the process-wide log level) are refused too. The front end execs the Node.js CLI
 * for anything else.
 */
import { PassThrough, Readable } from "node:stream";
import { main } from "./main.js";
import { VmstackError } from "../lib/errors.js";
import type { Request } from "../vmm/api/protocol.js";

/** Must match fast_verbs in front/vmstack.c. */
export const FAST_VERBS = [
  "list", "pause", "unpause", "destroy", "reboot", "shutdown", "rename", "domid", "domname", "uptime", "sysrq", "trigger", "dmesg",
  "block-list", "block-detach", "network-list", "network-detach", "cd-eject", "mem-set", "vcpu-set", "save", "restore",
] as const;

export interface CliResult {
  readonly code: number;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
}

function collector(): { stream: PassThrough; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new PassThrough();
  stream.on("data", (c: Buffer) => chunks.push(c));
  return { stream, bytes: () => Buffer.concat(chunks) };
}

export async function runFastVerb(argv: readonly string[], request: (req: Request) => Promise<unknown>, signal: AbortSignal, cwd?: string): Promise<CliResult> {
  const verb = argv[0];
  if (verb === undefined || !(FAST_VERBS as readonly string[]).includes(verb)) {
    throw new VmstackError("BAD_REQUEST", `bad request: '${verb ?? ""}' is not a verb vmstackd runs for the front end (${FAST_VERBS.join(", ")})`);
  }
  const out = collector();
  const err = collector();
  const code = await main(argv, { stdout: out.stream, stderr: err.stream, stdin: Readable.from([]), signal, request, ...(cwd === undefined ? {} : { cwd }) });
  out.stream.end();
  err.stream.end();
  // PassThrough delivers written chunks on the next ticks; wait for both ends.
  await Promise.all([new Promise((r) => out.stream.once("end", r)), new Promise((r) => err.stream.once("end", r))]);
  return { code, stdout: out.bytes(), stderr: err.bytes() };
}
