/**
 * The node operations of vmstack's xenstore client, written once for both a client (tx_id 0) and a
 * transaction (its tx_id), plus the small reply decoders they share (client.ts has the overview).
 */
import { VmstackError } from "../lib/errors.js";
import type { XsOp } from "./protocol.js";
import type { XenstoreConnector } from "./client-socket.js";
import { nulTerminated, pathAndValue, splitNul } from "./wire.js";
import { XsError } from "./errors.js";
import { parsePermEntry, formatPerms, type PermEntry } from "./permissions.js";

export interface RequestOptions {
  readonly signal?: AbortSignal | undefined;
}

export interface ClientOptions {
  /** Re-open with this after the connection is lost. Without it the client fails once closed. */
  readonly reconnect?: XenstoreConnector | undefined;
  /** How long one reconnect may keep trying (default 10 s). */
  readonly reconnectTimeoutMs?: number;
}

/** One reply exactly as the daemon sent it: for conformance tests and tools that show errnos. */
export interface RawReply {
  readonly op: XsOp;
  readonly type: number;
  readonly txId: number;
  readonly payload: Buffer;
  /** The errno name when the reply is XS_ERROR. */
  readonly error?: string;
}

export interface TransactionOptions {
  readonly signal?: AbortSignal | undefined;
  /** Attempts before giving up on EAGAIN (default 32). */
  readonly maxAttempts?: number;
}

/** The reads and writes that work both outside and inside a transaction. */
export interface XenstoreOps {
  read(path: string, opts?: RequestOptions): Promise<string>;
  readBytes(path: string, opts?: RequestOptions): Promise<Buffer>;
  /** The value, or undefined when the node does not exist (ENOENT). */
  tryRead(path: string, opts?: RequestOptions): Promise<string | undefined>;
  write(path: string, value: string | Buffer, opts?: RequestOptions): Promise<void>;
  mkdir(path: string, opts?: RequestOptions): Promise<void>;
  rm(path: string, opts?: RequestOptions): Promise<void>;
  directory(path: string, opts?: RequestOptions): Promise<string[]>;
  exists(path: string, opts?: RequestOptions): Promise<boolean>;
  getPerms(path: string, opts?: RequestOptions): Promise<PermEntry[]>;
  setPerms(path: string, perms: readonly PermEntry[], opts?: RequestOptions): Promise<void>;
}

export function disconnected(op: string, path: string | undefined): VmstackError {
  return new VmstackError("XS_DISCONNECTED", `xenstore ${op}${path === undefined ? "" : " " + path}: connection to xenstored lost`, {
    facts: { op, ...(path === undefined ? {} : { path }) },
  });
}

/**
 * The node operations, written once for both a client (tx_id 0) and a transaction (its tx_id):
 * a subclass says how one request is sent.
 */
export abstract class NodeOps implements XenstoreOps {
  protected abstract nodeRequest(op: XsOp, payload: Buffer, path: string, signal: AbortSignal | undefined): Promise<Buffer>;

  async read(path: string, opts: RequestOptions = {}): Promise<string> {
    return (await this.nodeRequest("READ", nulTerminated(path), path, opts.signal)).toString("utf8");
  }
  readBytes(path: string, opts: RequestOptions = {}): Promise<Buffer> {
    return this.nodeRequest("READ", nulTerminated(path), path, opts.signal);
  }
  async tryRead(path: string, opts: RequestOptions = {}): Promise<string | undefined> {
    try {
      return await this.read(path, opts);
    } catch (e) {
      if (e instanceof XsError && e.errno === "ENOENT") return undefined;
      throw e;
    }
  }
  async write(path: string, value: string | Buffer, opts: RequestOptions = {}): Promise<void> {
    // The value is the rest of the payload, with no terminator (xenstore.txt WRITE).
    await this.nodeRequest("WRITE", pathAndValue(path, value), path, opts.signal);
  }
  async mkdir(path: string, opts: RequestOptions = {}): Promise<void> {
    await this.nodeRequest("MKDIR", nulTerminated(path), path, opts.signal);
  }
  async rm(path: string, opts: RequestOptions = {}): Promise<void> {
    await this.nodeRequest("RM", nulTerminated(path), path, opts.signal);
  }
  async directory(path: string, opts: RequestOptions = {}): Promise<string[]> {
    try {
      return splitNul(await this.nodeRequest("DIRECTORY", nulTerminated(path), path, opts.signal));
    } catch (e) {
      // Over 4096 bytes of names: the C daemon says E2BIG and offers DIRECTORY_PART (XSA-72).
      if (e instanceof XsError && e.errno === "E2BIG") return directoryInParts((op, payload) => this.nodeRequest(op, payload, path, opts.signal), path);
      throw e;
    }
  }
  async exists(path: string, opts: RequestOptions = {}): Promise<boolean> {
    // xenstore-exists reads the node; any answer but ENOENT means it is there (EACCES included).
    try {
      await this.nodeRequest("READ", nulTerminated(path), path, opts.signal);
      return true;
    } catch (e) {
      if (e instanceof XsError && e.errno === "ENOENT") return false;
      if (e instanceof XsError && e.errno === "EACCES") return true;
      throw e;
    }
  }
  async getPerms(path: string, opts: RequestOptions = {}): Promise<PermEntry[]> {
    return parsePermissions(splitNul(await this.nodeRequest("GET_PERMS", nulTerminated(path), path, opts.signal)));
  }
  async setPerms(path: string, perms: readonly PermEntry[], opts: RequestOptions = {}): Promise<void> {
    await this.nodeRequest("SET_PERMS", nulTerminated(path, ...formatPerms(perms)), path, opts.signal);
  }
}

/** True for errors after which a whole transaction is worth running again. */
export function isRetryable(e: unknown): boolean {
  return (e instanceof XsError && e.errno === "EAGAIN") || (e instanceof VmstackError && e.code === "XS_DISCONNECTED");
}

export function stripNul(b: Buffer): string {
  const end = b.length > 0 && b[b.length - 1] === 0 ? b.length - 1 : b.length;
  return b.toString("utf8", 0, end);
}

/** Parse GET_PERMS entries like `n0`,`r5`. */
export function parsePermissions(entries: readonly string[]): PermEntry[] {
  return entries.map((s) => {
    const e = parsePermEntry(s);
    if (e === undefined) throw new VmstackError("XS_PROTOCOL", `bad xenstore permission '${s}' (want n|r|w|b followed by a domid)`, { facts: { entry: s } });
    return e;
  });
}

export { formatPerms as formatPermissions };

/**
 * DIRECTORY_PART: `<path>\0<offset>\0` → `<gencnt>\0<name>\0…`, the last chunk ending in an
 * extra NUL. If the generation changes between chunks the directory changed: start over
 * (xs.c `xs_directory_part`).
 */
async function directoryInParts(req: (op: XsOp, payload: Buffer) => Promise<Buffer>, path: string): Promise<string[]> {
  for (let restart = 0; restart < 16; restart++) {
    const chunks: Buffer[] = [];
    let offset = 0;
    let gen: string | undefined;
    for (;;) {
      const reply = await req("DIRECTORY_PART", nulTerminated(path, String(offset)));
      const nul = reply.indexOf(0);
      if (nul < 0) throw new VmstackError("XS_PROTOCOL", `xenstore DIRECTORY_PART ${path}: reply without a generation`, { facts: { path } });
      const g = reply.toString("latin1", 0, nul);
      if (gen === undefined) gen = g;
      else if (g !== gen) break;
      const rest = reply.subarray(nul + 1);
      const last = rest.length === 0 || (rest.length >= 1 && rest[rest.length - 1] === 0 && (rest.length === 1 || rest[rest.length - 2] === 0));
      if (last) {
        chunks.push(rest.subarray(0, Math.max(0, rest.length - 1)));
        return splitNul(Buffer.concat(chunks));
      }
      chunks.push(rest);
      offset += rest.length;
    }
  }
  throw new XsError("EAGAIN", `xenstore DIRECTORY_PART ${path}: directory kept changing while being read`, { path });
}
