/**
 * `vmstack block-attach D DISKSPEC…`, `block-detach D DEV`, `block-list D`: xl's disk hotplug
 * verbs. The disk spec is xl's (xl-disk-configuration(5)); like xl, several arguments are joined
 * with commas (`block-attach d /img/x.raw xvdb w`).
 */
import type { Command, CommandContext } from "../command.js";
import { boolOpt, parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";
import { diskFragment, errorsOf, formatProblem, warningsOf, type FragmentResult } from "../../domain/index.js";
import { VmstackError } from "../../lib/errors.js";
import type { BlockInfo } from "../../vmm/api/protocol-hotplug.js";

/** Prints a spec's warnings; throws its errors, `file:line:col`-style, naming the argument. */
export function takeFragment(verb: string, what: string, r: FragmentResult, ctx: CommandContext): Record<string, unknown> {
  for (const w of warningsOf(r.problems)) ctx.stderr.write(`vmstack ${verb}: ${formatProblem(w)}\n`);
  const errors = errorsOf(r.problems);
  if (r.value === undefined || errors.length > 0) {
    throw new VmstackError("BAD_SPEC", `invalid ${what}:\n  ${errors.map(formatProblem).join("\n  ")}`, { facts: { errors: errors.map((e) => e.message) } });
  }
  return r.value;
}

/** Which argument(s) a spec came from, for `<source>:1:<col>` positions. */
export function specSource(name: string, parts: readonly string[], first: number): string {
  return parts.length === 1 ? `${name} (argument ${first})` : `${name} (arguments ${first}-${first + parts.length - 1} joined by commas)`;
}

const json = { json: { type: "boolean", help: "print the result as JSON" } } as const;

export const blockAttachCommand: Command = {
  name: "block-attach",
  summary: "attach a disk to a running domain (xl disk spec)",
  usage: "[--json] DOMAIN DISKSPEC…",
  options: json,
  details: [
    "DISKSPEC is xl's: e.g. `/img/data.raw,raw,xvdb,rw`, `format=qcow2,vdev=xvdc,target=/img/x.qcow2`,",
    "or the legacy `file:/img/data.raw,xvdb,w`. The guest sees a virtio disk (/dev/vdX).",
    "Needs machine=q35 (a free hotplugSlots port) or machine=pc; microvm cannot hotplug.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("block-attach", argv, this.options);
    const [domain, ...parts] = p.positionals;
    if (domain === undefined || parts.length === 0) throw usageError("block-attach", "expected DOMAIN DISKSPEC");
    const disk = takeFragment("block-attach", "disk spec", diskFragment(parts.join(","), specSource("DISKSPEC", parts, 2)), ctx);
    const info = (await request({ op: "block-attach", domain, disk }, ctx)) as BlockInfo;
    if (boolOpt(p, "json")) ctx.stdout.write(JSON.stringify(info, null, 2) + "\n");
    return 0;
  },
};

export const blockDetachCommand: Command = {
  name: "block-detach",
  summary: "detach a disk from a running domain (the guest must release it)",
  usage: "DOMAIN DEV",
  options: {},
  details: "DEV is the vdev (xvdb), its Xen device number (51728) or the disk's id, as block-list shows.",
  async run(argv, ctx) {
    const [domain, device, extra] = parseCommandArgs("block-detach", argv, this.options).positionals;
    if (domain === undefined || device === undefined) throw usageError("block-detach", "expected DOMAIN DEV");
    if (extra !== undefined) throw usageError("block-detach", `unexpected argument '${extra}'`);
    await request({ op: "block-detach", domain, device }, ctx);
    return 0;
  },
};

export function formatBlockList(rows: readonly BlockInfo[]): string {
  const out = ["Vdev       BE  handle state evt-ch ring-ref BE-path                                  Dev    Media  Target"];
  for (const r of rows) {
    out.push(
      `${String(r.devid).padEnd(10)} ${"0".padStart(2)}  ${String(r.devid).padStart(6)} ${String(r.state).padStart(5)} ${"-1".padStart(6)} ${"-1".padStart(8)} ${r.backendPath.padEnd(40)} ${r.vdev.padEnd(6)} ${r.media.padEnd(6)} ${r.path ?? "(empty)"}`,
    );
  }
  return out.join("\n") + "\n";
}

export const blockListCommand: Command = {
  name: "block-list",
  summary: "list a domain's disks (xl block-list)",
  usage: "[--json] DOMAIN",
  options: json,
  details: "evt-ch and ring-ref are -1: QEMU emulates the disks, there is no Xen ring.",
  async run(argv, ctx) {
    const p = parseCommandArgs("block-list", argv, this.options);
    const [domain, extra] = p.positionals;
    if (domain === undefined) throw usageError("block-list", "expected DOMAIN");
    if (extra !== undefined) throw usageError("block-list", `unexpected argument '${extra}'`);
    const rows = (await request({ op: "block-list", domain }, ctx)) as BlockInfo[];
    ctx.stdout.write(boolOpt(p, "json") ? JSON.stringify(rows, null, 2) + "\n" : formatBlockList(rows));
    return 0;
  },
};
