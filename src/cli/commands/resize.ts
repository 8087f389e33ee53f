/** `vmstack mem-set D MEM` (balloon) and `vmstack vcpu-set D N` (CPU hotplug): xl's resizing verbs. */
import type { Command } from "../command.js";
import { parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";
import { errorsOf, formatProblem, parseMemSize } from "../../domain/index.js";
import { VmstackError } from "../../lib/errors.js";

export const memSetCommand: Command = {
  name: "mem-set",
  summary: "set a domain's memory target (the balloon), up to its maxmem",
  usage: "DOMAIN MEM",
  options: {},
  details: "MEM as xl: a number and a unit b, k, m, g or t; no unit means KiB (e.g. 256m, 1g, 262144).",
  async run(argv, ctx) {
    const [domain, mem, extra] = parseCommandArgs("mem-set", argv, this.options).positionals;
    if (domain === undefined || mem === undefined) throw usageError("mem-set", "expected DOMAIN MEM");
    if (extra !== undefined) throw usageError("mem-set", `unexpected argument '${extra}'`);
    const r = parseMemSize(mem, "MEM (argument 2)");
    if (r.mib === undefined) throw new VmstackError("BAD_SPEC", `${errorsOf(r.problems).map(formatProblem).join("; ")}`);
    await request({ op: "mem-set", domain, memoryMiB: r.mib }, ctx);
    return 0;
  },
};

export const vcpuSetCommand: Command = {
  name: "vcpu-set",
  summary: "set how many vCPUs a domain has online, up to its maxvcpus",
  usage: "DOMAIN N",
  options: {},
  details: "CPUs are hot-plugged through ACPI (q35, pc); microvm cannot. The guest's agent brings new CPUs online.",
  async run(argv, ctx) {
    const [domain, n, extra] = parseCommandArgs("vcpu-set", argv, this.options).positionals;
    if (domain === undefined || n === undefined) throw usageError("vcpu-set", "expected DOMAIN N");
    if (extra !== undefined) throw usageError("vcpu-set", `unexpected argument '${extra}'`);
    if (!/^\d+$/.test(n) || Number(n) < 1) throw usageError("vcpu-set", `N (argument 2): expected a number of vCPUs >= 1, got '${n}'`);
    await request({ op: "vcpu-set", domain, vcpus: Number(n) }, ctx);
    return 0;
  },
};
