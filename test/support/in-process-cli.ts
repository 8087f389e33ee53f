/** Running the CLI's main() in this process with captured output, for fast CLI tests. */
import { Readable, Writable } from "node:stream";
import { main } from "../../src/cli/main.js";

function capture(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({ write(c: Buffer, _e, cb) { chunks.push(c); cb(); } });
  return { stream, text: () => Buffer.concat(chunks).toString() };
}

export async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = capture();
  const err = capture();
  const code = await main(argv, { stdout: out.stream, stderr: err.stream, stdin: Readable.from([]), signal: new AbortController().signal });
  return { code, out: out.text(), err: err.text() };
}
