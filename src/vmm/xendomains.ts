/**
 * xendomains for vmstack: `vmstack domains start` at host boot, `vmstack domains stop` at host
 * shutdown (systemd/vmstack-domains.service runs both).
 *
 * start: restore every save file in the save directory (deleting each one that restored, keeping
 *        and reporting each one that failed, as xendomains does), then create every config in the
 *        auto directory whose domain is not running yet (restored domains count as running).
 * stop:  save every running domain into the save directory (or shut it down: --mode), one at a
 *        time with a deadline each; a domain that misses its deadline or fails to save is
 *        destroyed (the forced fallback), so host shutdown is never held up for long.
 *
 * This is a client of vmstackd, like the CLI: every step is one control request. It reports one
 * progress entry per domain as it goes.
 */
import { mkdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { DomainConfigError, errorsOf, loadDomainFile, type DomainConfig } from "../domain/index.js";
import { detectFormat } from "../domain/load.js";
import { DEFAULT_GUEST_PLACEHOLDER, withDefaultGuest } from "./manager-guest.js";
import type { DomainInfo, Request } from "./api/protocol.js";
import { VmstackError, isVmstackError, messageOf } from "../lib/errors.js";
import { readdirOrEmpty } from "../lib/fs.js";

export const STOP_MODES = ["save", "shutdown"] as const;
export type StopMode = (typeof STOP_MODES)[number];

export interface DomainsSettings {
  readonly autoDir: string;
  readonly saveDir: string;
  readonly mode: StopMode;
  /** Deadline per domain for a save or a clean shutdown, before the domain is destroyed. */
  readonly timeoutMs: number;
}

export const DOMAINS_DEFAULTS: DomainsSettings = { autoDir: "/etc/vmstack/auto", saveDir: "/var/lib/vmstack/save", mode: "save", timeoutMs: 120_000 };

/** Flags win over the environment (VMSTACK_AUTO_DIR, VMSTACK_SAVE_DIR, VMSTACK_STOP_MODE, VMSTACK_STOP_TIMEOUT in seconds), which wins over the defaults. */
export function domainsSettings(env: NodeJS.ProcessEnv, flags: { autoDir?: string | undefined; saveDir?: string | undefined; mode?: string | undefined; timeoutSeconds?: number | undefined }): DomainsSettings {
  const mode = flags.mode ?? env["VMSTACK_STOP_MODE"] ?? DOMAINS_DEFAULTS.mode;
  if (!(STOP_MODES as readonly string[]).includes(mode)) throw new VmstackError("BAD_MODE", `stop mode '${mode}' is not one of ${STOP_MODES.join(", ")}`);
  const envTimeout = Number(env["VMSTACK_STOP_TIMEOUT"]);
  const seconds = flags.timeoutSeconds ?? (env["VMSTACK_STOP_TIMEOUT"] !== undefined && Number.isFinite(envTimeout) && envTimeout > 0 ? envTimeout : DOMAINS_DEFAULTS.timeoutMs / 1000);
  return {
    autoDir: flags.autoDir ?? env["VMSTACK_AUTO_DIR"] ?? DOMAINS_DEFAULTS.autoDir,
    saveDir: flags.saveDir ?? env["VMSTACK_SAVE_DIR"] ?? DOMAINS_DEFAULTS.saveDir,
    mode: mode as StopMode,
    timeoutMs: Math.round(seconds * 1000),
  };
}

export type DomainsAction = "restore" | "create" | "skip" | "save" | "shutdown" | "destroy";

export interface DomainsProgress {
  readonly domain: string;
  readonly action: DomainsAction;
  readonly ok: boolean;
  /** The save file or config file involved. */
  readonly file?: string;
  readonly detail?: string;
  readonly seconds: number;
}

export interface DomainsContext {
  readonly settings: DomainsSettings;
  readonly request: (req: Request, signal?: AbortSignal) => Promise<unknown>;
  readonly report: (p: DomainsProgress) => void;
  readonly env: NodeJS.ProcessEnv;
  readonly signal?: AbortSignal | undefined;
}

/** Regular files of a directory (symlinks followed), sorted, without hidden ones (partial saves are hidden). A missing directory is empty. */
async function filesIn(dir: string): Promise<string[]> {
  const names = await readdirOrEmpty(dir);
  const out: string[] = [];
  for (const n of names.sort()) {
    if (n.startsWith(".")) continue;
    const path = join(dir, n);
    const s = await stat(path).catch(() => undefined);
    if (s?.isFile()) out.push(path);
  }
  return out;
}

/** A config file as `vmstack create FILE` loads it, including vmstack's default guest for a config with nothing to boot. */
export async function loadAutoConfig(file: string, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<DomainConfig> {
  let config: DomainConfig;
  try {
    config = (await loadDomainFile(file)).config;
  } catch (e) {
    if (!(e instanceof DomainConfigError) || !errorsOf(e.problems).every((x) => x.message.startsWith("nothing to boot"))) throw e;
    const xl = detectFormat(file, await readFile(file, "utf8")) === "xl";
    config = (await loadDomainFile(file, { overrides: [xl ? `kernel="${DEFAULT_GUEST_PLACEHOLDER}"` : `boot.kernel=${DEFAULT_GUEST_PLACEHOLDER}`] })).config;
  }
  return withDefaultGuest(config, env, signal);
}

const since = (t0: number): number => Math.round(performance.now() - t0) / 1000;

async function timed(fn: () => Promise<string | undefined>): Promise<{ ok: boolean; detail?: string; seconds: number }> {
  const t0 = performance.now();
  try {
    const detail = await fn();
    return { ok: true, ...(detail === undefined ? {} : { detail }), seconds: since(t0) };
  } catch (e) {
    return { ok: false, detail: messageOf(e), seconds: since(t0) };
  }
}

async function running(ctx: DomainsContext): Promise<DomainInfo[]> {
  const rows = (await ctx.request({ op: "list", domains: [] }, ctx.signal)) as DomainInfo[];
  return rows.filter((r) => r.domid !== 0);
}

export async function domainsStart(ctx: DomainsContext): Promise<DomainsProgress[]> {
  const done: DomainsProgress[] = [];
  const note = (p: DomainsProgress): void => {
    done.push(p);
    ctx.report(p);
  };
  for (const file of await filesIn(ctx.settings.saveDir)) {
    let name = file;
    const r = await timed(async () => {
      const info = (await ctx.request({ op: "restore", file, paused: false, force: false }, ctx.signal)) as DomainInfo;
      name = info.name;
      await rm(file, { force: true });
      return `domid ${info.domid}`;
    });
    note({ domain: name, action: "restore", file, ...r });
  }
  const names = new Set((await running(ctx)).map((d) => d.name));
  for (const file of await filesIn(ctx.settings.autoDir)) {
    let config: DomainConfig;
    try {
      config = await loadAutoConfig(file, ctx.env, ctx.signal);
    } catch (e) {
      note({ domain: file, action: "create", file, ok: false, detail: messageOf(e), seconds: 0 });
      continue;
    }
    if (names.has(config.name)) {
      note({ domain: config.name, action: "skip", file, ok: true, detail: "already running", seconds: 0 });
      continue;
    }
    const r = await timed(async () => {
      const info = (await ctx.request({ op: "create", config: config as unknown as Record<string, unknown>, paused: false, force: false }, ctx.signal)) as DomainInfo;
      names.add(info.name);
      return `domid ${info.domid}`;
    });
    note({ domain: config.name, action: "create", file, ...r });
  }
  return done;
}

export async function domainsStop(ctx: DomainsContext): Promise<DomainsProgress[]> {
  const { mode, saveDir, timeoutMs } = ctx.settings;
  const done: DomainsProgress[] = [];
  const note = (p: DomainsProgress): void => {
    done.push(p);
    ctx.report(p);
  };
  if (mode === "save") await mkdir(saveDir, { recursive: true });
  // Shut-down or crashed domains kept by on_poweroff/on_crash=preserve have no state to save: destroyed below like any failure.
  for (const d of await running(ctx)) {
    const file = join(saveDir, `${d.name}.save`);
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = ctx.signal ? AbortSignal.any([ctx.signal, deadline]) : deadline;
    const r = await timed(async () => {
      switch (mode) {
        case "save":
          await ctx.request({ op: "save", domain: String(d.domid), file, keepRunning: false, paused: false }, signal);
          return undefined;
        case "shutdown":
          await ctx.request({ op: "shutdown", domain: String(d.domid), wait: true, forceAfterMs: null }, signal);
          return undefined;
      }
    });
    const timedOut = !r.ok && deadline.aborted;
    note({
      domain: d.name,
      action: mode,
      ...(mode === "save" ? { file } : {}),
      ...r,
      ...(timedOut ? { detail: `no ${mode === "save" ? "save" : "clean shutdown"} within ${timeoutMs / 1000} s` } : {}),
    });
    if (r.ok) continue;
    // The forced fallback: the domain must not outlive the host's shutdown.
    const f = await timed(async () => {
      try {
        await ctx.request({ op: "destroy", domain: String(d.domid) }, ctx.signal);
      } catch (e) {
        if (!isVmstackError(e, "NO_SUCH_DOMAIN")) throw e;
      }
      return undefined;
    });
    note({ domain: d.name, action: "destroy", ...f });
  }
  return done;
}
