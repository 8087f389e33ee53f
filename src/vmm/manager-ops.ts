/**
 * What each control request does, on top of the manager. The API server only decodes requests
 * and calls `handle` (house rule 3); this is the one place that maps requests to operations.
 */
import type { Socket } from "node:net";
import { DomainManager } from "./manager.js";
import type { Domain } from "./domain.js";
import { requestShutdown } from "./domain-xenstore.js";
import type { DomainInfo, HostInfo, Request, Trigger } from "./api/protocol.js";
import { VmstackError, assertNever, isVmstackError, messageOf } from "../lib/errors.js";
import { procStat } from "./domain-record.js";
import { streamExec } from "./manager-exec.js";
import { pvAcknowledged } from "./pv-control.js";

/** How long a guest that advertises PV control gets to acknowledge before the agent is asked. */
const PV_ACK_MS = 5000;
import { handleHotplug } from "./manager-hotplug.js";
import { restoreDomain, saveDomain } from "./manager-save.js";

export interface OpsContext {
  readonly manager: DomainManager;
  readonly dmesg: { lines(): string[]; clear(): void };
  readonly xenstored: HostInfo["xenstored"];
  readonly xenstoreSocket: string;
  /** Ends the daemon (domains keep running). */
  readonly quit: () => void;
  /** Agent deadline: TCG boots take seconds. */
  readonly agentTimeoutMs: number;
  /**
   * Runs a quick CLI verb in-process for the native front end (src/cli/fast-path.ts; injected by
   * the CLI layer, which sits above this one). Absent: "cli" requests are refused.
   */
  readonly cli?: CliRunner | undefined;
}

export type CliRunner = (argv: readonly string[], request: (req: Request) => Promise<unknown>, signal: AbortSignal, cwd?: string) => Promise<{ code: number; stdout: Buffer; stderr: Buffer }>;

/**
 * A request's result, or a session (console, streamed exec, a CLI verb's output) to hand the
 * connection over to after the response line (whose result is `value`, default null).
 */
export type Outcome = { readonly kind: "result"; readonly value: unknown } | { readonly kind: "handover"; readonly value?: unknown; readonly attach: (s: Socket) => void };

const result = (value: unknown): Outcome => ({ kind: "result", value });

export async function handle(ctx: OpsContext, req: Request, signal: AbortSignal): Promise<Outcome> {
  const m = ctx.manager;
  switch (req.op) {
    case "ping":
      return result({ pid: process.pid });
    case "create":
      return result(await m.create(req.config, req.paused, req.force, signal));
    case "list": {
      const doms = req.domains.length === 0 ? m.domains : req.domains.map((r) => m.find(r));
      const rows: DomainInfo[] = [...(req.domains.length === 0 ? [m.dom0Info()] : []), ...doms.map((d) => m.info(d, true))];
      return result(rows);
    }
    case "pause":
      await onDomain(m, req.domain, (d) => d.qmpExecute("stop"));
      return result(null);
    case "unpause":
      await onDomain(m, req.domain, async (d) => {
        await d.qmpExecute("cont");
        // A domain created paused gets its shares mounted once it runs.
        m.mountSharesOnce(d);
      });
      return result(null);
    case "destroy":
      await m.destroy(m.find(req.domain));
      return result(null);
    case "reboot":
      await onDomain(m, req.domain, (d) => reboot(ctx, d));
      return result(null);
    case "shutdown": {
      const targets = req.domain === null ? m.domains : [m.find(req.domain)];
      await Promise.all(targets.map((d) => shutdown(ctx, d, req.wait, req.forceAfterMs, signal)));
      return result(null);
    }
    case "rename":
      await m.rename(m.find(req.domain), req.newName);
      return result(null);
    case "domid":
      return result(m.find(req.name).domid);
    case "domname":
      if (req.domid === 0) return result("Domain-0");
      return result(m.find(String(req.domid)).name);
    case "sysrq":
      // Alt+SysRq+letter on the guest keyboard (Xen writes control/sysrq for PV guests).
      await onDomain(m, req.domain, (d) => d.qmpExecute("send-key", { keys: ["alt", "sysrq", req.letter].map((k) => ({ type: "qcode", data: k })) }));
      return result(null);
    case "trigger":
      await onDomain(m, req.domain, (d) => d.qmpExecute(triggerCommand(req.trigger)));
      return result(null);
    case "dmesg": {
      const lines = ctx.dmesg.lines();
      if (req.clear) ctx.dmesg.clear();
      return result(lines);
    }
    case "exec": {
      const d = m.find(req.domain);
      const agent = await d.agent(ctx.agentTimeoutMs);
      if (req.stream) return { kind: "handover", attach: streamExec(agent, req.argv, req.timeoutMs, m.o.log) };
      const out = await agent.run({ argv: req.argv, ...(req.timeoutMs === null ? {} : { timeoutMs: req.timeoutMs }), signal });
      return result({ exitCode: out.exitCode ?? null, signal: out.signal ?? null, stdout: out.stdout.toString("base64"), stderr: out.stderr.toString("base64") });
    }
    case "console": {
      const d = m.find(req.domain);
      const hub = d.console;
      if (!hub) throw new VmstackError("NO_CONSOLE", `domain ${d.name} has no console socket (serial is ${String(d.record.config["serial"])}) or is not running`);
      return { kind: "handover", attach: (s) => hub.addViewer(s) };
    }
    case "host-info": {
      const rss = procStat(process.pid)?.rssPages ?? 0;
      const info: HostInfo = {
        totalMemoryMiB: m.o.hostMemoryMiB,
        dom0MemoryMiB: m.o.dom0MemoryMiB,
        freeMemoryMiB: m.freeMiB(),
        domains: m.domains.length,
        xenstored: ctx.xenstored,
        xenstoreSocket: ctx.xenstoreSocket,
        daemonPid: process.pid,
        daemonRssMiB: Math.round((rss * 4096) / 1048576),
      };
      return result(info);
    }
    case "quit":
      setImmediate(ctx.quit);
      return result(null);
    case "save":
      return result(await saveDomain(m, m.find(req.domain), req.file, { keepRunning: req.keepRunning, paused: req.paused, signal }));
    case "restore":
      return result(await restoreDomain(m, req.file, { paused: req.paused, force: req.force, signal }));
    case "cli": {
      if (ctx.cli === undefined) throw new VmstackError("BAD_REQUEST", "bad request: this vmstackd runs no CLI verbs");
      const inner = async (r: Request): Promise<unknown> => {
        if (r.op === "cli" || r.op === "console" || r.op === "exec") throw new VmstackError("BAD_REQUEST", `bad request: a CLI verb run by vmstackd cannot make a '${r.op}' request`);
        const o = await handle(ctx, r, signal);
        return o.kind === "result" ? o.value : null;
      };
      const r = await ctx.cli(req.argv, inner, signal, req.cwd);
      return {
        kind: "handover",
        value: { code: r.code, stdout: r.stdout.length, stderr: r.stderr.length },
        attach: (s) => {
          s.write(r.stdout);
          s.end(r.stderr);
        },
      };
    }
    case "block-attach":
    case "block-detach":
    case "block-list":
    case "network-attach":
    case "network-detach":
    case "network-list":
    case "cd-insert":
    case "cd-eject":
    case "mem-set":
    case "vcpu-set":
      return result(await handleHotplug({ manager: m, agentTimeoutMs: ctx.agentTimeoutMs }, req, signal));
    default:
      return assertNever(req, "request");
  }
}

function onDomain<T>(m: DomainManager, ref: string, fn: (d: Domain) => Promise<T>): Promise<T> {
  const d = m.find(ref);
  return d.enqueue(() => fn(d));
}

function triggerCommand(t: Trigger): string {
  switch (t) {
    case "nmi":
      return "inject-nmi";
    case "reset":
      return "system_reset";
    case "power":
      return "system_powerdown";
    default:
      return assertNever(t, "trigger");
  }
}

/**
 * Asks the guest to power off every way it might listen: control/shutdown in xenstore (Xen's PV
 * protocol), the ACPI power button, and — for guests running vmstack's agent, whose busybox has no
 * acpid — the agent's poweroff, unless the guest acknowledges control/shutdown (vmstack's agent
 * does, through its xenstore channel: see pv-control.ts). `wait` waits for the domain to end (or
 * be preserved as shut down); `forceAfterMs` destroys it when that takes longer.
 */
async function shutdown(ctx: OpsContext, d: Domain, wait: boolean, forceAfterMs: number | null, signal: AbortSignal): Promise<void> {
  const m = ctx.manager;
  await d.enqueue(async () => {
    await requestShutdown(m.o.xs, d.domid, "poweroff");
    await d.qmpExecute("system_powerdown");
  });
  if (d.record.agentSocket !== null) {
    // Not the request's signal: without -w the request ends at once, and the fallback must still run.
    pvAcknowledged(m.o.xs, d.domid, "poweroff", PV_ACK_MS)
      .then(async (acked) => {
        if (acked) m.o.log(`${d.name}: the guest acknowledged control/shutdown = poweroff`);
        else await (await d.agent(ctx.agentTimeoutMs)).poweroff();
      })
      .catch((e: unknown) => m.o.log(`${d.name}: agent poweroff: ${messageOf(e)}`));
  }
  if (!wait && forceAfterMs === null) return;
  try {
    await m.waitGone(d, forceAfterMs ?? 24 * 3600_000, signal, true);
  } catch (e) {
    if (forceAfterMs === null || !isVmstackError(e, "TIMEOUT")) throw e;
    m.o.log(`${d.name}: no clean shutdown within ${forceAfterMs} ms: destroying`);
    await m.destroy(d);
  }
}

async function reboot(ctx: OpsContext, d: Domain): Promise<void> {
  const m = ctx.manager;
  await requestShutdown(m.o.xs, d.domid, "reboot");
  if (await pvAcknowledged(m.o.xs, d.domid, "reboot", PV_ACK_MS)) {
    m.o.log(`${d.name}: the guest acknowledged control/shutdown = reboot`);
    return;
  }
  if (d.record.agentSocket !== null) {
    const a = await d.agent(ctx.agentTimeoutMs);
    await a.reboot();
    return;
  }
  // No PV/agent path: a reset is the only reboot QEMU can do from outside (as xl reboot -F falls back to ACPI).
  await d.qmpExecute("system_reset");
}
