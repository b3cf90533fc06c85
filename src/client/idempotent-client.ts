// A small retrying HTTP client for APIs built with this module, the TypeScript twin of the
// published Python example. It needs nothing but the global `fetch` (Node 20+, browsers,
// Deno, Bun): no NestJS, no TypeORM. One key per operation, the same on every try, so the
// server runs the operation at most once however often the client retries.
import {
  CLIENT_DEFAULTS,
  type IdempotentClientOptions,
  type IdempotentRequestOptions,
  type ResolvedClientOptions,
} from './idempotent-client.options.js';
import { parseRetryAfter, retryDelay, sleep } from './idempotent-client.backoff.js';
import {
  IdempotentRequestAbortedError,
  IdempotentRequestError,
} from './idempotent-request.error.js';
import { requestTarget } from './idempotent-client.url.js';

const REPLAYED_HEADER = 'idempotent-replayed';
const ORIGINAL_STATUS_HEADER = 'x-idempotency-original-status';

/**
 * A successful outcome: a 2xx, a 3xx the handler answered (with `redirect: 'manual'`, or one
 * fetch cannot follow), or a 409 replay of the first request's success.
 */
export interface IdempotentResponse {
  /**
   * Status as received: the handler's (e.g. 201, or 303 with `redirect: 'manual'`) or 409 for a
   * replay; 0 for a redirect a browser hides (`redirect: 'manual'`).
   */
  status: number;
  /**
   * True when the server replayed a stored response instead of running the operation again
   * (any response with `Idempotent-Replayed: true`, usually a 409). Worth a warning in your logs:
   * something sent the same operation twice.
   */
  replayed: boolean;
  /** Status of the first run: `x-idempotency-original-status` on a replay, else `status`. */
  originalStatus: number;
  /** The key used on every try; store it with the operation. */
  key: string;
  /** How many requests were sent (1 when the first try succeeded). */
  attempts: number;
  headers: Headers;
  /** The response body as text (a replay's body is the stored one, byte for byte). */
  body: string;
  /** The body parsed as JSON. */
  json<T = unknown>(): T;
}

export class IdempotentClient {
  private readonly options: ResolvedClientOptions;

  constructor(options: IdempotentClientOptions = {}) {
    this.options = { ...CLIENT_DEFAULTS, ...stripUndefined(options) };
    if (!Number.isInteger(this.options.retries) || this.options.retries < 0) {
      throw new RangeError('IdempotentClient: retries must be a whole number >= 0.');
    }
    // One key for every operation the client sends would replay one booking for the next.
    const keyHeader = this.options.headerName.toLowerCase();
    if (Object.keys(this.options.headers ?? {}).some((name) => name.toLowerCase() === keyHeader)) {
      throw new TypeError(
        `IdempotentClient: headers must not carry ${this.options.headerName}: a key belongs to one operation; pass it to post() ({ key }).`,
      );
    }
  }

  /**
   * POSTs `body` (JSON unless it is a string, bytes, a Blob, URLSearchParams or FormData;
   * never a stream, which a retry could not send again) with an idempotency key, retrying
   * through 423/429/502/503/504 and network errors. Resolves on 2xx, a 3xx fetch did not
   * follow, or a replayed 409; throws IdempotentRequestError on any other status or when the
   * tries run out, IdempotentRequestAbortedError when `signal` aborts, and a TypeError, before
   * any try, for a request fetch could never send (invalid URL, header or method).
   */
  post(
    url: string | URL,
    body: unknown,
    options: IdempotentRequestOptions = {},
  ): Promise<IdempotentResponse> {
    return this.send('POST', url, body, options);
  }

  /** Like `post()` for another unsafe method (PUT, PATCH, DELETE). */
  async send(
    method: string,
    url: string | URL,
    body: unknown,
    options: IdempotentRequestOptions = {},
  ): Promise<IdempotentResponse> {
    const { retries, headerName, retryStatuses, timeoutMs, redirect } = this.options;
    const doFetch = this.options.fetch ?? globalThis.fetch;
    const target = requestTarget(url, this.options.baseUrl);
    const { payload, contentType } = encodeBody(body);
    // Header names are case-insensitive: merged as two names, 'X-Idempotency-Key' and the
    // client's own would go out as one header "key, <uuid>", a new key on every call.
    const headers = mergeHeaders(
      contentType ? { 'content-type': contentType } : undefined,
      this.options.headers,
      options.headers,
    );
    const keyHeader = headerName.toLowerCase();
    const given = headers[keyHeader];
    if (options.key !== undefined && given !== undefined && given !== options.key) {
      throw new TypeError(
        `IdempotentClient: the key option "${options.key}" and the ${headerName} header "${given}" differ; give the key once.`,
      );
    }
    const key = options.key ?? given ?? globalThis.crypto.randomUUID();
    headers[keyHeader] = key;
    assertSendable(target, method, headers, payload);
    // The caller cancelled: stop now, and hand over the key, with which the operation (which
    // the server may have run) can be retried later.
    const aborted = (attempts: number) =>
      new IdempotentRequestAbortedError({ key, attempts, reason: options.signal!.reason });

    for (let attempt = 1; ; attempt++) {
      let response: Response | undefined;
      let networkError: unknown;
      const signals = [options.signal, timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined];
      try {
        response = await doFetch(target, {
          method,
          headers,
          body: payload,
          redirect,
          signal: AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined)),
        });
      } catch (error) {
        // Anything but the caller's abort (refused, reset, timed out) is worth another try,
        // since the key protects against running the operation twice. Requests fetch could
        // never send were refused before the first try (assertSendable).
        if (options.signal?.aborted) throw aborted(attempt);
        networkError = error;
      }

      let text: string | undefined;
      if (response) {
        try {
          text = await response.text();
        } catch (error) {
          if (options.signal?.aborted) throw aborted(attempt);
          if (isAnswer(response)) {
            // A success cut off mid-body (reset, or this try's timeout): no answer to return.
            // Another try with the key gets the stored one whole, as a replay.
            response = undefined;
            networkError = error;
          } else {
            text = ''; // the status says it all
          }
        }
      }
      const status = response?.status;
      if (response && isAnswer(response)) {
        return toResult(response, text ?? '', key, attempt);
      }
      // A replayed error (the server stores errors: storeErrors) is the answer for the key's
      // whole retention: another try only gets it again.
      const retryable =
        status === undefined || (retryStatuses.includes(status) && !isReplayed(response));
      if (!retryable || attempt > retries) {
        throw new IdempotentRequestError({
          status,
          attempts: attempt,
          key,
          exhausted: retryable,
          body: text,
          cause: networkError,
        });
      }
      const delayMs = retryDelay(
        attempt,
        parseRetryAfter(response?.headers.get('retry-after')),
        this.options,
      );
      this.options.onRetry?.({ attempt, status, error: networkError, delayMs, key });
      try {
        await sleep(delayMs, options.signal);
      } catch (error) {
        if (options.signal?.aborted) throw aborted(attempt);
        throw error;
      }
    }
  }
}

/**
 * Refuses, before the first try, a request that fetch could never send: an invalid or
 * relative URL (no baseUrl), a URL with credentials, a method or header fetch rejects (a
 * key or value outside Latin-1, a line break), a body on GET. Retrying those would only sleep
 * through the backoff to report them as "no response". The Request constructor applies
 * fetch's own checks, the same in every runtime (Node 20, 22 and 24 throw the same TypeErrors
 * from both); a scheme other than http(s) fails later, inside fetch, as "fetch failed" (like a
 * network error), so it is checked here too.
 */
function assertSendable(
  target: string | URL,
  method: string,
  headers: Record<string, string>,
  payload: RequestInit['body'],
): void {
  let url: string;
  try {
    url = new Request(target, { method, headers, body: payload }).url;
  } catch (error) {
    throw new TypeError(
      `IdempotentClient: fetch cannot send this request, so it was not tried: ${errorMessage(error)}`,
      { cause: error },
    );
  }
  const { protocol } = new URL(url);
  if (protocol !== 'http:' && protocol !== 'https:') {
    throw new TypeError(
      `IdempotentClient: ${protocol} URLs cannot be sent, so the request was not tried; use http: or https:.`,
    );
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * What the operation answered when it did what was asked (CONTRACT: a 2xx or a 3xx the handler
 * produced), or its replay. A 3xx gets here when fetch does not follow it (`redirect: 'manual'`,
 * or no `Location`); a browser's manual redirect is an opaque response with status 0.
 */
function isAnswer(response: Response): boolean {
  const { status } = response;
  return (
    (status >= 200 && status < 400) || response.type === 'opaqueredirect' || isReplay(response)
  );
}

/**
 * A 409 is a replayed success only when the server says so: the application's own 409
 * errors (a handler's ConflictException) pass through the module unchanged and must not be
 * mistaken for a success.
 */
function isReplay(response: Response): boolean {
  return response.status === 409 && isReplayed(response);
}

/** Marked as a stored response (`Idempotent-Replayed: true`), whatever its status. */
function isReplayed(response: Response | undefined): boolean {
  return response?.headers.get(REPLAYED_HEADER)?.toLowerCase() === 'true';
}

function toResult(
  response: Response,
  body: string,
  key: string,
  attempts: number,
): IdempotentResponse {
  const replayed = isReplayed(response);
  const original = Number(response.headers.get(ORIGINAL_STATUS_HEADER));
  return {
    status: response.status,
    replayed,
    originalStatus:
      replayed && Number.isInteger(original) && original > 0 ? original : response.status,
    key,
    attempts,
    headers: response.headers,
    body,
    json: <T>() => JSON.parse(body) as T,
  };
}

/**
 * The body as fetch sends it on every try: a string, bytes, a Blob, URLSearchParams or
 * FormData as they are (fetch sets the last three's content type; FormData gets a new
 * boundary per try, which the module's fingerprint ignores), anything else as JSON. A
 * stream cannot be sent twice, so it is refused rather than turned into `{}`.
 */
function encodeBody(body: unknown): {
  payload: RequestInit['body'];
  contentType?: string;
} {
  if (body === undefined) return { payload: undefined };
  if (
    typeof body === 'string' ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body) ||
    body instanceof Blob ||
    body instanceof URLSearchParams ||
    body instanceof FormData
  ) {
    return { payload: body as RequestInit['body'] };
  }
  if (
    body instanceof ReadableStream ||
    (typeof body === 'object' && body !== null && Symbol.asyncIterator in body)
  ) {
    throw new TypeError(
      'IdempotentClient: a stream body cannot be sent again on a retry; pass its bytes (a Uint8Array, a Blob) instead.',
    );
  }
  return { payload: JSON.stringify(body), contentType: 'application/json' };
}

/** Later headers replace earlier ones of the same name, whatever its case. */
function mergeHeaders(...sources: (Record<string, string> | undefined)[]): Record<string, string> {
  const merged: Record<string, string> = {};
  for (const source of sources) {
    for (const [name, value] of Object.entries(source ?? {})) merged[name.toLowerCase()] = value;
  }
  return merged;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
