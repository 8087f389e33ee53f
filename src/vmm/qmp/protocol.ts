/**
 * QMP wire format (QEMU's docs/interop/qmp-spec.rst): newline-delimited JSON objects. The server
 * speaks first with a greeting `{"QMP": {"version": …, "capabilities": […]}}`; the client must send
 * `qmp_capabilities` before any other command. Afterwards each line is a reply
 * (`{"return": …, "id": …}` or `{"error": {"class", "desc"}, "id": …}`) or an asynchronous event
 * (`{"event": NAME, "data": …, "timestamp": {"seconds", "microseconds"}}`).
 * Pure: decoding only, no I/O.
 */

export interface QmpGreeting {
  readonly version: { readonly qemu: { readonly major: number; readonly minor: number; readonly micro: number }; readonly package: string };
  readonly capabilities: readonly string[];
}

export interface QmpEvent {
  readonly event: string;
  readonly data: Readonly<Record<string, unknown>>;
  /** Host time of the event in ms since the epoch (from QMP's seconds + microseconds). */
  readonly timeMs: number;
}

export type QmpMessage =
  | { readonly kind: "greeting"; readonly greeting: QmpGreeting }
  | { readonly kind: "return"; readonly id: unknown; readonly value: unknown }
  | { readonly kind: "error"; readonly id: unknown; readonly errorClass: string; readonly desc: string }
  | { readonly kind: "event"; readonly event: QmpEvent }
  | { readonly kind: "invalid"; readonly line: string; readonly reason: string };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** One line from the server → a typed message; never throws (a bad line decodes to "invalid"). */
export function decodeQmpLine(line: string): QmpMessage {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    return { kind: "invalid", line, reason: `not JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (!isObject(v)) return { kind: "invalid", line, reason: "not a JSON object" };
  if (isObject(v["QMP"])) {
    const g = v["QMP"];
    const version = isObject(g["version"]) ? g["version"] : {};
    const qemu = isObject(version["qemu"]) ? version["qemu"] : {};
    return {
      kind: "greeting",
      greeting: {
        version: {
          qemu: { major: Number(qemu["major"] ?? 0), minor: Number(qemu["minor"] ?? 0), micro: Number(qemu["micro"] ?? 0) },
          package: typeof version["package"] === "string" ? version["package"] : "",
        },
        capabilities: Array.isArray(g["capabilities"]) ? g["capabilities"].filter((c): c is string => typeof c === "string") : [],
      },
    };
  }
  if ("return" in v) return { kind: "return", id: v["id"], value: v["return"] };
  if (isObject(v["error"])) {
    const e = v["error"];
    return { kind: "error", id: v["id"], errorClass: String(e["class"] ?? "GenericError"), desc: String(e["desc"] ?? "") };
  }
  if (typeof v["event"] === "string") {
    const ts = isObject(v["timestamp"]) ? v["timestamp"] : {};
    const timeMs = Number(ts["seconds"] ?? 0) * 1000 + Math.floor(Number(ts["microseconds"] ?? 0) / 1000);
    return { kind: "event", event: { event: v["event"], data: isObject(v["data"]) ? v["data"] : {}, timeMs } };
  }
  return { kind: "invalid", line, reason: "neither a greeting, a reply nor an event" };
}

/** A command line for the server; `id` lets replies be matched even if a reply is ever reordered. */
export function encodeQmpCommand(command: string, args: Readonly<Record<string, unknown>> | undefined, id: number): string {
  return JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id }) + "\n";
}

/** Splits a byte stream into lines (QMP replies never contain a raw newline inside a line). */
export class LineSplitter {
  #rest = "";
  push(chunk: string): string[] {
    const parts = (this.#rest + chunk).split("\n");
    this.#rest = parts.pop() ?? "";
    return parts.map((l) => l.replace(/\r$/, "")).filter((l) => l.trim() !== "");
  }
}
