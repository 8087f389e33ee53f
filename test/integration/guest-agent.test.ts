/**
 * The real agent binary, run on this host over a Unix socket, driven by AgentClient: everything a
 * guest command can do, without booting a VM.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { isVmstackError } from "../../src/lib/errors.js";
import { retryUntil } from "../../src/lib/retry.js";
import { guestArtifacts } from "../../src/guest/artifacts.js";
import { startHostAgent, type HostAgent } from "../../src/guest/host-agent.js";

const missing = existsSync(guestArtifacts().agent) ? undefined : "agent binary not built (npm run build runs make -C guest)";

describe("guest agent over a Unix socket", () => {
  let agent: HostAgent | undefined;
  let dir = "";
  const client = () => {
    assert.ok(agent);
    return agent.client;
  };

  before(async () => {
    if (missing) return;
    agent = await startHostAgent();
    dir = await mkdtemp(join(tmpdir(), "vmstack-guest-test-"));
  });
  after(async () => {
    if (agent) assert.equal(await agent.stop(), 0);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("the handshake reports the agent's version and kernel", (t) => {
    if (missing) return t.skip(missing);
    assert.equal(client().info.protocolVersion, 1);
    assert.match(client().info.kernel, /^Linux /);
  });

  test("stdout and stderr arrive separately, with the exit code", async (t) => {
    if (missing) return t.skip(missing);
    const r = await client().run({ argv: ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"] });
    assert.equal(r.stdout.toString(), "out\nmore\n");
    assert.equal(r.stderr.toString(), "err\n");
    assert.equal(r.exitCode, 3);
    assert.equal(r.signal, null);
    assert.equal(r.timedOut, false);
    assert.equal(r.outputHeldOpen, false);
    assert.ok(r.pid > 0);
  });

  test("a shell string runs through sh -c", async (t) => {
    if (missing) return t.skip(missing);
    const r = await client().run({ shell: "x=4; echo $((x * 2)) | tr 8 E" });
    assert.equal(r.stdout.toString(), "E\n");
    assert.equal(r.exitCode, 0);
  });

  test("a command killed by a signal reports the signal and no exit code", async (t) => {
    if (missing) return t.skip(missing);
    const r = await client().run({ shell: "kill -TERM $$" });
    assert.equal(r.exitCode, null);
    assert.equal(r.signal, "SIGTERM");
  });

  test("kill() signals the command's process group", async (t) => {
    if (missing) return t.skip(missing);
    const marker = join(dir, "kill-survivor");
    const h = client().exec({ shell: `(sleep 1; touch ${marker}) & sleep 30` });
    await h.pid;
    h.kill("SIGTERM");
    const r = await h.result;
    assert.equal(r.signal, "SIGTERM");
    assert.equal(r.outputHeldOpen, false); // the background subshell got the signal too
    const probe = await client().run({ shell: `sleep 1.5; test -e ${marker}` });
    assert.equal(probe.exitCode, 1);
  });

  test("aborting an exec kills it", async (t) => {
    if (missing) return t.skip(missing);
    const ac = new AbortController();
    const h = client().exec({ argv: ["sleep", "30"], signal: ac.signal });
    await h.pid;
    ac.abort();
    assert.equal((await h.result).signal, "SIGKILL");
  });

  test("stdin streams in pieces and EOF ends it", async (t) => {
    if (missing) return t.skip(missing);
    const h = client().exec({ argv: ["tr", "a-z", "A-Z"], stdin: "pipe" });
    const out: Buffer[] = [];
    h.stdout.on("data", (c: Buffer) => out.push(c));
    await h.writeStdin("hello ");
    await h.writeStdin(Buffer.from("world\n"));
    await h.closeStdin();
    const r = await h.result;
    assert.equal(r.exitCode, 0);
    assert.equal(Buffer.concat(out).toString(), "HELLO WORLD\n");
  });

  test("writing stdin after the command has ended is refused, closing is harmless", async (t) => {
    if (missing) return t.skip(missing);
    const h = client().exec({ argv: ["true"], stdin: "pipe" });
    await h.result;
    await assert.rejects(h.writeStdin("late"), (e: unknown) => isVmstackError(e, "GUEST_STDIN_CLOSED"));
    await h.closeStdin();
  });

  test("megabytes of stdin pass through a slow reader under flow control", async (t) => {
    if (missing) return t.skip(missing);
    const size = 3 * 1024 * 1024 + 17;
    const r = await client().run({ shell: "sleep 0.2; wc -c", stdin: Buffer.alloc(size, 0x61) });
    assert.equal(r.stdout.toString().trim(), String(size));
  });

  test("a command that closes stdin early does not stall the writer", async (t) => {
    if (missing) return t.skip(missing);
    const r = await client().run({ shell: "head -c 3", stdin: Buffer.alloc(2 * 1024 * 1024, 0x62) });
    assert.equal(r.stdout.toString(), "bbb");
    assert.equal(r.exitCode, 0);
  });

  test("without stdin the command reads /dev/null", async (t) => {
    if (missing) return t.skip(missing);
    const r = await client().run({ argv: ["cat"] });
    assert.equal(r.stdout.length, 0);
    assert.equal(r.exitCode, 0);
  });

  test("env is merged over the agent's environment, or replaces it with clearEnv", async (t) => {
    if (missing) return t.skip(missing);
    const merged = await client().run({ shell: 'echo "$GREETING:${PATH:+path}"', env: { GREETING: "hi there" } });
    assert.equal(merged.stdout.toString(), "hi there:path\n");
    const clear = await client().run({ argv: ["/usr/bin/env"], env: { ONLY: "1" }, clearEnv: true });
    assert.equal(clear.stdout.toString(), "ONLY=1\n");
  });

  test("cwd sets the working directory", async (t) => {
    if (missing) return t.skip(missing);
    const r = await client().run({ argv: ["pwd"], cwd: dir });
    assert.equal(r.stdout.toString(), `${dir}\n`);
  });

  test("a missing program or directory is a clear exec error, not an exit code", async (t) => {
    if (missing) return t.skip(missing);
    await assert.rejects(client().run({ argv: ["no-such-program-vmstack"] }), (e: unknown) => {
      return isVmstackError(e, "GUEST_EXEC_FAILED") && /exec no-such-program-vmstack: No such file/.test(e.message);
    });
    await assert.rejects(client().run({ argv: ["true"], cwd: "/no/such/dir" }), (e: unknown) => {
      return isVmstackError(e, "GUEST_EXEC_FAILED") && /chdir \/no\/such\/dir/.test(e.message);
    });
  });

  test("the guest-side timeout kills the whole process group and says so", { timeout: 20_000 }, async (t) => {
    if (missing) return t.skip(missing);
    const marker = join(dir, "timeout-survivor");
    const r = await client().run({ shell: `(sleep 1; touch ${marker}) & sleep 30`, timeoutMs: 200 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, "SIGKILL");
    assert.equal(r.outputHeldOpen, false); // the background sleep died with the group
    // The background subshell would have created the marker after 1 s had it survived.
    const probe = await client().run({ shell: `sleep 1.5; test -e ${marker}` });
    assert.equal(probe.exitCode, 1);
  });

  test("a background process holding stdout open does not hang the command", { timeout: 20_000 }, async (t) => {
    if (missing) return t.skip(missing);
    const r = await client().run({ shell: "sleep 60 & echo hi", outputGraceMs: 100 });
    assert.equal(r.exitCode, 0);
    assert.equal(r.outputHeldOpen, true);
    assert.equal(r.stdout.toString(), "hi\n");
    // The result came after the grace period, not after the background sleep.
    assert.ok(r.durationMs < 60_000);
  });

  test("output written before the exit is all delivered", async (t) => {
    if (missing) return t.skip(missing);
    const r = await client().run({ shell: "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo e >&2" });
    assert.equal(r.stdout.length, 5_000_001);
    assert.equal(r.stderr.toString(), "e\n");
    assert.equal(r.outputHeldOpen, false);
  });

  test("concurrent commands keep their own output and finish independently", async (t) => {
    if (missing) return t.skip(missing);
    const delays = [0.4, 0.1, 0.3, 0, 0.2];
    const finished: number[] = [];
    const runs = delays.map((d, i) =>
      client()
        .run({ shell: `for n in 1 2 3; do echo ${i}-$n; sleep ${d / 3}; done; echo e${i} >&2; exit ${i}` })
        .then((r) => {
          finished.push(i);
          return r;
        }),
    );
    const results = await Promise.all(runs);
    results.forEach((r, i) => {
      assert.equal(r.stdout.toString(), `${i}-1\n${i}-2\n${i}-3\n`);
      assert.equal(r.stderr.toString(), `e${i}\n`);
      assert.equal(r.exitCode, i);
    });
    assert.equal(finished[0], 3); // the one without sleeps
    assert.equal(finished[finished.length - 1], 0); // the longest
  });

  test("a file written to the guest reads back with its bytes and mode", async (t) => {
    if (missing) return t.skip(missing);
    const path = join(dir, "a/b/c.bin");
    const data = Buffer.from(Array.from({ length: 3 * 65536 + 123 }, (_, i) => (i * 7) & 0xff));
    await client().writeFile(path, data, { mode: 0o750, mkdirs: true });
    assert.equal((await stat(path)).mode & 0o7777, 0o750);
    const back = await client().readFile(path);
    assert.equal(back.mode, 0o750);
    assert.ok(back.data.equals(data));
    await client().writeFile(path, "replaced");
    assert.equal((await client().readFile(path)).data.toString(), "replaced");
    assert.deepEqual(await readdir(join(dir, "a/b")), ["c.bin"]); // no temporary files left
  });

  test("an empty file transfers both ways", async (t) => {
    if (missing) return t.skip(missing);
    const path = join(dir, "empty");
    await client().writeFile(path, "");
    assert.equal((await client().readFile(path)).data.length, 0);
  });

  test("a /proc file that reports size 0 still reads its content", async (t) => {
    if (missing) return t.skip(missing);
    const { data } = await client().readFile(`/proc/${agent?.process.pid}/status`);
    assert.match(data.toString(), /^Name:\s+vmstack-agent/m);
  });

  test("file errors name the path and leave nothing behind", async (t) => {
    if (missing) return t.skip(missing);
    await assert.rejects(client().readFile(join(dir, "nope")), (e: unknown) => {
      return isVmstackError(e, "GUEST_REQUEST_FAILED") && /nope: No such file/.test(e.message) && e.facts["guestCode"] === 2;
    });
    await assert.rejects(client().readFile(dir), (e: unknown) => isVmstackError(e, "GUEST_REQUEST_FAILED") && /Is a directory/.test(e.message));
    const sub = join(dir, "missing-parent/x");
    await assert.rejects(client().writeFile(sub, "x"), (e: unknown) => isVmstackError(e, "GUEST_REQUEST_FAILED"));
    await writeFile(join(dir, "plain"), "p");
    await assert.rejects(client().writeFile(join(dir, "plain/x"), "x", { mkdirs: true }), (e: unknown) =>
      isVmstackError(e, "GUEST_REQUEST_FAILED"),
    );
    assert.equal((await readdir(dir)).some((n) => n.includes("vmstack-tmp")), false);
  });

  test("an aborted file request rejects with ABORTED and the channel stays usable", async (t) => {
    if (missing) return t.skip(missing);
    const path = join(dir, "abort-me");
    await client().writeFile(path, Buffer.alloc(4 << 20, 1));
    const ac = new AbortController();
    const reading = client().readFile(path, { signal: ac.signal });
    ac.abort();
    await assert.rejects(reading, (e: unknown) => isVmstackError(e, "ABORTED"));
    // The rest of that transfer arrives for an id nobody waits on, and is ignored.
    assert.equal((await client().run({ argv: ["echo", "ok"] })).stdout.toString(), "ok\n");
  });

  test("ping answers", async (t) => {
    if (missing) return t.skip(missing);
    assert.ok((await client().ping()) >= 0);
  });
});

describe("guest agent lifetime", () => {
  test("closing the channel makes the agent kill its commands and exit", { timeout: 20_000 }, async (t) => {
    if (missing) return t.skip(missing);
    const agent = await startHostAgent();
    const h = agent.client.exec({ argv: ["sleep", "30"] });
    const pid = await h.pid;
    const gone = assert.rejects(h.result, (e: unknown) => isVmstackError(e, "GUEST_GONE"));
    assert.equal(await agent.stop(), 0);
    await gone;
    // Killed means gone, or a zombie waiting for whoever reaps orphans on this host.
    await retryUntil(
      async () => {
        const st = await readFile(`/proc/${pid}/stat`, "utf8").catch((e: unknown) => {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return "gone";
          throw e;
        });
        return st === "gone" || / Z /.test(st) ? true : undefined;
      },
      { what: `guest command ${pid} to be killed`, timeoutMs: 10_000 },
    );
  });

  test("poweroff without --power acknowledges and exits the agent", async (t) => {
    if (missing) return t.skip(missing);
    const agent = await startHostAgent();
    const exited = new Promise<number | null>((r) => agent.process.once("exit", (code) => r(code)));
    await agent.client.poweroff();
    assert.equal(await exited, 0);
    assert.match(agent.stderr(), /poweroff requested/);
    await agent.stop();
  });
});
