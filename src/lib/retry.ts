/**
 * The one polling helper (house rule 7): every wait that polls goes through here, with backoff,
 * a deadline and an AbortSignal.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { VmstackError } from "./errors.js";

export interface RetryOptions {
  /** What is being waited for, for the timeout message. */
  readonly what: string;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** First delay between attempts; doubles up to maxDelayMs. */
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
}

/**
 * Calls `attempt` until it returns a value other than undefined, backing off between calls.
 * Throws VmstackError("TIMEOUT") with `what` when the deadline passes, or the signal's reason
 * when aborted.
 */
export async function retryUntil<T>(
  attempt: () => Promise<T | undefined> | T | undefined,
  options: RetryOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let delay = options.initialDelayMs ?? 10;
  const maxDelay = options.maxDelayMs ?? 500;
  for (;;) {
    options.signal?.throwIfAborted();
    const result = await attempt();
    if (result !== undefined) return result;
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new VmstackError("TIMEOUT", `timed out after ${options.timeoutMs} ms waiting for ${options.what}`, {
        facts: { what: options.what, timeoutMs: options.timeoutMs },
      });
    }
    await sleep(Math.min(delay, left), undefined, options.signal ? { signal: options.signal } : undefined);
    delay = Math.min(delay * 2, maxDelay);
  }
}
