/**
 * `vmstack xenstore read|write|ls|rm|watch|chmod|exists`: Xen's xenstore-* tools as one verb,
 * speaking to any xenstored (vmstack's or Xen's) over its Unix socket. Only parses argv and calls
 * the client (house rule 3). Exit codes follow Xen's tools: 0 success, 1 failure, and for
 * `exists` 1 when the node is missing; 2 for usage errors.
 */
import type { Command, CommandContext } from "../command.js";
import { boolOpt, intOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import {
  connectXenstore,
  defaultXenstoreSocket,
  formatPermissions,
  parsePermissions,
  walkTree,
  type PermEntry,
  type XenstoreClient,
} from "../../xenstore/client.js";

const SUBCOMMANDS = ["read", "write", "ls", "rm", "watch", "chmod", "exists"] as const;
type Sub = (typeof SUBCOMMANDS)[number];

function isSub(s: string | undefined): s is Sub {
  return (SUBCOMMANDS as readonly (string | undefined)[]).includes(s);
}

const details = `Subcommands:
  read PATH…              print each node's value, one per line
  write PATH VALUE […]    write values (several pairs: one transaction)
  ls [PATH]               list the tree below PATH (default /) as 'name = "value"'
  rm PATH…                remove nodes and everything below them (one transaction)
  watch PATH              print the path of every change at or below PATH, one per line;
                          the first line is the initial event for PATH itself
  chmod PATH PERM…        set permissions; PERM is n|r|w|b followed by a domid, the first
                          entry names the owner (e.g. 'n0 r5': owner dom0, dom5 may read)
  exists PATH             exit 0 if the node exists, 1 if not

Paths without a leading '/' are relative to /local/domain/0 (a socket client is dom0).
The socket is --socket, else $XENSTORED_PATH, else $XENSTORED_RUNDIR/socket (the variables
Xen's own tools use), else vmstack's xenstored socket ($VMSTACK_RUN_DIR/xenstored/socket, or
/run/vmstack/xenstored/socket as root).

Exit status: 0 success; 1 failure (the xenstore error, e.g. ENOENT, is in the message) or,
for 'exists', a missing node; 2 usage error.

Examples:
  vmstack xenstore write /vm/demo/name demo
  vmstack xenstore ls -f /vm
  vmstack xenstore watch -n 2 /vm/demo
  vmstack xenstore chmod -r /vm/demo n0 r5
  XENSTORED_PATH=/run/vmstack/xenstored.sock vmstack xenstore read /vm/demo/name`;

/** xenstore-ls style quoting: printable ASCII as is, `"` and `\` escaped, the rest as \xNN. */
function quoteValue(v: Buffer): string {
  let out = "";
  for (const b of v) {
    if (b === 0x22 || b === 0x5c) out += "\\" + String.fromCharCode(b);
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += "\\x" + b.toString(16).padStart(2, "0");
  }
  return `"${out}"`;
}

function parsePermArgs(perms: readonly string[]): PermEntry[] {
  try {
    return parsePermissions(perms);
  } catch (e) {
    throw usageError("xenstore", e instanceof Error ? e.message : String(e));
  }
}

function needArgs(sub: Sub, args: readonly string[], min: number, max = Infinity): void {
  if (args.length < min || args.length > max) {
    throw usageError("xenstore", `'${sub}' takes ${max === min ? min : max === Infinity ? `at least ${min}` : `${min} to ${max}`} argument(s), got ${args.length}`);
  }
}

export const xenstoreCommand: Command = {
  name: "xenstore",
  summary: "read, write, list, remove, watch and chmod xenstore nodes (like Xen's xenstore-* tools)",
  usage: "read|write|ls|rm|watch|chmod|exists [options] ARGS…",
  options: {
    socket: { type: "string", short: "s", arg: "PATH", help: "xenstored's Unix socket" },
    json: { type: "boolean", help: "print JSON (watch: one JSON object per line)" },
    full: { type: "boolean", short: "f", help: "ls: print full paths instead of an indented tree" },
    perms: { type: "boolean", short: "p", help: "ls: show each node's permissions" },
    number: { type: "string", short: "n", arg: "N", help: "watch: exit after N events (the initial event counts)" },
    recursive: { type: "boolean", short: "r", help: "chmod: apply to every node below PATH too" },
  },
  details,
  async run(argv, ctx) {
    const p = parseCommandArgs("xenstore", argv, this.options);
    const [sub, ...args] = p.positionals;
    if (!isSub(sub)) {
      throw usageError("xenstore", sub === undefined ? "missing subcommand" : `unknown subcommand '${sub}' (one of ${SUBCOMMANDS.join(", ")})`);
    }
    const json = boolOpt(p, "json");
    const count = intOpt("xenstore", p, "number", 1);
    switch (sub) {
      case "read":
      case "rm":
      case "exists":
        needArgs(sub, args, 1, sub === "exists" ? 1 : Infinity);
        break;
      case "write":
        needArgs(sub, args, 2);
        if (args.length % 2 !== 0) throw usageError("xenstore", "'write' takes PATH VALUE pairs");
        break;
      case "ls":
        needArgs(sub, args, 0, 1);
        break;
      case "watch":
        needArgs(sub, args, 1, 1);
        break;
      case "chmod":
        needArgs(sub, args, 2);
        parsePermArgs(args.slice(1));
        break;
    }
    const client = await connectXenstore({ socket: stringOpt(p, "socket") ?? defaultXenstoreSocket(), signal: ctx.signal, reconnect: false });
    try {
      return await runSub(client, sub, args, { json, full: boolOpt(p, "full"), perms: boolOpt(p, "perms"), count, recursive: boolOpt(p, "recursive") }, ctx);
    } finally {
      await client.close();
    }
  },
};

interface SubOptions {
  readonly json: boolean;
  readonly full: boolean;
  readonly perms: boolean;
  readonly count: number | undefined;
  readonly recursive: boolean;
}

async function runSub(client: XenstoreClient, sub: Sub, args: readonly string[], o: SubOptions, ctx: CommandContext): Promise<number> {
  const signal = ctx.signal;
  const out = ctx.stdout;
  switch (sub) {
    case "read": {
      // Several keys: one transaction, as xenstore-read does.
      const values =
        args.length === 1
          ? [await client.readBytes(args[0] ?? "", { signal })]
          : await client.transaction((tx) => Promise.all(args.map((a) => tx.readBytes(a, { signal }))), { signal });
      if (o.json) out.write(JSON.stringify(Object.fromEntries(args.map((a, i) => [a, values[i]?.toString("utf8")]))) + "\n");
      else for (const v of values) out.write(Buffer.concat([v, Buffer.from("\n")]));
      return 0;
    }
    case "write": {
      const pairs: [string, string][] = [];
      for (let i = 0; i + 1 < args.length; i += 2) pairs.push([args[i] ?? "", args[i + 1] ?? ""]);
      if (pairs.length === 1) await client.write(pairs[0]?.[0] ?? "", pairs[0]?.[1] ?? "", { signal });
      else await client.transaction(async (tx) => void (await Promise.all(pairs.map(([k, v]) => tx.write(k, v, { signal })))), { signal });
      return 0;
    }
    case "rm":
      await client.transaction(async (tx) => void (await Promise.all(args.map((a) => tx.rm(a, { signal })))), { signal });
      return 0;
    case "exists": {
      const exists = await client.exists(args[0] ?? "", { signal });
      if (o.json) out.write(JSON.stringify({ path: args[0], exists }) + "\n");
      return exists ? 0 : 1;
    }
    case "ls": {
      const root = args[0] ?? "/";
      const rows: { path: string; value: string; perms?: string[] }[] = [];
      for await (const e of walkTree(client, root, { signal, perms: o.perms })) {
        if (e.depth === 0) continue; // like xenstore-ls: the children of PATH, not PATH itself
        const permText = e.perms === undefined ? undefined : formatPermissions(e.perms);
        if (o.json) {
          rows.push({ path: e.path, value: e.value.toString("utf8"), ...(permText === undefined ? {} : { perms: permText }) });
          continue;
        }
        const name = o.full ? e.path : " ".repeat(e.depth - 1) + (e.path.slice(e.path.lastIndexOf("/") + 1) || e.path);
        out.write(`${name} = ${quoteValue(e.value)}${permText === undefined ? "" : `  (${permText.join(",")})`}\n`);
      }
      if (o.json) out.write(JSON.stringify(rows) + "\n");
      return 0;
    }
    case "watch": {
      const watch = await client.watch(args[0] ?? "", { signal });
      let seen = 0;
      try {
        for await (const e of watch) {
          out.write(o.json ? JSON.stringify({ path: e.path, token: e.token }) + "\n" : e.path + "\n");
          seen++;
          if (o.count !== undefined && seen >= o.count) break;
        }
      } catch (e) {
        // Ctrl-C ends a watch normally (exit 0, like xenstore-watch killed by a signal is expected).
        if (signal.aborted) return 0;
        throw e;
      }
      return 0;
    }
    case "chmod": {
      const [path = "", ...permArgs] = args;
      const perms = parsePermArgs(permArgs);
      if (!o.recursive) {
        await client.setPerms(path, perms, { signal });
        return 0;
      }
      const paths: string[] = [];
      for await (const e of walkTree(client, path, { signal })) paths.push(e.path);
      await client.transaction(async (tx) => void (await Promise.all(paths.map((n) => tx.setPerms(n, perms, { signal })))), { signal });
      return 0;
    }
  }
}
