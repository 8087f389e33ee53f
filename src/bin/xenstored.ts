#!/usr/bin/env node
// Thin entry point: `vmstack-xenstored [options]` is `vmstack xenstored [options]`.
import { main } from "../cli/main.js";

const controller = new AbortController();
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new Error(`interrupted by ${sig}`));
  });
}

const code = await main(["xenstored", ...process.argv.slice(2)], {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  signal: controller.signal,
});
process.exitCode = code;
