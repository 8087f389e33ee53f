/** `vmstack xenstored`: run the Xen-compatible xenstore daemon on a Unix socket. */
import type { Command } from "../command.js";
import { boolOpt, intOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { DURABILITIES, createXenstored, type Xenstored, defaultSocketPath, defaultStateDir, listenUnix, parseQuotaOverrides, warmUp, DEFAULT_BUSY_POLL_US, MAX_BUSY_POLL_US, nativeIoUnavailable } from "../../xenstore/index.js";
import { isVmstackError } from "../../lib/errors.js";
import { fitsUnixSocket } from "../../lib/unix-socket.js";

export const xenstoredCommand: Command = {
  name: "xenstored",
  summary: "run the xenstore daemon (Xen wire protocol on a Unix socket)",
  usage: "[--socket PATH] [--state-dir DIR [--durability write|fsync] | --no-persist] [--quota NAME=N]…",
  options: {
    socket: { type: "string", arg: "PATH", help: "socket path (default $VMSTACK_RUN_DIR/xenstored/socket, /run/vmstack/xenstored/socket as root)" },
    "state-dir": { type: "string", arg: "DIR", help: "journal and snapshots (default $VMSTACK_STATE_DIR/xenstored, /var/lib/vmstack/xenstored as root)" },
    "no-persist": { type: "boolean", help: "keep the store in memory only" },
    durability: { type: "string", arg: "MODE", help: "what a reply waits for: write (default; the journal is written, fdatasync'd within 1 s: survives the daemon being killed) or fsync (on disk: survives power loss)" },
    quota: { type: "string", multiple: true, arg: "NAME=N", help: "quota for unprivileged domains: nodes, node-size, watches, transactions, outstanding, transaction-nodes, path-max, permissions (0 = off)" },
    "socket-mode": { type: "string", arg: "OCTAL", help: "socket file mode (default 0600)" },
    "event-queue": { type: "string", arg: "BYTES", help: "unread output per connection before watch events are dropped (default 1048576)" },
    "write-rate": { type: "string", arg: "N[/BURST]", help: "modifying requests per second per unprivileged domain, 0 = unlimited (default 1000/200)" },
    "busy-poll-us": { type: "string", arg: "N", help: `after a request, keep polling for the next one for up to N µs instead of sleeping (adaptive; trades CPU for latency with one request in flight; 0 = off, at most ${MAX_BUSY_POLL_US}; default ${DEFAULT_BUSY_POLL_US})` },
    "no-native-io": { type: "boolean", help: "serve sockets through Node.js's streams only, without native I/O (reads by the addon, poll(2) while busy-polling, send(2) for replies); for comparison. The journal's mapping stays on" },
  },
  details: [
    "Prints the socket path on stdout once it accepts connections; SIGTERM or SIGINT stops it cleanly",
    "(the journal is flushed). Point Xen's tools at it with XENSTORED_PATH=<socket>.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("xenstored", argv, this.options);
    if (p.positionals.length > 0) throw usageError("xenstored", `unexpected argument '${p.positionals[0]}'`);
    const noPersist = boolOpt(p, "no-persist");
    const stateDirOpt = stringOpt(p, "state-dir");
    if (noPersist && stateDirOpt !== undefined) throw usageError("xenstored", "--state-dir and --no-persist exclude each other");
    const durabilityS = stringOpt(p, "durability");
    const durability = DURABILITIES.find((d) => d === durabilityS);
    if (durabilityS !== undefined && durability === undefined) throw usageError("xenstored", `--durability expects write or fsync, got '${durabilityS}'`);
    if (noPersist && durability !== undefined) throw usageError("xenstored", "--durability needs a state directory (it excludes --no-persist)");
    const modeS = stringOpt(p, "socket-mode");
    if (modeS !== undefined && !/^0?[0-7]{3}$/.test(modeS)) throw usageError("xenstored", `--socket-mode expects an octal mode like 0600, got '${modeS}'`);
    const quotaSpecs = (p.values["quota"] as string[] | undefined) ?? [];
    let quotas;
    try {
      quotas = parseQuotaOverrides(quotaSpecs);
    } catch (e) {
      throw usageError("xenstored", isVmstackError(e) ? e.message : String(e));
    }
    const eventQueue = intOpt("xenstored", p, "event-queue", 4096);
    const busyPollUs = intOpt("xenstored", p, "busy-poll-us", 0);
    if (busyPollUs !== undefined && busyPollUs > MAX_BUSY_POLL_US) throw usageError("xenstored", `--busy-poll-us is at most ${MAX_BUSY_POLL_US}, got ${busyPollUs}`);
    const rateS = stringOpt(p, "write-rate");
    const rateM = rateS === undefined ? undefined : /^(\d+)(?:\/(\d+))?$/.exec(rateS);
    if (rateS !== undefined && !rateM) throw usageError("xenstored", `--write-rate expects N or N/BURST, got '${rateS}'`);
    const writeRate = rateM ? { perSecond: Number(rateM[1]), burst: Math.max(1, Number(rateM[2] ?? rateM[1])) } : undefined;
    const nativeIo = !boolOpt(p, "no-native-io");
    if (nativeIoUnavailable !== "") ctx.stderr.write(`vmstack xenstored: the native addon is not built (build it with npm run build; ${nativeIoUnavailable}): sockets are served through Node.js streams and the journal is appended with write(2)\n`);
    const socketPath = stringOpt(p, "socket") ?? defaultSocketPath();
    const fatal = new AbortController();
    const daemon = createXenstored({
      onFatal: (e) => fatal.abort(e),
      ...(noPersist ? {} : { stateDir: stateDirOpt ?? defaultStateDir() }),
      ...(durability === undefined ? {} : { durability }),
      quotas,
      ...(eventQueue === undefined ? {} : { eventQueueBytes: eventQueue }),
      ...(writeRate === undefined ? {} : { writeRate }),
    });
    for (const line of daemon.loadReport) ctx.stderr.write(`vmstack xenstored: ${line}\n`);
    // How sockets are served: the daemon's, and the warm-up's throwaway one (below).
    const serving = { ...(busyPollUs === undefined ? {} : { busyPollUs }), nativeIo };
    let server;
    try {
      server = await listenUnix(daemon, socketPath, { ...(modeS === undefined ? {} : { mode: parseInt(modeS, 8) }), ...serving });
    } catch (e) {
      daemon.close();
      throw e;
    }
    ctx.stdout.write(`${server.path}\n`);
    // Optimise the request path while the first clients arrive (see warmup.ts).
    // Its throwaway instance is served beside the daemon's socket (a leftover from a kill is
    // cleared as the daemon's own is), unless that path is too long for a Unix socket.
    const warmUpSocket = `${socketPath}.warm-up`;
    warmUp({
      signal: AbortSignal.any([ctx.signal, fatal.signal]),
      ...(noPersist ? {} : { stateDir: stateDirOpt ?? defaultStateDir() }),
      ...(fitsUnixSocket(warmUpSocket) ? { serve: (d: Xenstored) => listenUnix(d, warmUpSocket, serving) } : {}),
    }).catch((e: unknown) => ctx.stderr.write(`vmstack xenstored: warm-up failed: ${String(e)}\n`));
    const stop = AbortSignal.any([ctx.signal, fatal.signal]);
    await new Promise<void>((resolve) => {
      if (stop.aborted) resolve();
      else stop.addEventListener("abort", () => resolve(), { once: true });
    });
    // Stop accepting, then close the daemon (flushes the journal and drops every connection, which
    // lets the listening socket finish closing).
    const closing = server.close();
    daemon.close();
    await closing;
    if (fatal.signal.aborted) {
      ctx.stderr.write(`vmstack xenstored: stopped: the journal in ${stateDirOpt ?? defaultStateDir()} could not be written\n`);
      return 1;
    }
    return 0;
  },
};
