/**
 * The agent as PID 1 (`--init`, guest/pid1.c) without a VM: inside fresh PID, mount, UTS, network
 * and IPC namespaces its mounts, hostname and `lo` touch only the namespace, and its reboot(2)
 * ends only the namespace (the kernel kills a namespace's init instead of powering off).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { retryUntil } from "../../src/lib/retry.js";
import { AgentClient } from "../../src/guest/agent-client.js";
import { guestArtifacts } from "../../src/guest/artifacts.js";

const agentPath = guestArtifacts().agent;
const NS = ["--pid", "--fork", "--mount", "--uts", "--net", "--ipc"];

function unavailable(): string | undefined {
  if (!existsSync(agentPath)) return "agent binary not built (npm run build runs make -C guest)";
  if (process.getuid?.() !== 0) return "needs root to create namespaces";
  const probe = spawnSync("unshare", [...NS, "true"], { stdio: "ignore" });
  if (probe.status !== 0) return `unshare ${NS.join(" ")} does not work here`;
  return undefined;
}
const missing = unavailable();

interface NsAgent {
  readonly client: AgentClient;
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; stderr: string }>;
}

async function startInNamespace(t: TestContext): Promise<NsAgent> {
  // Not under /tmp: the namespace mounts its own tmpfs there, and the host must see the socket.
  const dir = await mkdtemp("/var/tmp/vmstack-agent-init-");
  t.after(() => rm(dir, { recursive: true, force: true }));
  const sock = join(dir, "agent.sock");
  const proc = spawn("unshare", [...NS, agentPath, "--init", "--listen", sock], { stdio: ["ignore", "ignore", "pipe"] });
  t.after(() => proc.kill("SIGKILL"));
  let stderr = "";
  proc.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    proc.once("exit", (code) => resolve({ code, stderr })),
  );
  const socket = await retryUntil(
    () =>
      new Promise<Socket | undefined>((resolve) => {
        const s = connect(sock);
        s.once("connect", () => resolve(s));
        s.once("error", () => resolve(undefined)); // not listening yet
      }),
    { what: `agent socket ${sock}`, timeoutMs: 10_000 },
  );
  const client = await AgentClient.connect(socket, { timeoutMs: 10_000 });
  t.after(() => client.close());
  return { client, proc, exited };
}

describe("the agent as PID 1", () => {
  test("it mounts, names the machine, brings lo up and serves; poweroff ends it", { timeout: 30_000 }, async (t) => {
    if (missing) return t.skip(missing);
    const before = hostname();
    const ns = await startInNamespace(t);
    const r = await ns.client.run({
      shell: "echo $(hostname) $(cat /sys/class/net/lo/flags) $PPID $PATH $HOME; cut -d' ' -f2,3 /proc/mounts",
    });
    const [first, ...mounts] = r.stdout.toString().trim().split("\n");
    // The agent serving us is PID 1's child, so the command's parent is pid 2.
    assert.equal(first, "vmstack 0x9 2 /bin:/sbin:/usr/bin:/usr/sbin /root");
    for (const m of ["/proc proc", "/sys sysfs", "/tmp tmpfs", "/dev/pts devpts", "/dev/shm tmpfs"]) assert.ok(mounts.includes(m), m);
    await ns.client.poweroff();
    const { code } = await ns.exited;
    assert.notEqual(code, 0); // the namespace's init was killed (SIGINT: 130), as reboot(2) does there
    assert.equal(hostname(), before);
  });

  test("when the agent dies, PID 1 says why and powers off", { timeout: 30_000 }, async (t) => {
    if (missing) return t.skip(missing);
    const ns = await startInNamespace(t);
    ns.client.exec({ shell: "kill -KILL $PPID" });
    const { stderr } = await ns.exited;
    assert.match(stderr, /vmstack-init: FAILED: agent killed by signal 9 \(Killed\); powering off/);
  });
});
