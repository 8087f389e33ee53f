/**
 * The one error family of vmstack (DESIGN.md house rule 4).
 *
 * Every failure vmstack raises on purpose is a VmstackError with a stable `code` (for scripts and
 * for the boundary translators), a message that names its subject, and the facts as fields.
 * Each boundary translates these exactly once: xenstore dispatch → errno string, API server →
 * error response, CLI → one-line message + exit code.
 */
export type Facts = Readonly<Record<string, unknown>>;

export class VmstackError extends Error {
  readonly code: string;
  readonly facts: Facts;

  constructor(code: string, message: string, options: { cause?: unknown; facts?: Facts } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "VmstackError";
    this.code = code;
    this.facts = options.facts ?? {};
  }
}

export function isVmstackError(e: unknown, code?: string): e is VmstackError {
  return e instanceof VmstackError && (code === undefined || e.code === code);
}

/** Exhaustiveness check for switches over ops and states (house rule 6). */
export function assertNever(value: never, what = "value"): never {
  throw new Error(`unexpected ${what}: ${JSON.stringify(value)}`);
}

/** The message of anything thrown, for logs and wrapping. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
