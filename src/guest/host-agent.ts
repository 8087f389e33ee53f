/**
 * Runs the real agent binary on this host, connected to an AgentClient over a Unix socket: the
 * agent's own tests use it, and so can anything that wants the guest protocol without a VM.
 * The agent runs with --connect, so closing the client makes it kill its commands and exit.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { AgentClient } from "./agent-client.js";
import { guestArtifacts } from "./artifacts.js";

export interface HostAgentOptions {
  /** Default: the built dist/guest/vmstack-agent. */
  readonly agentPath?: string;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface HostAgent {
  readonly client: AgentClient;
  readonly process: ChildProcess;
  /** What the agent wrote to its stderr so far. */
  stderr(): string;
  /** Closes the client and waits for the agent to exit; returns its exit code. */
  stop(): Promise<number | null>;
}

export async function startHostAgent(options: HostAgentOptions = {}): Promise<HostAgent> {
  const agentPath = options.agentPath ?? guestArtifacts().agent;
  if (!existsSync(agentPath)) {
    throw new VmstackError("GUEST_AGENT_MISSING", `no agent binary at ${agentPath} (run npm run build)`, { facts: { agentPath } });
  }
  const timeoutMs = options.timeoutMs ?? 5000;
  const dir = await mkdtemp(join(tmpdir(), "vmstack-agent-"));
  const path = join(dir, "agent.sock");
  const server = createServer();
  let child: ChildProcess | undefined;
  let err = "";
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, resolve);
    });
    const connected = new Promise<Socket>((resolve) => server.once("connection", resolve));
    const proc = spawn(agentPath, ["--connect", path], { stdio: ["ignore", "ignore", "pipe"] });
    child = proc;
    proc.stderr?.on("data", (c: Buffer) => (err += c.toString()));
    const exited = new Promise<never>((_, reject) =>
      proc.once("exit", (code, sig) =>
        reject(new VmstackError("GUEST_AGENT_EXITED", `agent exited (${code ?? sig}) before connecting: ${err.trim()}`)),
      ),
    );
    exited.catch(() => undefined); // only raced below; a later exit is reported by stop()
    const socket = await Promise.race([connected, exited]);
    const client = await AgentClient.connect(socket, {
      timeoutMs,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const exit = new Promise<number | null>((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve(proc.exitCode);
      else proc.once("exit", (code) => resolve(code));
    });
    return {
      client,
      process: proc,
      stderr: () => err,
      async stop() {
        client.close();
        const code = await exit;
        await rm(dir, { recursive: true, force: true });
        return code;
      },
    };
  } catch (e) {
    child?.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
    throw e;
  } finally {
    server.close();
  }
}
