#!/usr/bin/env node
// Thin entry point: wire process I/O and signals to the CLI.
import { main } from "../cli/main.js";

const controller = new AbortController();
let signals = 0;
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    signals++;
    // First signal: abort and let commands clean up. A third one: give up at once.
    if (signals >= 3) process.exit(130);
    controller.abort(new Error(`interrupted by ${sig}`));
  });
}

const code = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  signal: controller.signal,
});
process.exitCode = code;
