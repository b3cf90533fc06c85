// The one error the client throws for an HTTP outcome: either the server refused the
// request for good (a 4xx/5xx that retrying cannot fix) or the tries ran out.

export interface IdempotentRequestErrorDetails {
  /** Status of the last response; `undefined` when the last try failed on the network. */
  status: number | undefined;
  /** How many requests were sent. */
  attempts: number;
  /** The idempotency key used on every try: retry later with the same key. */
  key: string;
  /** True when the client gave up after its retries; false when the status is final. */
  exhausted: boolean;
  /** Body of the last response (problem+json from this module's server). */
  body?: string;
  /** The last network error, when there was no response. */
  cause?: unknown;
}

export class IdempotentRequestError extends Error {
  override readonly name = 'IdempotentRequestError';
  readonly status: number | undefined;
  readonly attempts: number;
  readonly key: string;
  readonly exhausted: boolean;
  readonly body: string | undefined;

  constructor(details: IdempotentRequestErrorDetails) {
    const outcome =
      details.status === undefined
        ? `no response (${describe(details.cause)})`
        : `status ${details.status}${problemCode(details.body)}`;
    super(
      details.exhausted
        ? `Gave up after ${details.attempts} tries with idempotency key "${details.key}": last try got ${outcome}. Retry later with the same key.`
        : `Request with idempotency key "${details.key}" failed with ${outcome} after ${details.attempts} ${details.attempts === 1 ? 'try' : 'tries'}; retrying will not help.`,
      { cause: details.cause },
    );
    this.status = details.status;
    this.attempts = details.attempts;
    this.key = details.key;
    this.exhausted = details.exhausted;
    this.body = details.body;
  }
}

function problemCode(body: string | undefined): string {
  if (!body) return '';
  try {
    const code = (JSON.parse(body) as { code?: unknown }).code;
    return typeof code === 'string' ? ` (${code})` : '';
  } catch {
    return '';
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return `${error.message}${cause}`;
  }
  return String(error);
}

export interface IdempotentRequestAbortedErrorDetails {
  /** The idempotency key of the operation: retry it later with this key. */
  key: string;
  /** How many tries were sent, the one the abort cut off included. */
  attempts: number;
  /** The signal's reason (`signal.reason`). */
  reason: unknown;
}

/**
 * The caller's `signal` aborted the operation (during a try or a wait between tries). Whether
 * the server ran it is unknown: retry later with `key` to stay idempotent. `cause` is the
 * signal's reason, and `name` is the reason's (`'AbortError'` for `controller.abort()`,
 * `'TimeoutError'` for `AbortSignal.timeout()`), so the usual `error.name` checks keep working.
 */
export class IdempotentRequestAbortedError extends Error {
  override name: string;
  readonly key: string;
  readonly attempts: number;

  constructor(details: IdempotentRequestAbortedErrorDetails) {
    super(
      `Aborted (${describe(details.reason)}) after ${details.attempts} ${details.attempts === 1 ? 'try' : 'tries'} with idempotency key "${details.key}"; the server may have run it: retry later with the same key.`,
      { cause: details.reason },
    );
    const reasonName =
      typeof details.reason === 'object' && details.reason !== null
        ? (details.reason as { name?: unknown }).name
        : undefined;
    this.name = typeof reasonName === 'string' && reasonName !== '' ? reasonName : 'AbortError';
    this.key = details.key;
    this.attempts = details.attempts;
  }
}
