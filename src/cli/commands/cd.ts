/** `vmstack cd-insert D VDEV [FORMAT:]FILE` and `cd-eject D VDEV`: xl's cdrom medium verbs. */
import type { Command } from "../command.js";
import { parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";
import { resolve } from "node:path";

const FORMATS = ["raw", "qcow2", "qcow", "vhd", "qed"];

export const cdInsertCommand: Command = {
  name: "cd-insert",
  summary: "insert a disc image into a domain's cdrom drive",
  usage: "DOMAIN VDEV [FORMAT:]FILE",
  options: {},
  details: "VDEV names a cdrom drive the domain has (e.g. hdc, from `disk = [',hdc:cdrom,r']`). FORMAT is raw (default), qcow2, qcow, vhd or qed.",
  async run(argv, ctx) {
    const [domain, vdev, target, extra] = parseCommandArgs("cd-insert", argv, this.options).positionals;
    if (domain === undefined || vdev === undefined || target === undefined) throw usageError("cd-insert", "expected DOMAIN VDEV FILE");
    if (extra !== undefined) throw usageError("cd-insert", `unexpected argument '${extra}'`);
    const m = /^([a-z0-9]+):(.+)$/.exec(target);
    const format = m && FORMATS.includes(m[1] as string) ? (m[1] as string) : "raw";
    const file = m && FORMATS.includes(m[1] as string) ? (m[2] as string) : target;
    if (m && !FORMATS.includes(m[1] as string) && !["file", "phy", "aio", "tap", "tap2"].includes(m[1] as string)) {
      throw usageError("cd-insert", `FILE (argument 3): format '${m[1]}' is not one of ${FORMATS.join(", ")}`);
    }
    await request({ op: "cd-insert", domain, vdev, path: resolve(file), format }, ctx);
    return 0;
  },
};

export const cdEjectCommand: Command = {
  name: "cd-eject",
  summary: "eject the disc from a domain's cdrom drive",
  usage: "DOMAIN VDEV",
  options: {},
  async run(argv, ctx) {
    const [domain, vdev, extra] = parseCommandArgs("cd-eject", argv, this.options).positionals;
    if (domain === undefined || vdev === undefined) throw usageError("cd-eject", "expected DOMAIN VDEV");
    if (extra !== undefined) throw usageError("cd-eject", `unexpected argument '${extra}'`);
    await request({ op: "cd-eject", domain, vdev }, ctx);
    return 0;
  },
};
