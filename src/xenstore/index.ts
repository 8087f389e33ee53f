/**
 * The public surface of vmstack's xenstore (DESIGN.md: other folders import only this file).
 *
 * - Wire: `XS_OPS`, `XS_ERRORS`, limits (protocol.ts); `encodeMessage`, `FrameDecoder`, payload
 *   helpers (wire.ts). Pure.
 * - Daemon (coming in the next commits, names fixed now): `createXenstored(opts)` returns a
 *   `Xenstored` with
 *     `openConnection({ domid }): Duplex` — an in-process connection speaking the wire protocol,
 *        bound to a domid (0 = privileged dom0, like a socket connection; others unprivileged);
 *     `listen(socketPath): Promise<void>` — a Unix socket (mode 0600), each connection is dom0;
 *     `close(): Promise<void>` — stop listening, flush the journal, close every connection.
 */
export * from "./protocol.js";
export * from "./wire.js";
