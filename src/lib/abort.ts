/** Deadlines as AbortSignals (house rule 7): one place that combines a caller's signal with a timeout. */
export function withTimeout(signal: AbortSignal | undefined, timeoutMs: number): AbortSignal {
  const timeout = AbortSignal.timeout(timeoutMs);
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

/**
 * A deadline whose timer keeps the process alive (AbortSignal.timeout's does not, so a wait on it
 * alone can end the event loop early). Call `clear()` when done.
 */
export function deadline(timeoutMs: number, parent?: AbortSignal): { signal: AbortSignal; expired: () => boolean; clear: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`deadline of ${timeoutMs} ms passed`)), timeoutMs);
  const signal = parent ? AbortSignal.any([parent, controller.signal]) : controller.signal;
  return { signal, expired: () => controller.signal.aborted, clear: () => clearTimeout(timer) };
}

/**
 * The promise's value, or undefined if it has not settled within `ms`. The timer is cleared either
 * way, so it never keeps the process alive after the answer is known.
 */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(resolve, ms, undefined)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
