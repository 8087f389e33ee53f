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

export function xsError(errno: XsErrorName, message: string, facts: Record<string, unknown> = {}): XsError {
  return new XsError(errno, message, facts);
}
