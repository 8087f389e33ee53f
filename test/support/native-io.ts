/** For tests of xenstored's native socket I/O (native/, src/xenstore/socket-io.ts): the addon, and Unix socket pairs below Node.js's streams. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nativeIoUnavailable, xsio, type XsioAddon } from "../../src/xenstore/native.js";

/** The build makes the addon (npm run build: make -C native); without it the daemon is slower. */
export function builtAddon(): XsioAddon {
  assert.equal(nativeIoUnavailable, "", "native/xsio.c is built into dist/native/xsio.node");
  assert.ok(xsio !== undefined);
  return xsio;
}

/** A temporary directory, removed after the test. */
export function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-xsio-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface SocketPair {
  readonly client: net.Socket;
  /** The accepted side: its stream never reads (pauseOnConnect), as the daemon's sockets. */
  readonly accepted: net.Socket;
  /** The accepted side's descriptor. */
  readonly fd: number;
  close(): void;
}

/** A connected pair: the accepted side is never read by the event loop (pauseOnConnect). */
export async function socketPair(dir: string, name: string): Promise<SocketPair> {
  const path = join(dir, name);
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const acceptedP = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
  const client = net.connect(path);
  await new Promise<void>((resolve) => client.once("connect", resolve));
  const accepted = await acceptedP;
  const fd = (accepted as unknown as { _handle: { fd: number } })._handle.fd;
  return {
    client,
    accepted,
    fd,
    close: () => {
      client.destroy();
      accepted.destroy();
      server.close();
    },
  };
}

