#!/usr/bin/env node
// Thin entry point: `vmstackd [options]` is `vmstack vmstackd [options]`.
import { main } from "../cli/main.js";

const controller = new AbortController();
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new Error(`stopped by ${sig}`));
  });
}
// Started on demand, vmstackd outlives the terminal it came from.
process.on("SIGHUP", () => undefined);

const code = await main(["vmstackd", ...process.argv.slice(2)], {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  signal: controller.signal,
});
// Exit now: anything still pending (a restart half-way, an agent handshake with a guest) belongs to
// domains, which live on without us; waiting for it would keep a stopped vmstackd around.
process.exit(code);
