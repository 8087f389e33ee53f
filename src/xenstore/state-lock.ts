/**
 * One daemon per state directory. Two daemons on one directory would each append their own
 * records to journals the other also writes, and each compaction would delete files the other
 * still uses: a store that replays as neither daemon's tree. The socket check (server.ts) stops a
 * second daemon on the same socket, not one given another socket and the same directory, so the
 * directory itself is locked: `DIR/lock`, flock(2) through the native addon.
 *
 * flock rather than a pid file: the kernel drops the lock when its holder ends, however it ends,
 * so a kill -9 leaves nothing for the next start to judge (a pid file would have to guess whether
 * its pid is still the daemon that wrote it). The file holds the holder's pid, for the error.
 *
 * Within one process the lock is shared: opening a directory again before the first instance is
 * closed is what a killed daemon's successor does, and the tests do exactly that to stand for a
 * kill -9. The lock file stays when the lock is released (removing it would race with a daemon
 * about to lock it). Without the addon the directory goes unlocked, with a warning.
 */
import * as fs from "node:fs";
import { constants } from "node:os";
import * as path from "node:path";
import { getSystemErrorName } from "node:util";
import { VmstackError, messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";
import { nativeIoUnavailable, xsio, type XsioAddon } from "./native.js";

export const LOCK_FILE = "lock";

const EWOULDBLOCK = -constants.errno.EWOULDBLOCK;

/** This process's locks: directory (real path) → the lock file's descriptor and its holders. */
const held = new Map<string, { fd: number; holders: number }>();

export interface StateLock {
  /** Give the lock up (once; later calls do nothing). */
  release(): void;
}

/**
 * Lock `dir` (created if missing) for this process. Throws XENSTORED_STATE_DIR_IN_USE, naming the
 * holder's pid, when another process holds it. `addon`: tests' stand-in (undefined: none).
 */
export function lockStateDir(dir: string, opts: { addon?: XsioAddon | undefined } = {}): StateLock {
  const addon = "addon" in opts ? opts.addon : xsio;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = fs.realpathSync(dir);
  const mine = held.get(key);
  if (mine !== undefined) {
    mine.holders++;
    return releaser(key);
  }
  if (addon === undefined) {
    log("warn", "xenstored", `the state directory ${dir} is not locked against a second daemon: ${nativeIoUnavailable || "no native addon"}`);
    return { release: () => undefined };
  }
  const file = path.join(dir, LOCK_FILE);
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  let r: number;
  try {
    r = addon.lockExclusive(fd);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  if (r === EWOULDBLOCK) {
    let pid = "";
    try {
      pid = fs.readFileSync(fd, "utf8").trim();
    } catch (e) {
      pid = `unknown: ${messageOf(e)}`;
    } finally {
      fs.closeSync(fd);
    }
    const holder = /^\d+$/.test(pid) ? ` (pid ${pid})` : "";
    throw new VmstackError("XENSTORED_STATE_DIR_IN_USE", `another xenstored${holder} is using the state directory ${dir}`, { facts: { path: dir, pid } });
  }
  if (r < 0) {
    // A filesystem without flock(2) (some network and FUSE filesystems): run, but say so.
    fs.closeSync(fd);
    log("warn", "xenstored", `cannot lock the state directory ${dir} (flock: ${getSystemErrorName(r)}); nothing stops a second daemon on it`);
    return { release: () => undefined };
  }
  held.set(key, { fd, holders: 1 });
  // The pid is for the error a second daemon prints; the lock holds without it (a full disk).
  try {
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, `${process.pid}\n`, 0);
  } catch (e) {
    log("warn", "xenstored", `cannot write this daemon's pid into ${file}: ${messageOf(e)}`);
  }
  return releaser(key);
}

function releaser(key: string): StateLock {
  let done = false;
  return {
    release: () => {
      if (done) return;
      done = true;
      const h = held.get(key);
      if (h === undefined || --h.holders > 0) return;
      held.delete(key);
      fs.closeSync(h.fd);
    },
  };
}
