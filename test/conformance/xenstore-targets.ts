/**
 * The daemons the conformance suite (and the real-client tests and benchmark) run against:
 * vmstack's xenstored in-process and over its Unix socket, and Xen 4.17's C and OCaml daemons
 * started by `../shared/peers/xenstored-peer`. A factory returns a string (the reason) when the
 * target is not available, so callers skip with that reason.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { Duplex } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Flavour, XsTarget } from "./xenstore-harness.js";
import { createXenstored, listenUnix, type Xenstored, type XenstoredOptions } from "../../src/xenstore/index.js";
import { retryUntil } from "../../src/lib/retry.js";

const run = promisify(execFile);

/** The repository root (this file is dist/test/conformance/*.js once built). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const XEN_BIN = "/usr/lib/xen-4.17/bin";

export function peersScript(): string {
  return process.env["VMSTACK_XEN_PEERS_SCRIPT"] ?? resolve(REPO_ROOT, "../shared/peers/xenstored-peer");
}

export function connectUnix(path: string): Promise<Duplex> {
  return new Promise((resolvePromise, reject) => {
    const s = connect({ path });
    s.once("error", reject);
    s.once("connect", () => {
      s.off("error", reject);
      s.setNoDelay(true);
      resolvePromise(s);
    });
  });
}

export async function startVmstackInProcess(opts: XenstoredOptions = {}): Promise<XsTarget & { daemon: Xenstored }> {
  const d = createXenstored(opts);
  return Promise.resolve({
    name: "vmstack xenstored (in-process)",
    flavour: "vmstack",
    daemon: d,
    open: () => Promise.resolve(d.openConnection({ domid: 0 })),
    openDomain: (domid: number) => Promise.resolve(d.openConnection({ domid })),
    stop: () => {
      d.close();
      return Promise.resolve();
    },
  });
}

/** vmstack's daemon on a Unix socket in a fresh temporary directory. */
export async function startVmstackSocket(opts: XenstoredOptions = {}): Promise<XsTarget & { socket: string; daemon: Xenstored }> {
  const d = createXenstored(opts);
  const dir = mkdtempSync(join(tmpdir(), "vmstack-xs-"));
  const socket = join(dir, "socket");
  const server = await listenUnix(d, socket);
  return {
    name: "vmstack xenstored (Unix socket)",
    flavour: "vmstack",
    socket,
    daemon: d,
    open: () => connectUnix(socket),
    openDomain: (domid) => Promise.resolve(d.openConnection({ domid })),
    stop: async () => {
      d.close(); // first: the listener's close waits for every connection to end
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Why Xen's daemons can't run here, or undefined if they can. */
export function xenPeersUnavailable(): string | undefined {
  if (process.env["VMSTACK_XEN_PEERS"] === "0") return "VMSTACK_XEN_PEERS=0";
  if (!existsSync(peersScript())) return `no ${peersScript()} (set VMSTACK_XEN_PEERS_SCRIPT)`;
  if (!existsSync(`${XEN_BIN}/xenstored`) || !existsSync(`${XEN_BIN}/oxenstored`)) return "Xen's daemons are not installed (apt-get install xen-utils-4.17)";
  if (!existsSync("/usr/include/xenctrl.h")) return "libxen-dev is not installed (the peers shim needs it)";
  // The peers script would install what is missing with apt; a test must not, so check first.
  if (!existsSync("/usr/bin/xenstore-read")) return "xenstore-utils is not installed";
  if (!existsSync("/usr/bin/gcc")) return "gcc is not installed (the peers shim is built with it)";
  if (process.getuid?.() !== 0) return "starting Xen's daemons needs root (mount namespace for oxenstored)";
  return undefined;
}

/** Start Xen's C or OCaml xenstored on a private socket. */
export async function startXenPeer(kind: "c" | "ocaml"): Promise<(XsTarget & { socket: string }) | string> {
  const why = xenPeersUnavailable();
  if (why !== undefined) return why;
  const dir = mkdtempSync(join(tmpdir(), `vmstack-xen-${kind}-`));
  try {
    await run(peersScript(), ["start", kind, dir], { timeout: 20_000 });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return `xenstored-peer start ${kind} failed: ${e instanceof Error ? e.message : String(e)}`;
  }
  const socket = join(dir, "socket");
  // The peers script returns once the socket file exists, which Xen's daemon creates (bind) just
  // before it listens: a client in between is refused. Seen once, under two test suites at once.
  await retryUntil(
    () =>
      connectUnix(socket).then(
        (s) => (s.destroy(), true),
        (e: NodeJS.ErrnoException) => {
          if (e.code !== "ECONNREFUSED") throw e;
          return undefined;
        },
      ),
    { what: `Xen's ${kind} daemon listening on ${socket}`, timeoutMs: 20_000, maxDelayMs: 50 },
  );
  const flavour: Flavour = kind;
  return {
    name: kind === "c" ? "Xen 4.17 C xenstored" : "Xen 4.17 OCaml oxenstored",
    flavour,
    socket,
    open: () => connectUnix(socket),
    stop: async () => {
      await run(peersScript(), ["stop", dir], { timeout: 20_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
