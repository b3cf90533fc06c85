// How long to wait before the next try: the server's Retry-After when it sent one (it
// knows best, e.g. how long the first request's lease has left), otherwise exponential
// backoff as urllib3 computes it.

/**
 * Parses `Retry-After` (RFC 9110: delay in seconds, or an HTTP date) into milliseconds.
 * Returns `undefined` when absent or unreadable; dates in the past give 0.
 */
export function parseRetryAfter(
  value: string | null | undefined,
  now = Date.now(),
): number | undefined {
  if (value == null) return undefined;
  const text = value.trim();
  if (text === '') return undefined;
  // Fractions are not in the RFC but cost nothing to accept.
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  // An HTTP date always names its month; without letters, Date.parse would accept "-1".
  const date = /[a-z]/i.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** The wait before retry number `retry` (1-based), capped at `maxDelayMs`. */
export function retryDelay(
  retry: number,
  retryAfterMs: number | undefined,
  options: { backoffFactorMs: number; maxDelayMs: number },
): number {
  const delay = retryAfterMs ?? options.backoffFactorMs * 2 ** (retry - 1);
  return Math.min(Math.max(0, delay), options.maxDelayMs);
}

/** Resolves after `ms`, or rejects as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
