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

/** What the suite needs of vmstack's daemon (src/xenstore/index.ts `createXenstored`). */
export interface VmstackXenstored {
  openConnection(opts: { domid: number }): Duplex;
  listen?: (socketPath: string) => Promise<void>;
  close(): Promise<void> | void;
}

type CreateXenstored = (opts?: { stateDir?: string }) => VmstackXenstored;

/** vmstack's daemon factory, or the reason it is unavailable. */
export async function loadVmstackDaemon(): Promise<CreateXenstored | string> {
  const mod = (await import(join(REPO_ROOT, "dist/src/xenstore/index.js"))) as Record<string, unknown>;
  const f = mod["createXenstored"];
  if (typeof f !== "function") return "vmstack's xenstored is not exported from src/xenstore/index.ts yet (createXenstored)";
  return f as CreateXenstored;
}

export async function startVmstackInProcess(opts: { stateDir?: string } = {}): Promise<XsTarget | string> {
  const create = await loadVmstackDaemon();
  if (typeof create === "string") return create;
  const d = create(opts);
  return {
    name: "vmstack xenstored (in-process)",
    flavour: "vmstack",
    open: () => Promise.resolve(d.openConnection({ domid: 0 })),
    openDomain: (domid) => Promise.resolve(d.openConnection({ domid })),
    stop: async () => {
      await d.close();
    },
  };
}

export async function startVmstackSocket(opts: { stateDir?: string } = {}): Promise<(XsTarget & { socket: string }) | string> {
  const create = await loadVmstackDaemon();
  if (typeof create === "string") return create;
  const d = create(opts);
  if (typeof d.listen !== "function") {
    await d.close();
    return "vmstack's xenstored has no listen(socketPath) yet";
  }
  const dir = mkdtempSync(join(tmpdir(), "vmstack-xs-"));
  const socket = join(dir, "socket");
  await d.listen(socket);
  return {
    name: "vmstack xenstored (Unix socket)",
    flavour: "vmstack",
    socket,
    open: () => connectUnix(socket),
    openDomain: (domid) => Promise.resolve(d.openConnection({ domid })),
    stop: async () => {
      await d.close();
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
