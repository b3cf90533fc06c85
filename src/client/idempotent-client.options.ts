// Options of the retrying client. The defaults mirror the published Python example
// (urllib3 `Retry(total=3, status_forcelist=[423, 429, 502, 503, 504], backoff_factor=...)`).

/** Called before each retry, e.g. to log it. */
export type RetryListener = (event: RetryEvent) => void;

export interface RetryEvent {
  /** The try that just failed (1 for the first request). */
  attempt: number;
  /** Its status, or `undefined` when it failed on the network. */
  status: number | undefined;
  /** The network error, when there was no response. */
  error?: unknown;
  /** How long the client waits before the next try. */
  delayMs: number;
  /** The idempotency key, the same on every try. */
  key: string;
}

export interface IdempotentClientOptions {
  /**
   * Prefix for relative URLs passed to `post()`, path included: with
   * `'https://api.example.com/v1'`, `post('/bookings')` goes to `.../v1/bookings`.
   * Absolute URLs are used as they are.
   * @example new IdempotentClient({ baseUrl: 'https://api.example.com/v1' })
   */
  baseUrl?: string;
  /**
   * Header that carries the key. Must match the server's `headerName`.
   * @default 'x-idempotency-key'
   */
  headerName?: string;
  /**
   * How many times to retry after the first try (urllib3's `total`), so at most
   * `retries + 1` requests are sent.
   * @default 3
   */
  retries?: number;
  /**
   * Base of the exponential backoff, in milliseconds: the n-th retry waits
   * `backoffFactorMs * 2 ** (n - 1)` unless the response carried `Retry-After`.
   * urllib3's `backoff_factor=5` (seconds) is `backoffFactorMs: 5000`.
   * @default 500
   * @example new IdempotentClient({ backoffFactorMs: 5000 }) // the published Python example
   */
  backoffFactorMs?: number;
  /**
   * Upper bound of any wait between tries, whether from backoff or from `Retry-After`,
   * so a server cannot park the client for an hour.
   * @default 120_000 (urllib3's backoff maximum)
   */
  maxDelayMs?: number;
  /**
   * Statuses worth retrying with the same key. 423 means the first request with this key
   * is still running; the others are the usual transient failures.
   * @default [423, 429, 502, 503, 504]
   */
  retryStatuses?: readonly number[];
  /**
   * Time limit of one try, in milliseconds; a try that runs out is retried like a network
   * error (safe, because the key makes the server run the operation at most once).
   * `0` disables it.
   * @default 30_000
   */
  timeoutMs?: number;
  /**
   * What happens to a redirect (3xx). `'follow'` (fetch's default) lets fetch follow it with
   * the same key header: a 307/308 re-sends the POST, body and key to the `Location` (where an
   * idempotent route answers 422, the key being another request's), a 301/302/303 becomes a
   * GET, and a replayed redirect (`replayStatus: 'original'`) no longer reads as a replay; it
   * also follows a proxy's redirect of the request itself (http to https), which `'manual'`
   * would report as the answer. `'manual'` returns the 3xx as the operation's answer, with its
   * `Location`, for the caller to follow. In a browser fetch hides a manual redirect's status
   * and headers (an opaque response): the answer then has status 0.
   * @default 'follow'
   */
  redirect?: 'follow' | 'manual';
  /** Headers sent with every request (e.g. `Authorization`); never the key header. */
  headers?: Record<string, string>;
  /** Called before each retry. */
  onRetry?: RetryListener;
  /**
   * The fetch implementation.
   * @default globalThis.fetch
   */
  fetch?: typeof fetch;
}

/** Per-request options of `post()`. */
export interface IdempotentRequestOptions {
  /**
   * The idempotency key. Keep it for the whole operation, including retries you make
   * yourself later (after a crash, say). When omitted: the key header of `headers` (any
   * case), if there is one, else a new `crypto.randomUUID()`.
   */
  key?: string;
  /** Extra headers for this request. */
  headers?: Record<string, string>;
  /**
   * Cancels the request and any wait between tries: the client then throws
   * IdempotentRequestAbortedError, which carries the key (and the reason as `cause`).
   */
  signal?: AbortSignal;
}

export type ResolvedClientOptions = Required<
  Pick<
    IdempotentClientOptions,
    | 'headerName'
    | 'retries'
    | 'backoffFactorMs'
    | 'maxDelayMs'
    | 'retryStatuses'
    | 'timeoutMs'
    | 'redirect'
  >
> &
  IdempotentClientOptions;

export const CLIENT_DEFAULTS = {
  headerName: 'x-idempotency-key',
  retries: 3,
  backoffFactorMs: 500,
  maxDelayMs: 120_000,
  retryStatuses: [423, 429, 502, 503, 504],
  timeoutMs: 30_000,
  redirect: 'follow',
} as const satisfies Partial<IdempotentClientOptions>;
