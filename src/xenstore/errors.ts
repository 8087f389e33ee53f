/**
 * xenstore's errors: a VmstackError whose code is `XS_<ERRNO>` with the errno name as a fact.
 * Only dispatch.ts turns these into XS_ERROR payloads (house rule 4).
 */
import { VmstackError } from "../lib/errors.js";
import type { XsErrorName } from "./protocol.js";

export class XsError extends VmstackError {
  readonly errno: XsErrorName;

  constructor(errno: XsErrorName, message: string, facts: Record<string, unknown> = {}) {
    super(`XS_${errno}`, message, { facts: { errno, ...facts } });
    this.name = "XsError";
    this.errno = errno;
  }
}

/**
 * The daemon's way to raise an errno. These are answers, not bugs: dispatch turns them into an
 * XS_ERROR reply (and the few raised to vmstackd's own calls carry their subject in the message),
 * so no stack is captured. Capturing one cost
 * ≈ 25 µs per error (V8 walks the frames), which made a READ of a missing node — the commonest
 * error, `xenstore-exists` and every toolstack probe — 2–3× as slow as a successful one.
 */
export function xsError(errno: XsErrorName, message: string, facts: Record<string, unknown> = {}): XsError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new XsError(errno, message, facts);
  } finally {
    Error.stackTraceLimit = limit;
  }
}
