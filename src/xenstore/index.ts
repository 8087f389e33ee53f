/**
 * The public surface of vmstack's xenstore (DESIGN.md: other folders import only this file).
 *
 * Wire (pure): `XS_OPS`, `XS_ERRORS`, `XENSTORE_PAYLOAD_MAX` and other limits (protocol.ts);
 *   `encodeMessage`, `FrameDecoder`, `nulTerminated`, `splitNul`, `strictArgs` (wire.ts).
 *
 * Daemon:
 *   const d = createXenstored({ stateDir?, durability?, quotas?, eventQueueBytes?, writeRate?, onFatal? }); // no stateDir = in memory
 *   const dom0 = d.openConnection({ domid: 0 });   // Duplex speaking the wire protocol, privileged
 *   const guest = d.openConnection({ domid: 5 });  // unprivileged; domain 5 is introduced if needed
 *   const srv = await listenUnix(d, "/run/vmstack/xenstored/socket");   // every socket client is dom0
 *   ...
 *   const closing = srv.close(); d.close(); await closing;   // d.close() flushes the journal and drops
 *                                                  // every connection (srv.close() waits for them)
 *   d.release(5)                                   // = XS_RELEASE: closes its connections, removes its nodes/ACLs
 *   d.loadReport                                   // what loading the state dir found/dropped
 *   d.compact()                                    // snapshot now, blocking (normally automatic by
 *                                                  // journal size, in the background)
 *   d.compactInBackground()                        // as CONTROL compact
 *   RawConnection                                  // frame-level peer over any Duplex, for tests/fuzzers
 *
 * Paths, permissions and quotas: `canonicalize`, `parsePerms`/`formatPerms`, `DEFAULT_QUOTAS`.
 */
export * from "./protocol.js";
export * from "./wire.js";
export { XsError } from "./errors.js";
export { DURABILITIES, SYNC_INTERVAL_MS, Xenstored, createXenstored, type Durability, type XenstoredOptions } from "./daemon.js";
export { DEFAULT_BUSY_POLL_US, MAX_BUSY_POLL_US, listenUnix, type SocketServer } from "./server.js";
export { nativeIoUnavailable } from "./native.js";
export { duplexPair } from "./duplex-pair.js";
export { canonicalize, homeOf, isValidNodePath } from "./path.js";
export { parsePerms, formatPerms, type Perms, type PermEntry } from "./permissions.js";
export { DEFAULT_QUOTAS, QUOTA_NAMES, parseQuotaOverrides, type Quotas, type QuotaName } from "./quota.js";
export { defaultSocketPath, defaultStateDir } from "./paths-default.js";
export { RawConnection, type RawReply as RawFrameReply } from "./raw-connection.js";
export { warmUp } from "./warmup.js";
