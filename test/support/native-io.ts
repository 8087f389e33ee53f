/** For tests of xenstored's native code (native/: socket I/O, the journal's mapping and records): the addon, mapped directories, and Unix socket pairs below Node.js's streams. */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nativeIoUnavailable, xsio, type XsioAddon, type XsioReader } from "../../src/xenstore/native.js";
import { journalMaps } from "../../src/xenstore/persist.js";

/** The build makes the addon (npm run build: make -C native); without it the daemon is slower. */
export function builtAddon(): XsioAddon {
  assert.equal(nativeIoUnavailable, "", "native/xsio.c is built into dist/native/xsio.node");
  assert.ok(xsio !== undefined);
  return xsio;
}

/** A temporary directory where the journal is mapped (ext4, XFS, tmpfs), removed after the test. */
export function mappedDir(t: { after(fn: () => void): void }): string {
  assert.equal(nativeIoUnavailable, "", "the build makes the addon");
  for (const base of [tmpdir(), "/dev/shm"]) {
    if (!existsSync(base)) continue;
    const dir = mkdtempSync(join(base, "vmstack-xs-persist-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    if (journalMaps(dir)) return dir;
  }
  assert.fail(`neither ${tmpdir()} nor /dev/shm is on a filesystem where the journal is mapped (ext4, XFS, tmpfs)`);
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

/**
 * A stand-in for the addon: the calls in `over`, and readers that read nothing (the test says what
 * a reader saw through `said`, by descriptor); everything else refuses.
 */
export function fakeAddon(over: Pick<XsioAddon, "waitRecv" | "sendNow" | "besidePeer"> & Partial<XsioAddon>): XsioAddon & { said: Map<number, (n: number) => void>; paused: Set<number> } {
  const said = new Map<number, (n: number) => void>();
  const paused = new Set<number>();
  const fdOfReader = (r: XsioReader): number => r as unknown as number;
  return {
    reserve: () => -95,
    mapShared: () => {
      throw new Error("not here");
    },
    lockExclusive: () => -95,
    encodeShort: () => -1,
    readStart: (fd, _buf, onRead) => {
      said.set(fd, onRead);
      return fd as unknown as XsioReader;
    },
    readPause: (r) => void paused.add(fdOfReader(r)),
    readResume: (r) => (paused.delete(fdOfReader(r)), 0),
    readClose: (r) => void said.delete(fdOfReader(r)),
    ...over,
    said,
    paused,
  };
}
