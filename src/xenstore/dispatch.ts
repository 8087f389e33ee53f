/**
 * Request dispatch: decode each request into a typed call, run it, reply. This is the ONLY place
 * where errors become XS_ERROR payloads (house rule 4): an XsError carries its errno name; any
 * other exception is a bug, logged with its stack and answered EIO so one bad request can never
 * take the daemon (and every other client) down.
 *
 * Argument checks are strict like the C daemon's (`onearg()`: exactly one NUL, at the end; a
 * fixed count for multi-argument ops): anything else is EINVAL. Replies echo req_id and tx_id.
 * Own watch events are queued before the reply, as cxenstored does (notes §1.7).
 */
import { log } from "../lib/log.js";
import { assertNever } from "../lib/errors.js";
import type { Connection } from "./connection.js";
import type { Xenstored, SpecialName } from "./daemon.js";
import { XsError, xsError } from "./errors.js";
import { TreeView } from "./operations.js";
import { canonicalize } from "./path.js";
import { listingOf, listingsBuilt } from "./listing.js";
import { formatPerms, parsePerms } from "./permissions.js";
import { DIRECTORY_PART_CHUNK_MAX, DOMID_MAX, XENSTORE_PAYLOAD_MAX, XS_OPS, type XsOp } from "./protocol.js";
import { isQuotaName, QUOTA_NAMES, type Quotas } from "./quota.js";
import { applyOp, type Transaction, type TxOp } from "./transaction.js";
import { OK_PAYLOAD, errorPayload, latin1Of, splitNul, strictArgs, utf8Of, type XsMessage } from "./wire.js";

export function dispatch(d: Xenstored, conn: Connection, msg: XsMessage): void {
  let payload: Buffer | null;
  try {
    payload = handle(d, conn, msg, msg.op);
  } catch (e) {
    if (e instanceof XsError) {
      conn.reply(msg, XS_OPS.ERROR, errorPayload(e.errno));
      return;
    }
    log("error", "xenstored", `bug handling ${msg.op} from ${conn.label}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    conn.reply(msg, XS_OPS.ERROR, errorPayload("EIO"));
    return;
  }
  if (payload === null) return; // the handler replied itself
  if (payload.length > XENSTORE_PAYLOAD_MAX) {
    // XSA-72: never send more than 4096 bytes.
    conn.reply(msg, XS_OPS.ERROR, errorPayload("E2BIG"));
    return;
  }
  conn.reply(msg, msg.type, payload);
}

function one(msg: XsMessage): string {
  // Hot path (READ, DIRECTORY, ...): C `onearg()` — exactly one NUL, at the end.
  const p = msg.payload;
  if (p.length === 0 || p.indexOf(0) !== p.length - 1) throw xsError("EINVAL", `${msg.op} takes exactly one NUL-terminated argument`);
  return utf8Of(p, 0, p.length - 1);
}

function args(msg: XsMessage, n: number): string[] {
  const a = strictArgs(msg.payload, n);
  if (a === undefined) throw xsError("EINVAL", `${msg.op} takes exactly ${n} NUL-terminated arguments`);
  return a;
}

function domidArg(s: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) > DOMID_MAX) throw xsError("EINVAL", `bad domid '${s}'`);
  return Number(s);
}

function privileged(conn: Connection, op: string): void {
  if (!conn.privileged) throw xsError("EACCES", `${op} is for dom0 only`);
}

function pathOf(d: Xenstored, conn: Connection, raw: string): string {
  return canonicalize(raw, conn.domid, d.quotasFor(conn.domid)["path-max"]).abs;
}

function txOf(d: Xenstored, conn: Connection, msg: XsMessage): Transaction | undefined {
  if (msg.txId === 0) return undefined;
  const tx = conn.transactions.get(msg.txId);
  if (tx === undefined) throw xsError("ENOENT", `no transaction ${msg.txId}`);
  tx.refresh(d.root, d);
  return tx;
}

function readView(d: Xenstored, conn: Connection, msg: XsMessage): TreeView {
  return txOf(d, conn, msg)?.view ?? new TreeView(d.root, conn.accessor, d.quotasFor(conn.domid), d);
}

function modify(d: Xenstored, conn: Connection, msg: XsMessage, op: TxOp): Buffer {
  const tx = txOf(d, conn, msg);
  if (tx !== undefined) {
    tx.apply(op);
    return OK_PAYLOAD;
  }
  const v = new TreeView(d.root, conn.accessor, d.quotasFor(conn.domid), d);
  applyOp(v, op);
  d.adopt(v);
  return OK_PAYLOAD;
}

const nul = (s: string): Buffer => Buffer.from(s + "\0", "latin1");

/**
 * The commonest requests in small functions of their own, the rest in handleOther. V8 optimises a
 * function after a number of calls that grows with its size: one switch over every op was
 * optimised only after some 6,000 requests (--trace-opt), past the daemon's warm-up, and until
 * then the request path ran in V8's baseline code.
 */
function handle(d: Xenstored, conn: Connection, msg: XsMessage, op: XsOp): Buffer | null {
  if (op === "WRITE") return write(d, conn, msg);
  if (op === "READ") return read(d, conn, msg);
  return handleOther(d, conn, msg, op);
}

function read(d: Xenstored, conn: Connection, msg: XsMessage): Buffer {
  const p = pathOf(d, conn, one(msg));
  return Buffer.from(readView(d, conn, msg).read(p), "latin1");
}

function write(d: Xenstored, conn: Connection, msg: XsMessage): Buffer {
  const i = msg.payload.indexOf(0);
  if (i < 0) throw xsError("EINVAL", "WRITE needs path NUL value");
  const p = pathOf(d, conn, utf8Of(msg.payload, 0, i));
  return modify(d, conn, msg, { kind: "write", path: p, value: latin1Of(msg.payload, i + 1, msg.payload.length) });
}

function handleOther(d: Xenstored, conn: Connection, msg: XsMessage, op: XsOp): Buffer | null {
  // Every op, READ and WRITE too, so that the switch stays exhaustive (assertNever, below).
  switch (op) {
    case "READ":
      return read(d, conn, msg);
    case "WRITE":
      return write(d, conn, msg);
    case "DIRECTORY":
      // Over 4096 bytes it is E2BIG (dispatch), and the client pages through the same listing
      // with DIRECTORY_PART (libxenstore does): built once for both (listing.ts).
      return listingOf(readView(d, conn, msg).listed(pathOf(d, conn, one(msg))));
    case "DIRECTORY_PART":
      return directoryPart(d, conn, msg);
    case "GET_PERMS": {
      const p = pathOf(d, conn, one(msg));
      return Buffer.from(formatPerms(readView(d, conn, msg).getPerms(p)).join("\0") + "\0", "latin1");
    }
    case "MKDIR":
      return modify(d, conn, msg, { kind: "mkdir", path: pathOf(d, conn, one(msg)) });
    case "RM":
      return modify(d, conn, msg, { kind: "rm", path: pathOf(d, conn, one(msg)) });
    case "SET_PERMS":
      return setPerms(d, conn, msg);
    case "WATCH":
      return watch(d, conn, msg);
    case "UNWATCH": {
      const [raw, token] = args(msg, 2) as [string, string];
      const c = canonicalize(raw, conn.domid, d.quotasFor(conn.domid)["path-max"], true);
      const key = `${c.abs}\0${token}`;
      const w = conn.watches.get(key);
      if (w === undefined) throw xsError("ENOENT", `no watch ${raw} ${token}`);
      conn.watches.delete(key);
      d.watches.remove(w);
      return OK_PAYLOAD;
    }
    case "TRANSACTION_START": {
      if (msg.txId !== 0) throw xsError("EBUSY", "TRANSACTION_START inside a transaction");
      const q = d.quotasFor(conn.domid).transactions;
      if (!conn.privileged && q > 0 && conn.transactions.size >= q) throw xsError("ENOSPC", `domain ${conn.domid} has ${q} open transactions`);
      return nul(String(d.startTransaction(conn).id));
    }
    case "TRANSACTION_END": {
      const how = one(msg);
      if (how !== "T" && how !== "F") throw xsError("EINVAL", "TRANSACTION_END takes T or F");
      const tx = conn.transactions.get(msg.txId);
      if (tx === undefined) throw xsError("ENOENT", `no transaction ${msg.txId}`);
      conn.transactions.delete(msg.txId); // dead whatever the outcome
      if (how === "T") d.commitTransaction(tx);
      return OK_PAYLOAD;
    }
    case "INTRODUCE": {
      privileged(conn, "INTRODUCE");
      const [domid, gfn, port] = args(msg, 3) as [string, string, string];
      if (!/^\d+$/.test(gfn) || !/^\d+$/.test(port)) throw xsError("EINVAL", "INTRODUCE: bad gfn or event channel");
      d.introduce(domidArg(domid));
      return OK_PAYLOAD;
    }
    case "RELEASE":
      privileged(conn, "RELEASE");
      d.release(domidArg(one(msg)));
      return OK_PAYLOAD;
    case "GET_DOMAIN_PATH": {
      // Any number, introduced or not (observed on the C daemon); only non-numbers are EINVAL.
      const a = one(msg);
      if (!/^\d{1,10}$/.test(a) || Number(a) > 0xffffffff) throw xsError("EINVAL", `bad domid '${a}'`);
      return nul(`/local/domain/${Number(a)}`);
    }
    case "IS_DOMAIN_INTRODUCED":
      privileged(conn, "IS_DOMAIN_INTRODUCED"); // XSA-115
      return nul(d.isIntroduced(domidArg(one(msg))) ? "T" : "F");
    case "RESUME":
      privileged(conn, "RESUME");
      d.resume(domidArg(one(msg)));
      return OK_PAYLOAD;
    case "SET_TARGET": {
      privileged(conn, "SET_TARGET");
      const [a, b] = args(msg, 2) as [string, string];
      d.setTarget(domidArg(a), domidArg(b));
      return OK_PAYLOAD;
    }
    case "RESET_WATCHES":
      // Watches and transactions of the caller go; safe inside a transaction and when repeated (XSA-484).
      d.dropConnectionState(conn);
      return OK_PAYLOAD;
    case "CONTROL":
      return control(d, conn, msg);
    case "GET_FEATURE": {
      // No optional feature (reconnection, error state, watch depth) is offered on these transports.
      const a = splitNul(msg.payload).filter((s) => s !== "");
      if (a.length === 0) return nul("0");
      privileged(conn, "GET_FEATURE");
      if (a.length !== 1) throw xsError("EINVAL", "GET_FEATURE takes at most a domid");
      return nul(String(d.domainFeatures(domidArg(a[0]!))));
    }
    case "SET_FEATURE": {
      privileged(conn, "SET_FEATURE");
      const [domid, val] = args(msg, 2) as [string, string];
      if (!/^\d+$/.test(val)) throw xsError("EINVAL", "SET_FEATURE: bad value");
      d.setDomainFeatures(domidArg(domid), Number(val) >>> 0);
      return OK_PAYLOAD;
    }
    case "GET_QUOTA":
      return getQuota(d, conn, msg);
    case "SET_QUOTA":
      return setQuota(d, conn, msg);
    case "WATCH_EVENT":
    case "ERROR":
    case "INVALID":
      throw xsError("ENOSYS", `unsupported message type ${msg.type}`);
    default:
      return assertNever(op, "xenstore op");
  }
}

function watch(d: Xenstored, conn: Connection, msg: XsMessage): null {
  // Two arguments only: a third (watch depth) needs XENSTORE_SERVER_FEATURE_WATCHDEPTH, not offered.
  const [raw, token] = args(msg, 2) as [string, string];
  const c = canonicalize(raw, conn.domid, d.quotasFor(conn.domid)["path-max"], true);
  const key = `${c.abs}\0${token}`;
  if (conn.watches.has(key)) throw xsError("EEXIST", `watch ${raw} ${token} exists`);
  const q = d.quotasFor(conn.domid).watches;
  if (!conn.privileged && q > 0 && conn.watches.size >= q) throw xsError("ENOSPC", `domain ${conn.domid} has ${q} watches`);
  const w = { owner: conn, path: c.abs, token, relative: c.relative };
  conn.watches.set(key, w);
  d.watches.add(w);
  // The initial event follows the OK (xenstore.txt), even if the path does not exist.
  conn.reply(msg, msg.type, OK_PAYLOAD);
  conn.deliverEvent(raw, token);
  return null;
}

function setPerms(d: Xenstored, conn: Connection, msg: XsMessage): Buffer {
  const p = msg.payload;
  if (p.length === 0 || p[p.length - 1] !== 0) throw xsError("EINVAL", "SET_PERMS: arguments must be NUL-terminated");
  const [raw, ...entries] = splitNul(p);
  const perms = parsePerms(entries);
  if (raw === undefined || perms === undefined) throw xsError("EINVAL", "SET_PERMS: bad permissions");
  if (raw.startsWith("@")) {
    if (raw !== "@introduceDomain" && raw !== "@releaseDomain") throw xsError("EINVAL", `no special node ${raw}`);
    privileged(conn, "SET_PERMS on a special node");
    d.specialPerms.set(raw as SpecialName, perms);
    return OK_PAYLOAD;
  }
  return modify(d, conn, msg, { kind: "perms", path: pathOf(d, conn, raw), perms });
}

/**
 * DIRECTORY_PART (C `send_directory_part`): `<path>\0<offset>\0` → `<gen>\0` and the names from
 * byte `offset` of the `name\0name\0...` list, cut on name boundaries so the reply fits; the last
 * chunk carries an extra NUL. Clients restart if `<gen>` changes between chunks. The list is
 * built once per directory version (listing.ts).
 */
function directoryPart(d: Xenstored, conn: Connection, msg: XsMessage): Buffer {
  const [raw, offS] = args(msg, 2) as [string, string];
  if (!/^\d+$/.test(offS)) throw xsError("EINVAL", "DIRECTORY_PART: bad offset");
  // The view checks read permission and records the read in a transaction at every page.
  const node = readView(d, conn, msg).listed(pathOf(d, conn, raw));
  const all = listingOf(node);
  const gen = node.gen;
  const off = Number(offS);
  if (off > all.length) throw xsError("EINVAL", "DIRECTORY_PART: offset beyond the list");
  const head = nul(String(gen));
  let end = off;
  while (end < all.length) {
    const next = all.indexOf(0, end) + 1;
    if (head.length + (next - off) + 1 > DIRECTORY_PART_CHUNK_MAX) break;
    end = next;
  }
  const parts = [head, all.subarray(off, end)];
  if (end === all.length) parts.push(Buffer.alloc(1));
  return Buffer.concat(parts);
}

function control(d: Xenstored, conn: Connection, msg: XsMessage): Buffer {
  privileged(conn, "CONTROL");
  const [cmd, ...rest] = splitNul(msg.payload);
  switch (cmd) {
    case "help":
      return nul("check\ncompact\nhelp\nmemreport\nprint <text>\nquota [<domid>]\n");
    case "check":
      return OK_PAYLOAD;
    case "compact": {
      // vmstack's own: snapshot the store now, in the background (as the journal's growth does).
      const r = d.compactInBackground();
      if (r === "in memory") throw xsError("EINVAL", "compact: this daemon keeps no state directory");
      if (r === "failed") throw xsError("EIO", "compact: the state directory cannot be written");
      return nul(r === "started" ? "compaction started\n" : "a compaction is under way\n");
    }
    case "print":
      log("info", "xenstored", `client: ${rest.join(" ")}`);
      return OK_PAYLOAD;
    case "memreport": {
      const m = process.memoryUsage();
      return nul(`rss ${m.rss}\nheap ${m.heapUsed}\nconnections ${d.connections.size}\nwatches ${d.watches.size}\ndirectory listings built ${listingsBuilt()}\n`);
    }
    case "quota": {
      const q = rest[0] === undefined ? d.quotas : d.quotasFor(domidArg(rest[0]));
      const used = rest[0] === undefined ? "" : `nodes used ${d.nodesOwned(domidArg(rest[0]))}\n`;
      return nul(QUOTA_NAMES.map((n) => `${n.padEnd(18)} ${q[n]}`).join("\n") + "\n" + used);
    }
    default:
      throw xsError("EINVAL", `unknown CONTROL command '${cmd ?? ""}'`);
  }
}

function getQuota(d: Xenstored, conn: Connection, msg: XsMessage): Buffer {
  privileged(conn, "GET_QUOTA");
  const a = msg.payload.length === 0 ? [] : strictArgs(msg.payload, splitNul(msg.payload).length);
  if (a === undefined || a.length > 2) throw xsError("EINVAL", "GET_QUOTA: bad arguments");
  if (a.length === 0 || (a.length === 1 && a[0] === "")) return nul(QUOTA_NAMES.join(" "));
  const name = a[a.length - 1]!;
  if (!isQuotaName(name)) throw xsError("EINVAL", `no quota '${name}'`);
  const q: Quotas = a.length === 2 ? (d.isIntroduced(domidArg(a[0]!)) ? d.quotasFor(domidArg(a[0]!)) : fail()) : d.quotas;
  return nul(String(q[name]));
}

function fail(): never {
  throw xsError("ENOENT", "domain not introduced");
}

function setQuota(d: Xenstored, conn: Connection, msg: XsMessage): Buffer {
  privileged(conn, "SET_QUOTA");
  const a = strictArgs(msg.payload, splitNul(msg.payload).length);
  if (a === undefined || (a.length !== 2 && a.length !== 3)) throw xsError("EINVAL", "SET_QUOTA: bad arguments");
  const [name, val] = a.slice(-2) as [string, string];
  if (!isQuotaName(name) || !/^\d{1,9}$/.test(val)) throw xsError("EINVAL", "SET_QUOTA: bad quota or value");
  if (a.length === 3) d.setDomainQuota(domidArg(a[0]!), name, Number(val));
  else d.quotas = { ...d.quotas, [name]: Number(val) };
  return OK_PAYLOAD;
}
