/** `vmstack vmstackd`: run the toolstack daemon in the foreground (the CLI also starts it on demand). */
import type { Command } from "../command.js";
import { intOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { runVmstackd } from "../../vmm/manager-daemon.js";
import { DEFAULT_BUSY_POLL_US, MAX_BUSY_POLL_US } from "../../xenstore/index.js";
import { runFastVerb } from "../fast-path.js";

export const vmstackdCommand: Command = {
  name: "vmstackd",
  summary: "run vmstackd, the domain daemon, in the foreground",
  usage: "[--state-dir DIR] [--run-dir DIR] [--dom0-mem MiB] [--xenstored-busy-poll-us N]",
  options: {
    "state-dir": { type: "string", arg: "DIR", help: "domain records, logs, xenstore journal (default $VMSTACK_STATE_DIR or /var/lib/vmstack)" },
    "run-dir": { type: "string", arg: "DIR", help: "sockets and per-domain run directories (default $VMSTACK_RUN_DIR or /run/vmstack)" },
    "dom0-mem": { type: "string", arg: "MiB", help: "host memory kept out of domains (default $VMSTACK_DOM0_MEM or 1024)" },
    "xenstored-busy-poll-us": { type: "string", arg: "N", help: `the embedded xenstored's socket keeps polling up to N µs after a request, as \`vmstack xenstored --busy-poll-us\` (0 = off, at most ${MAX_BUSY_POLL_US}; default $VMSTACK_XENSTORED_BUSY_POLL_US or ${DEFAULT_BUSY_POLL_US})` },
  },
  details: [
    "Stopping vmstackd (SIGTERM, or kill -9) leaves every domain running; the next vmstackd re-attaches.",
    "Its log goes to stdout; `vmstack dmesg` shows the recent part.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("vmstackd", argv, this.options);
    if (p.positionals.length > 0) throw usageError("vmstackd", `unexpected argument '${p.positionals[0]}'`);
    const busyPollUs = intOpt("vmstackd", p, "xenstored-busy-poll-us", 0);
    if (busyPollUs !== undefined && busyPollUs > MAX_BUSY_POLL_US) throw usageError("vmstackd", `--xenstored-busy-poll-us is at most ${MAX_BUSY_POLL_US}, got ${busyPollUs}`);
    return runVmstackd({
      stateDir: stringOpt(p, "state-dir"),
      runDir: stringOpt(p, "run-dir"),
      dom0MemoryMiB: intOpt("vmstackd", p, "dom0-mem", 0),
      xenstoredBusyPollUs: busyPollUs,
      env: process.env,
      out: ctx.stdout,
      signal: ctx.signal,
      cli: runFastVerb,
    });
  },
};
