/**
 * `vmstack xenstore …` run in-process (cli/main.ts) against vmstack's daemon on a Unix socket in
 * a temporary directory: output formats, --json, and Xen-tool exit codes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { main } from "../../src/cli/main.js";
import { startVmstackSocket } from "../conformance/xenstore-targets.js";
import { connectXenstore } from "../../src/xenstore/client.js";

const target = await startVmstackSocket();

async function cli(...args: (string | AbortSignal | ((out: string) => void))[]): Promise<{ code: number; out: string; err: string }> {
  const argv = args.filter((a): a is string => typeof a === "string");
  const onOut = args.find((a): a is (out: string) => void => typeof a === "function");
  const signal = args.find((a): a is AbortSignal => a instanceof AbortSignal) ?? new AbortController().signal;
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d: Buffer) => {
    out += d.toString();
    onOut?.(out);
  });
  stderr.on("data", (d: Buffer) => (err += d.toString()));
  const code = await main(["xenstore", ...argv, "--socket", target.socket], {
    stdout,
    stderr,
    stdin: new PassThrough(),
    signal,
  });
  return { code, out, err };
}

await test("write then read prints the values, one per line, or as JSON", async () => {
  assert.equal((await cli("write", "/c/a", "one", "/c/b", "two words")).code, 0);
  assert.deepEqual(await cli("read", "/c/a", "/c/b"), { code: 0, out: "one\ntwo words\n", err: "" });
  assert.equal((await cli("read", "--json", "/c/a")).out, '{"/c/a":"one"}\n');
});

await test("exists exits 0 for a node and 1 for a missing one", async () => {
  assert.equal((await cli("exists", "/c/a")).code, 0);
  assert.equal((await cli("exists", "/c/missing")).code, 1);
  assert.equal((await cli("exists", "--json", "/c/missing")).out, '{"path":"/c/missing","exists":false}\n');
});

await test("ls prints the tree below a path like xenstore-ls, with -f, -p and --json", async () => {
  await cli("write", "/t/x/y", 'q"uote', "/t/z", "bin\u0001");
  assert.equal((await cli("ls", "/t")).out, 'x = ""\n y = "q\\"uote"\nz = "bin\\x01"\n');
  assert.equal((await cli("ls", "-f", "/t")).out, '/t/x = ""\n/t/x/y = "q\\"uote"\n/t/z = "bin\\x01"\n');
  assert.match((await cli("ls", "-p", "/t")).out, /^x = "" {2}\(n0\)$/m);
  assert.deepEqual(JSON.parse((await cli("ls", "--json", "/t/x")).out), [{ path: "/t/x/y", value: 'q"uote' }]);
});

await test("chmod sets permissions, recursively with -r", async () => {
  await cli("write", "/p/a/b", "");
  assert.equal((await cli("chmod", "-r", "/p", "n0", "r5")).code, 0);
  const client = await connectXenstore({ socket: target.socket, reconnect: false });
  assert.deepEqual(await client.getPerms("/p/a/b"), [
    { access: "n", domid: 0 },
    { access: "r", domid: 5 },
  ]);
  await client.close();
  const bad = await cli("chmod", "/p", "x5");
  assert.equal(bad.code, 2);
  assert.match(bad.err, /bad xenstore permission 'x5'/);
});

await test("rm removes subtrees and reading a removed node exits 1 naming ENOENT", async () => {
  assert.equal((await cli("rm", "/c", "/t")).code, 0);
  const r = await cli("read", "/c/a");
  assert.equal(r.code, 1);
  assert.match(r.err, /ENOENT/);
});

await test("watch -n prints the initial event and the changes, then exits 0", async () => {
  const client = await connectXenstore({ socket: target.socket, reconnect: false });
  let firstLine: () => void = () => undefined;
  const registered = new Promise<void>((resolve) => (firstLine = resolve));
  const running = cli("watch", "-n", "3", "/w", (out) => {
    if (out.includes("\n")) firstLine();
  });
  await registered; // the initial event came: the watch is in place
  await client.write("/w/k", "1");
  await client.rm("/w/k");
  const r = await running;
  assert.equal(r.code, 0);
  assert.equal(r.out, "/w\n/w/k\n/w/k\n");
  await client.close();
});

await test("an interrupted watch (Ctrl-C) stops cleanly with exit 0", async () => {
  const ac = new AbortController();
  const r = await cli("watch", "/interrupted", ac.signal, (out) => {
    if (out.includes("\n")) ac.abort(new Error("interrupted by SIGINT"));
  });
  assert.deepEqual(r, { code: 0, out: "/interrupted\n", err: "" });
});

await test("a usage error exits 2 and --help lists the subcommands", async () => {
  assert.equal((await cli("frobnicate")).code, 2);
  assert.equal((await cli("write", "/only-path")).code, 2);
  const help = await cli("--help");
  assert.equal(help.code, 0);
  for (const sub of ["read", "write", "ls", "rm", "watch", "chmod", "exists"]) assert.match(help.out, new RegExp(`^  ${sub} `, "m"));
});

await target.stop();
