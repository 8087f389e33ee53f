/**
 * `vmstack domains start|stop`: xendomains (src/vmm/xendomains.ts), run by
 * systemd/vmstack-domains.service at host boot and shutdown.
 */
import type { Command } from "../command.js";
import { boolOpt, intOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { vmstackdRequest } from "../../vmm/api/client.js";
import { DOMAINS_DEFAULTS, domainsSettings, domainsStart, domainsStop, type DomainsProgress } from "../../vmm/xendomains.js";

function line(p: DomainsProgress): string {
  const what = p.action === "skip" ? "skipped" : p.ok ? `${p.action} ok` : `${p.action} FAILED`;
  return `${p.domain}: ${what}${p.file === undefined ? "" : ` (${p.file})`}${p.detail === undefined ? "" : `: ${p.detail}`} [${p.seconds.toFixed(1)} s]\n`;
}

export const domainsCommand: Command = {
  name: "domains",
  summary: "start or stop every domain as xendomains does: restore saved ones, create autostart ones; save or shut down all",
  usage: "start|stop [--auto-dir DIR] [--save-dir DIR] [--mode save|shutdown] [--timeout S] [--json]",
  options: {
    "auto-dir": { type: "string", arg: "DIR", help: `configs to create at start (default $VMSTACK_AUTO_DIR or ${DOMAINS_DEFAULTS.autoDir})` },
    "save-dir": { type: "string", arg: "DIR", help: `where stop saves domains and start restores them (default $VMSTACK_SAVE_DIR or ${DOMAINS_DEFAULTS.saveDir})` },
    mode: { type: "string", arg: "MODE", help: "stop: save (default; $VMSTACK_STOP_MODE) or shutdown every domain" },
    timeout: { type: "string", arg: "S", help: `stop: seconds per domain before it is destroyed (default $VMSTACK_STOP_TIMEOUT or ${DOMAINS_DEFAULTS.timeoutMs / 1000})` },
    json: { type: "boolean", help: "one JSON object per domain and line: domain, action, ok, file, detail, seconds" },
  },
  details: [
    "start: restores every file in the save directory (each one that restored is deleted; one that",
    "fails is kept and reported), then creates every config (xl.cfg, xm or JSON) in the auto",
    "directory whose domain is not already running.",
    "stop: saves every domain to SAVE_DIR/NAME.save (or shuts it down with --mode shutdown); a",
    "domain not saved or shut down within the deadline is destroyed.",
    "Exit status 1 when any domain failed; every domain is still tried.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("domains", argv, this.options);
    const [verb, extra] = p.positionals;
    if (verb !== "start" && verb !== "stop") throw usageError("domains", "expected 'start' or 'stop'");
    if (extra !== undefined) throw usageError("domains", `unexpected argument '${extra}'`);
    const settings = domainsSettings(process.env, {
      autoDir: stringOpt(p, "auto-dir"),
      saveDir: stringOpt(p, "save-dir"),
      mode: stringOpt(p, "mode"),
      timeoutSeconds: intOpt("domains", p, "timeout", 1),
    });
    const json = boolOpt(p, "json");
    const dc = {
      settings,
      env: process.env,
      signal: ctx.signal,
      request: (req: Parameters<typeof vmstackdRequest>[0], signal?: AbortSignal) => vmstackdRequest(req, { signal: signal ?? ctx.signal }),
      report: (x: DomainsProgress) => ctx.stdout.write(json ? JSON.stringify(x) + "\n" : line(x)),
    };
    const results = verb === "start" ? await domainsStart(dc) : await domainsStop(dc);
    if (!json && results.length === 0) ctx.stdout.write(verb === "start" ? "no saved domains and no autostart configs\n" : "no running domains\n");
    return results.every((r) => r.ok) ? 0 : 1;
  },
};
