/**
 * Device specs given on a command line (xl block-attach DISKSPEC, network-attach VIFSPEC,
 * mem-set MEM) → vmstack spec fragments, with problems placed like a config file's:
 * `<argument>:1:<col>` where the argument names which one it was (`DISKSPEC (argument 2)`), the
 * column points at the offending item, and the message says what was expected.
 */
import type { Problem } from "./diagnostics.js";
import { parseDiskSpec, xlDiskToSpec } from "./disk-spec.js";
import { DEFAULT_BRIDGE, parseVifSpec } from "./vif-spec.js";

export interface FragmentResult {
  /** The spec fragment (a `disks[]` or `nics[]` entry); absent when there are errors. */
  readonly value?: Record<string, unknown>;
  readonly problems: readonly Problem[];
}

/** 1-based column of the first quoted 'item' of the message that occurs in the spec, else 1. */
function columnOf(spec: string, message: string): number {
  for (const m of message.matchAll(/'([^']+)'/g)) {
    const at = spec.indexOf(m[1] as string);
    if (at >= 0) return at + 1;
  }
  return 1;
}

function problems(spec: string, source: string, errors: readonly string[], warnings: readonly string[]): Problem[] {
  const at = (message: string): NonNullable<Problem["origin"]> => ({ file: source, line: 1, col: columnOf(spec, message) });
  return [
    ...errors.map((message) => ({ severity: "error" as const, message, origin: at(message) })),
    ...warnings.map((message) => ({ severity: "warning" as const, message, origin: at(message) })),
  ];
}

/** An xl disk spec (xl-disk-configuration(5)) → a `disks[]` entry. */
export function diskFragment(spec: string, source: string): FragmentResult {
  const r = parseDiskSpec(spec);
  const ps = problems(spec, source, r.errors, r.warnings);
  return r.disk === undefined ? { problems: ps } : { value: xlDiskToSpec(r.disk), problems: ps };
}

/** An xl vif spec (xl-network-configuration(5)) → a `nics[]` entry, bridges mapped as xl.cfg import maps them. */
export function nicFragment(spec: string, source: string): FragmentResult {
  const r = parseVifSpec(spec);
  const warnings = [...r.warnings];
  if (r.vif === undefined) return { problems: problems(spec, source, r.errors, warnings) };
  const v = r.vif;
  const common = { ...(v.mac === undefined ? {} : { mac: v.mac }), ...(v.model === "virtio" ? {} : { model: v.model }) };
  let value: Record<string, unknown>;
  if (v.bridge === undefined || v.bridge === DEFAULT_BRIDGE) value = { type: "user", ...common };
  else {
    warnings.push(`bridge '${v.bridge}' becomes a private network of that name between vmstack domains (no host bridge)`);
    value = { type: "private", network: v.bridge, ...common };
  }
  return { value, problems: problems(spec, source, [], warnings) };
}

const UNITS: Readonly<Record<string, number>> = { b: 1 / 1024, k: 1, m: 1024, g: 1024 * 1024, t: 1024 * 1024 * 1024 };

/**
 * xl's memory size syntax (xl(1), mem-set): a number with an optional unit letter b, k, m, g or
 * t (bytes, KiB, MiB, GiB, TiB; case-insensitive); no letter means KiB, as in xl. → whole MiB
 * (rounded down: the balloon works in pages, vmstack in MiB), or a problem.
 */
export function parseMemSize(text: string, source: string): { mib?: number; problems: readonly Problem[] } {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgtBKMGT]?)\s*$/.exec(text);
  const fail = (message: string): { problems: Problem[] } => ({ problems: [{ severity: "error", message, origin: { file: source, line: 1, col: 1 } }] });
  if (!m) return fail(`'${text}' is not a memory size: expected a number with an optional unit b, k, m, g or t (no unit = KiB, as xl), e.g. 256m`);
  const kib = Number(m[1]) * (UNITS[(m[2] as string).toLowerCase() || "k"] as number);
  const mib = Math.floor(kib / 1024);
  if (mib < 16) return fail(`${text} is ${mib} MiB; a domain needs at least 16 MiB`);
  return { mib, problems: [] };
}
