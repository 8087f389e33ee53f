/**
 * Instructions per request: vmstack's xenstored and Xen 4.17's C daemon, each run under callgrind
 * (valgrind), one request in flight from vmstack's client, counting the daemon's user-space
 * instructions over the measured requests only. Prints one JSON document.
 *
 *   npm run build && node dist/bench/xenstore-instructions.js [--requests N] [--warm N]
 *
 * Throughput on this kind of machine moves by a fifth from one minute to the next (a shared host,
 * vCPUs the hypervisor schedules), and with one request in flight a daemon's share of it depends on
 * where the scheduler puts it (bench/xenstore.ts). An instruction count does not: the same build
 * and inputs give the same count within about 1 % on a quiet machine (now and then a few percent
 * more, when V8 recompiles something among the counted requests). On a busy one it can come out
 * up to 5 % higher: valgrind runs slower, so the daemon's timers (the journal's sync each second)
 * fire more often per request (measured: 21.5k and 21.2k per write, two runs during a test
 * suite's run, against 20.9k quiet). Beside its
 * client on one CPU (a placement the scheduler often picks), a daemon's own time per request is
 * mostly these instructions plus the kernel's share of the socket calls, which is about the same
 * for both daemons; so this is the figure to drive down, and the C daemon's is the baseline.
 *
 * vmstack runs with its defaults (a state directory, durability "write", native socket I/O) except
 * busy-polling, which is off: a polling daemon spins between requests, and those instructions
 * count the wait, not the work. Beside its client the daemon does not poll anyway. Under valgrind
 * the process runs one thread at a time and many times slower, so V8 compiles later; the warm-up
 * requests (not counted, `--warm`, default 25,000) let it settle first. The journal's records are
 * 57-62 bytes, so with the defaults the measured requests (5,000) fall between the journal's first
 * and second 1 MiB chunk boundaries, where a record that straddles one is encoded another way.
 *
 * The counts are instructions, not time: Xen's C daemon rewrites a parent's whole record (every
 * child's name) when it gains a child, so its creates under a parent of hundreds of children take
 * ten times its other requests' instructions, but mostly in memcpy, which runs many of them per
 * cycle. Compare like with like, and time with bench/xenstore.
 *
 * Needs valgrind (setup installs it) and, for the C daemon, `../shared/peers/xenstored-peer`,
 * whose shim lets Xen's daemon run without a hypervisor.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { retryUntil } from "../src/lib/retry.js";
import { connectXenstore, type XenstoreClient } from "../src/xenstore/client.js";
import { peersScript } from "./xenstore-daemons.js";

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const XENSTORED = "/usr/lib/xen-4.17/bin/xenstored";

const args = process.argv.slice(2);
const argNumber = (name: string, fallback: number): number => {
  const i = args.indexOf(name);
  const v = i >= 0 ? Number(args[i + 1]) : fallback;
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} takes a positive whole number`);
  return v;
};
const REQUESTS = argNumber("--requests", 5000);
const WARM = argNumber("--warm", 25_000);
const VALUE = "0123456789abcdef";

/** write: a new value for one of 1,000 nodes; create: a new node, 1,000 under each parent (bench/xenstore's write phase); read. */
type Op = "write" | "create" | "read";
const OPS: readonly Op[] = ["write", "create", "read"];

interface Counted {
  readonly name: string;
  /** Starts the daemon under valgrind with collection off; its socket. */
  start(dir: string, valgrind: string[]): { child: ChildProcess; socket: string };
}

const vmstack: Counted = {
  name: "vmstack",
  start: (dir, valgrind) => {
    const socket = join(dir, "socket");
    const bin = join(ROOT, "dist/src/bin/xenstored.js");
    const child = spawn(valgrind[0]!, [...valgrind.slice(1), process.execPath, bin, "--socket", socket, "--state-dir", join(dir, "state"), "--busy-poll-us", "0"], { stdio: ["ignore", "ignore", "pipe"] });
    return { child, socket };
  },
};

/**
 * Xen's C daemon as the peers script starts it (its shim preloaded, its socket and run directory
 * in `dir`), but under valgrind: the script is run first to set `dir` up (prepareXenC).
 */
const xenC: Counted = {
  name: "c",
  start: (dir, valgrind) => {
    const socket = join(dir, "socket");
    const env = { ...process.env, FAKEXEN_DIR: dir, LD_PRELOAD: join(dir, "fakexen.so"), XENSTORED_PATH: socket, XENSTORED_RUNDIR: dir };
    const child = spawn(valgrind[0]!, [...valgrind.slice(1), XENSTORED, "-N", "-F", join(dir, "valgrind.pid")], { stdio: ["ignore", "ignore", "pipe"], env });
    return { child, socket };
  },
};

async function prepareXenC(dir: string): Promise<string | undefined> {
  if (!existsSync(peersScript())) return `no ${peersScript()}`;
  if (!existsSync(XENSTORED)) return "xen-utils-4.17 is not installed";
  await run(peersScript(), ["start", "c", dir], { timeout: 30_000 });
  await run(peersScript(), ["stop", dir], { timeout: 30_000 });
  return existsSync(join(dir, "fakexen.so")) ? undefined : `${peersScript()} left no fakexen.so in ${dir}`;
}

/** Request `i` of `op`; creates count through `made` so that warm-up and measured ones differ. */
function request(c: XenstoreClient, op: Op, i: number, made: { n: number }): Promise<unknown> {
  if (op === "create") {
    const n = made.n++;
    return c.write(`/made/p${Math.floor(n / 1000)}/n${n % 1000}`, VALUE);
  }
  return op === "write" ? c.write(`/bench/n${i % 1000}`, VALUE) : c.read(`/bench/n${i % 1000}`);
}

/** User-space instructions per request of `op` in a daemon of `kind`, counted by callgrind. */
async function count(kind: Counted, op: Op, dir: string): Promise<number> {
  const out = join(dir, `${kind.name}-${op}.callgrind`);
  const valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${out}`];
  const { child, socket } = kind.start(dir, valgrind);
  // The tail of what valgrind and the daemon said, for an error.
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const exited = new Promise<void>((resolvePromise) => child.once("exit", () => resolvePromise()));
  let refused = "";
  try {
    const c = await retryUntil(
      async () => {
        if (child.exitCode !== null) throw new Error(`${kind.name} under valgrind exited ${child.exitCode}: ${stderr.trim()}`);
        // Not accepting yet (valgrind starts slowly): undefined, and the next attempt.
        return connectXenstore({ socket, reconnect: false }).catch((e: unknown) => {
          refused = e instanceof Error ? e.message : String(e);
          return undefined;
        });
      },
      { what: `${kind.name} accepting connections under valgrind`, timeoutMs: 120_000, maxDelayMs: 200 },
    ).catch((e: unknown) => {
      throw new Error(`${e instanceof Error ? e.message : String(e)}; the last attempt: ${refused}`);
    });
    const made = { n: 0 };
    for (let i = 0; i < 1000; i++) await request(c, "write", i, made);
    for (let i = 0; i < WARM; i++) await request(c, op, i, made);
    await run("callgrind_control", ["--instr=on", String(child.pid)], { timeout: 60_000 });
    for (let i = 0; i < REQUESTS; i++) await request(c, op, i, made);
    await run("callgrind_control", ["--instr=off", String(child.pid)], { timeout: 60_000 });
    await c.close();
  } finally {
    await stop(child, exited);
  }
  const totals = /^totals: (\d+)/m.exec(readFileSync(out, "utf8"));
  if (totals === null) throw new Error(`no totals in ${out}`);
  return Math.round(Number(totals[1]) / REQUESTS);
}

/** SIGTERM, then SIGKILL if it has not exited 30 s later (valgrind writes its counts on exit). */
async function stop(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  await exited;
  clearTimeout(timer);
}

async function main(): Promise<void> {
  await run("valgrind", ["--version"]).catch((e: unknown) => {
    throw new Error(`valgrind does not run here (./setup installs it): ${e instanceof Error ? e.message : String(e)}`);
  });
  const dir = mkdtempSync(join(tmpdir(), "vmstack-bench-ir-"));
  try {
    const result: Record<string, Record<string, number> | string> = {};
    for (const kind of [vmstack, xenC]) {
      const perOp: Record<string, number> = {};
      result[kind.name] = perOp;
      for (const op of OPS) {
        const where = mkdtempSync(join(dir, `${kind.name}-${op}-`));
        const why = kind === xenC ? await prepareXenC(where) : undefined;
        if (why !== undefined) {
          result[kind.name] = `skipped: ${why}`;
          break;
        }
        perOp[`${op}_w1_instructions`] = await count(kind, op, where);
        process.stderr.write(`${kind.name} ${op}: ${perOp[`${op}_w1_instructions`]} instructions per request\n`);
      }
    }
    const [v, c] = [result["vmstack"], result["c"]];
    const ratios = typeof v === "object" && typeof c === "object" ? Object.fromEntries(Object.keys(v).map((k) => [k, round2(v[k]! / c[k]!)])) : "no baseline";
    console.log(JSON.stringify({ requests: REQUESTS, warm: WARM, node: process.version, daemons: result, "vmstack/c": ratios }, null, 2));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const round2 = (x: number): number => Math.round(x * 100) / 100;

await main();
