import { mock, test } from "node:test";
import { syncBuiltinESMExports } from "node:module";
import fsDefault from "node:fs";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { createXenstored, nativeIoUnavailable, RawConnection, SYNC_INTERVAL_MS } from "../../src/xenstore/index.js";
import { LOCK_FILE, lockStateDir } from "../../src/xenstore/state-lock.js";
import { openUnder } from "../support/open-files.js";

const STATE_LOCK = fileURLToPath(new URL("../../src/xenstore/state-lock.js", import.meta.url));

/** Another process tries to lock `dir`: "locked", or the error's code and message. */
function otherProcessLocks(dir: string): string {
  const script = `
const { lockStateDir } = await import(process.argv[1]);
try { lockStateDir(process.argv[2]); console.log("locked"); } catch (e) { console.log(e.code + ": " + e.message); }
`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script, STATE_LOCK, dir], { encoding: "utf8", timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

/** The descriptors this process has open on files under `dir`. */
function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vmstack-xs-lock-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

void test("a state directory's lock: this process's holders share it, another process cannot take it until the last lets go, and the lock file names the holder", (t) => {
  assert.equal(nativeIoUnavailable, "", "the addon is built (npm run build)");
  const dir = tempDir(t);
  const a = lockStateDir(dir);
  const b = lockStateDir(dir);
  assert.equal(fs.readFileSync(path.join(dir, LOCK_FILE), "utf8"), `${process.pid}\n`);
  assert.equal(otherProcessLocks(dir), `XENSTORED_STATE_DIR_IN_USE: another xenstored (pid ${process.pid}) is using the state directory ${dir}`);
  a.release();
  a.release(); // once only: b still holds it
  assert.match(otherProcessLocks(dir), /^XENSTORED_STATE_DIR_IN_USE/);
  b.release();
  assert.equal(otherProcessLocks(dir), "locked");
  assert.ok(fs.existsSync(path.join(dir, LOCK_FILE)), "the file stays (removing it would race with the next holder)");
});

void test("a daemon on a state directory holds its lock until it is closed", (t) => {
  const dir = tempDir(t);
  const d = createXenstored({ stateDir: dir });
  assert.match(otherProcessLocks(dir), /^XENSTORED_STATE_DIR_IN_USE: another xenstored \(pid \d+\)/);
  d.close();
  assert.equal(otherProcessLocks(dir), "locked");
});

void test("a daemon whose state cannot be loaded lets the lock go", (t) => {
  const dir = tempDir(t);
  // A directory where the newest snapshot should be: loading it fails.
  fs.mkdirSync(path.join(dir, "snapshot-1"));
  assert.throws(() => createXenstored({ stateDir: dir }), /EISDIR/);
  assert.equal(otherProcessLocks(dir), "locked");
});

void test("a daemon that fails after loading (its first journal write) closes the journal and lets the lock go", (t) => {
  const dir = tempDir(t);
  // A fresh directory in fsync mode: the base node's record is fdatasync'd before the constructor returns.
  mock.method(fsDefault, "fdatasyncSync", () => {
    throw Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
  });
  syncBuiltinESMExports();
  try {
    assert.throws(() => createXenstored({ stateDir: dir, durability: "fsync" }), /EIO/);
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
  assert.deepEqual(openUnder(dir), [], "neither the journal nor the lock file is open");
  assert.equal(otherProcessLocks(dir), "locked");
});

void test("without the addon the directory goes unlocked, with a warning that says so, and nothing fails", (t) => {
  const dir = tempDir(t);
  const said: string[] = [];
  mock.method(process.stderr, "write", (chunk: string | Uint8Array) => said.push(String(chunk)) > 0);
  let l;
  try {
    l = lockStateDir(dir, { addon: undefined });
  } finally {
    mock.restoreAll();
  }
  assert.match(said.join(""), new RegExp(`the state directory ${dir} is not locked against a second daemon`));
  assert.equal(otherProcessLocks(dir), "locked");
  l.release();
});

void test("a daemon whose journal fails closes the journal and lets the lock go: nothing more is written, a successor may start", async (t) => {
  const dir = tempDir(t);
  let fatal: unknown;
  const d = createXenstored({ stateDir: dir, onFatal: (e) => (fatal = e) });
  t.after(() => d.close());
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  assert.deepEqual(openUnder(dir).sort(), ["journal-1", LOCK_FILE].sort());
  // The periodic one runs on the thread pool.
  mock.method(fsDefault, "fdatasync", (_fd: number, cb: (e: Error | null) => void) => {
    setImmediate(() => cb(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" })));
  });
  syncBuiltinESMExports();
  try {
    await c.request("WRITE", "/k|v");
    // The periodic fdatasync fails.
    for (let waited = 0; fatal === undefined && waited < SYNC_INTERVAL_MS * 5; waited += 50) await new Promise((r) => setTimeout(r, 50));
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
  assert.match(String(fatal), /EIO/);
  assert.deepEqual(openUnder(dir), [], "neither the journal nor the lock file is open any more");
  assert.equal(otherProcessLocks(dir), "locked");
});
