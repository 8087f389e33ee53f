/**
 * The common frame of the real-VM domain tests: vmstackd (started on demand by the CLI) in a
 * temporary state and run directory, CLI helpers bound to them, and a clean-up that destroys every
 * domain, stops the daemon and removes the directory.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { cli, type CliResult } from "./cli.js";

export interface DomainRow {
  readonly name: string;
  readonly domid: number;
  readonly state: string;
  readonly pid: number | null;
}

export interface DomainHarness {
  readonly dir: string;
  readonly env: Readonly<Record<string, string>>;
  /** The CLI with this harness's directories; any exit status. */
  v(...args: string[]): Promise<CliResult>;
  /** The CLI, asserting exit status 0; its stdout. */
  ok(...args: string[]): Promise<string>;
  /** `vmstack list --json`, Domain-0 included. */
  list(): Promise<DomainRow[]>;
  /** Polls `check` every 200 ms for up to `seconds` (default 60); fails naming `what` and quoting vmstackd's log. */
  until(what: string, check: () => Promise<boolean>, seconds?: number): Promise<void>;
  daemonPid(): number;
  /** Destroys every domain, stops vmstackd, removes the directory. */
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** More environment for the CLI, given the harness's directory. */
  readonly env?: (dir: string) => Record<string, string>;
  /** Told about CLI calls slower than 2 s (a test's t.diagnostic): where a slow run spent its time. */
  readonly slow?: (message: string) => void;
}

export function domainHarness(prefix: string, o: HarnessOptions = {}): DomainHarness {
  const dir = mkdtempSync(join(tmpdir(), `vmstack-${prefix}-`));
  const env = { VMSTACK_STATE_DIR: join(dir, "s"), VMSTACK_RUN_DIR: join(dir, "r"), ...o.env?.(dir) };
  const t0 = Date.now();
  const pidFile = join(dir, "r", "vmstackd.pid");
  const v = (...args: string[]): Promise<CliResult> => cli(args, { env });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await v(...args);
    if (r.ms > 2000) o.slow?.(`+${((Date.now() - t0) / 1000).toFixed(1)} s: vmstack ${args.join(" ")} took ${r.ms} ms`);
    assert.equal(r.code, 0, `vmstack ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const list = async (): Promise<DomainRow[]> => JSON.parse(await ok("list", "--json")) as DomainRow[];
  return {
    dir,
    env,
    v,
    ok,
    list,
    async until(what, check, seconds = 60) {
      for (let i = 0; i < seconds * 5; i++) {
        if (await check()) return;
        await sleep(200);
      }
      assert.fail(`timed out waiting for ${what}; vmstackd said:\n${(await v("dmesg")).stdout}`);
    },
    daemonPid: () => Number(readFileSync(pidFile, "utf8")),
    async close() {
      const r = await v("list", "--json");
      if (r.code === 0) for (const d of JSON.parse(r.stdout) as DomainRow[]) if (d.domid !== 0) await v("destroy", String(d.domid));
      if (existsSync(pidFile)) {
        try {
          process.kill(Number(readFileSync(pidFile, "utf8")), "SIGTERM");
        } catch {
          // already gone
        }
      }
      await sleep(300);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
