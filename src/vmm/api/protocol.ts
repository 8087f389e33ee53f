/**
 * vmstackd's control protocol: one JSON object per line over a Unix socket, a request then its
 * response. Every request is parsed once here (`parseRequest`, house rule 5): the server only
 * decodes and hands a typed request to the manager (house rule 3).
 *
 * A `console` request that succeeds turns its connection into a raw byte stream (the domain's
 * serial console both ways) after the response line.
 */
import { VmstackError } from "../../lib/errors.js";
import { HOTPLUG_KEYS, HOTPLUG_OPS, type HotplugRequest, isHotplugOp, parseHotplugRequest } from "./protocol-hotplug.js";

/** A domain as the user names it: its name, or its domid in decimal. */
export type DomainRef = string;

export const TRIGGERS = ["nmi", "reset", "power"] as const;
export type Trigger = (typeof TRIGGERS)[number];

export type Request =
  | { readonly op: "ping" }
  | { readonly op: "create"; readonly config: Record<string, unknown>; readonly paused: boolean; readonly force: boolean }
  | { readonly op: "list"; readonly domains: readonly DomainRef[] }
  | { readonly op: "pause" | "unpause" | "destroy" | "reboot"; readonly domain: DomainRef }
  | { readonly op: "shutdown"; readonly domain: DomainRef | null; readonly wait: boolean; readonly forceAfterMs: number | null }
  | { readonly op: "rename"; readonly domain: DomainRef; readonly newName: string }
  | { readonly op: "domid"; readonly name: string }
  | { readonly op: "domname"; readonly domid: number }
  | { readonly op: "sysrq"; readonly domain: DomainRef; readonly letter: string }
  | { readonly op: "trigger"; readonly domain: DomainRef; readonly trigger: Trigger }
  | { readonly op: "dmesg"; readonly clear: boolean }
  /** `stream`: after the response the connection carries exec frames (see ExecFrame) instead of one collected result. */
  | { readonly op: "exec"; readonly domain: DomainRef; readonly argv: readonly string[]; readonly timeoutMs: number | null; readonly stream: boolean }
  | { readonly op: "console"; readonly domain: DomainRef }
  | { readonly op: "host-info" }
  /** The native front end (front/vmstack.c): run one quick CLI verb; output follows the response. */
  | { readonly op: "cli"; readonly argv: readonly string[]; readonly cwd?: string }
  /** xl save: `keepRunning` is -c, `paused` is -p; `file` is an absolute path on vmstackd's host. */
  | { readonly op: "save"; readonly domain: DomainRef; readonly file: string; readonly keepRunning: boolean; readonly paused: boolean }
  | { readonly op: "restore"; readonly file: string; readonly paused: boolean; readonly force: boolean }
  | { readonly op: "quit" }
  | HotplugRequest;

export type Op = Request["op"];

export const OPS = [
  "ping", "create", "list", "pause", "unpause", "destroy", "reboot", "shutdown", "rename", "domid", "domname",
  "sysrq", "trigger", "dmesg", "exec", "console", "host-info", "quit", "cli",
  "save", "restore",
  ...HOTPLUG_OPS,
] as const satisfies readonly Op[];

/** xl's state letters, in xl's column order: r b p s c d. */
export interface DomainInfo {
  readonly name: string;
  readonly domid: number;
  readonly uuid: string;
  readonly memoryMiB: number;
  readonly maxmemMiB: number;
  readonly vcpus: number;
  /** Six characters, e.g. "-b----", "--p---". */
  readonly state: string;
  /** CPU seconds used by the domain (QEMU's user + system time), as xl's Time(s). */
  readonly cpuSeconds: number;
  readonly uptimeSeconds: number;
  readonly pid: number | null;
  readonly config?: Record<string, unknown>;
}

export interface HostInfo {
  readonly totalMemoryMiB: number;
  readonly dom0MemoryMiB: number;
  readonly freeMemoryMiB: number;
  readonly domains: number;
  readonly xenstored: "in-process" | "external";
  readonly xenstoreSocket: string;
  readonly daemonPid: number;
  readonly daemonRssMiB: number;
}

export interface ExecOutput {
  readonly exitCode: number | null;
  /** The terminating signal's name ("SIGKILL"), or null. */
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
}

export type Response = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly error: { readonly code: string; readonly message: string } };

function bad(message: string): VmstackError {
  return new VmstackError("BAD_REQUEST", `bad request: ${message}`);
}

function field<T>(o: Record<string, unknown>, key: string, check: (v: unknown) => v is T, what: string): T {
  const v = o[key];
  if (!check(v)) throw bad(`'${key}' must be ${what}`);
  return v;
}
const isString = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 4096;
const isBool = (v: unknown): v is boolean => typeof v === "boolean";
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === "string");
const isAbsPath = (v: unknown): v is string => isString(v) && v.startsWith("/") && !v.includes("\0");
const isNatOrNull = (v: unknown): v is number | null => v === null || (typeof v === "number" && Number.isInteger(v) && v >= 0);

const KEYS: Readonly<Record<Op, readonly string[]>> = {
  ping: [],
  create: ["config", "paused", "force"],
  list: ["domains"],
  pause: ["domain"],
  unpause: ["domain"],
  destroy: ["domain"],
  reboot: ["domain"],
  shutdown: ["domain", "wait", "forceAfterMs"],
  rename: ["domain", "newName"],
  domid: ["name"],
  domname: ["domid"],
  sysrq: ["domain", "letter"],
  trigger: ["domain", "trigger"],
  dmesg: ["clear"],
  exec: ["domain", "argv", "timeoutMs", "stream"],
  console: ["domain"],
  "host-info": [],
  quit: [],
  cli: ["argv", "cwd"],
  save: ["domain", "file", "keepRunning", "paused"],
  restore: ["file", "paused", "force"],
  ...HOTPLUG_KEYS,
};

/** One decoded line → a typed request; anything else is a BAD_REQUEST naming what was wrong. */
export function parseRequest(value: unknown): Request {
  if (!isObject(value)) throw bad("expected a JSON object");
  const op = value["op"];
  if (typeof op !== "string" || !(OPS as readonly string[]).includes(op)) throw bad(`unknown op ${JSON.stringify(op)}`);
  const o = op as Op;
  for (const k of Object.keys(value)) if (k !== "op" && !KEYS[o].includes(k)) throw bad(`unknown key '${k}' for ${o}`);
  if (isHotplugOp(o)) return parseHotplugRequest(o, value);
  switch (o) {
    case "ping":
    case "host-info":
    case "quit":
      return { op: o };
    case "create":
      return { op: o, config: field(value, "config", isObject, "an object"), paused: field(value, "paused", isBool, "a boolean"), force: field(value, "force", isBool, "a boolean") };
    case "list":
      return { op: o, domains: field(value, "domains", isStrings, "a list of strings") };
    case "pause":
    case "unpause":
    case "destroy":
    case "reboot":
    case "console":
      return { op: o, domain: field(value, "domain", isString, "a domain name or id") };
    case "shutdown":
      return {
        op: o,
        domain: field(value, "domain", (v): v is string | null => v === null || isString(v), "a domain name or id, or null for all"),
        wait: field(value, "wait", isBool, "a boolean"),
        forceAfterMs: field(value, "forceAfterMs", isNatOrNull, "a number of ms or null"),
      };
    case "rename":
      return { op: o, domain: field(value, "domain", isString, "a domain name or id"), newName: field(value, "newName", isString, "a name") };
    case "domid":
      return { op: o, name: field(value, "name", isString, "a name") };
    case "domname":
      return { op: o, domid: field(value, "domid", (v): v is number => isNatOrNull(v) && v !== null, "a domid") };
    case "sysrq":
      return { op: o, domain: field(value, "domain", isString, "a domain"), letter: field(value, "letter", (v): v is string => typeof v === "string" && /^[a-z0-9]$/.test(v), "one letter a-z or digit") };
    case "trigger":
      return { op: o, domain: field(value, "domain", isString, "a domain"), trigger: field(value, "trigger", (v): v is Trigger => (TRIGGERS as readonly unknown[]).includes(v), TRIGGERS.join("|")) };
    case "dmesg":
      return { op: o, clear: field(value, "clear", isBool, "a boolean") };
    case "cli": {
      const argv = field(value, "argv", (v): v is string[] => isStrings(v) && v.length > 0 && v.length <= 256, "a non-empty list of strings");
      if (value["cwd"] === undefined) return { op: o, argv };
      return { op: o, argv, cwd: field(value, "cwd", (v): v is string => isString(v) && v.startsWith("/"), "an absolute path") };
    }
    case "exec":
      return {
        op: o,
        domain: field(value, "domain", isString, "a domain"),
        argv: field(value, "argv", (v): v is string[] => isStrings(v) && v.length > 0, "a non-empty list of strings"),
        timeoutMs: field(value, "timeoutMs", isNatOrNull, "a number of ms or null"),
        stream: value["stream"] === undefined ? false : field(value, "stream", isBool, "a boolean"),
      };
    case "save":
      return {
        op: o,
        domain: field(value, "domain", isString, "a domain"),
        file: field(value, "file", isAbsPath, "an absolute path"),
        keepRunning: field(value, "keepRunning", isBool, "a boolean"),
        paused: field(value, "paused", isBool, "a boolean"),
      };
    case "restore":
      return { op: o, file: field(value, "file", isAbsPath, "an absolute path"), paused: field(value, "paused", isBool, "a boolean"), force: field(value, "force", isBool, "a boolean") };
  }
}

/**
 * A streamed exec, one JSON object per line after the response. vmstackd → client:
 * `{"o": base64}` stdout, `{"e": base64}` stderr, `{"x": {exitCode, signal}}` last.
 * Client → vmstackd: `{"i": base64}` stdin, `{"eof": true}` closes stdin.
 */
export type ExecFrame =
  | { readonly o: string }
  | { readonly e: string }
  | { readonly x: { readonly exitCode: number | null; readonly signal: string | null } }
  | { readonly i: string }
  | { readonly eof: true };

export function parseExecFrame(value: unknown): ExecFrame {
  if (isObject(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1) {
      const k = keys[0] as string;
      const v = value[k];
      if ((k === "o" || k === "e" || k === "i") && typeof v === "string") return { [k]: v } as ExecFrame;
      if (k === "eof" && v === true) return { eof: true };
      if (k === "x" && isObject(v) && (v["exitCode"] === null || typeof v["exitCode"] === "number") && (v["signal"] === null || typeof v["signal"] === "string")) {
        return { x: { exitCode: v["exitCode"] as number | null, signal: v["signal"] as string | null } };
      }
    }
  }
  throw bad("not an exec frame");
}

export function encodeLine(v: unknown): string {
  return JSON.stringify(v) + "\n";
}

/** The client's view of a response line. */
export function parseResponse(value: unknown): Response {
  if (!isObject(value) || typeof value["ok"] !== "boolean") throw new VmstackError("BAD_RESPONSE", "vmstackd sent something that is not a response");
  if (value["ok"]) return { ok: true, result: value["result"] };
  const err = value["error"];
  if (!isObject(err) || typeof err["code"] !== "string" || typeof err["message"] !== "string") throw new VmstackError("BAD_RESPONSE", "vmstackd sent a malformed error");
  return { ok: false, error: { code: err["code"], message: err["message"] } };
}
