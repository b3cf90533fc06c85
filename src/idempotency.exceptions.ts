// One exception per outcome of the contract. Each renders as RFC 9457 problem+json with a
// stable `code` (see IdempotencyExceptionFilter), so clients can branch on it.
import { HttpException, HttpStatus } from '@nestjs/common';

/** The RFC 9457 body every idempotency error carries. */
export interface IdempotencyProblem {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** Stable, machine-readable reason, e.g. `idempotency_key_reused`. */
  code: string;
}

/** Base class of every error this module answers with. */
export class IdempotencyException extends HttpException {
  constructor(
    status: number,
    readonly code: string,
    title: string,
    detail: string,
    /** Extra response headers, e.g. `Retry-After`. */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    const problem: IdempotencyProblem = {
      type: `urn:problem-type:${code.replaceAll('_', '-')}`,
      title,
      status,
      detail,
      code,
    };
    super(problem, status);
  }

  getProblem(): IdempotencyProblem {
    return this.getResponse() as IdempotencyProblem;
  }
}

/**
 * 400: the route requires a key and none was sent. `source` names where it was looked for
 * when that is not a header (a `key` resolver).
 */
export class IdempotencyKeyMissingException extends IdempotencyException {
  constructor(headerName: string, source?: string) {
    super(
      HttpStatus.BAD_REQUEST,
      'idempotency_key_missing',
      'Idempotency key required',
      source
        ? `This handler requires an idempotency key (${source}), and the call carries none.`
        : `This endpoint requires an "${headerName}" header with a unique key for the operation.`,
    );
  }
}

/**
 * 400: the key is empty, too long, not printable ASCII, or sent more than once. With
 * `named`, `source` describes where the key came from instead of being a header name.
 */
export class IdempotencyKeyInvalidException extends IdempotencyException {
  constructor(source: string, reason: string, named = false) {
    super(
      HttpStatus.BAD_REQUEST,
      'idempotency_key_invalid',
      'Invalid idempotency key',
      named
        ? `The idempotency key (${source}) is invalid: ${reason}.`
        : `The "${source}" header is invalid: ${reason}.`,
    );
  }
}

/** 422: the key was already used for a different request (other body, path or method). */
export class IdempotencyKeyReusedException extends IdempotencyException {
  constructor() {
    super(
      HttpStatus.UNPROCESSABLE_ENTITY,
      'idempotency_key_reused',
      'Idempotency key reused',
      'This key was already used for a different request. Use a new key for a new operation.',
    );
  }
}

/** 423: the first request with this key is still running; retry after `Retry-After`. */
export class IdempotencyRequestInFlightException extends IdempotencyException {
  constructor(retryAfterSeconds: number) {
    super(
      HttpStatus.LOCKED,
      'idempotency_request_in_flight',
      'Request in progress',
      'A request with this key is still being processed. Retry after the given delay.',
      { 'Retry-After': String(retryAfterSeconds) },
    );
  }
}

/** 503: the record store is unreachable or failing; the handler did not run. */
export class IdempotencyStoreUnavailableException extends IdempotencyException {
  constructor(retryAfterSeconds: number) {
    super(
      HttpStatus.SERVICE_UNAVAILABLE,
      'idempotency_store_unavailable',
      'Idempotency store unavailable',
      'The request was not processed because its idempotency record could not be read or written. Retry later with the same key.',
      { 'Retry-After': String(retryAfterSeconds) },
    );
  }
}

/**
 * 503: this request's lease passed and another request took the key over before this one
 * finished, so its response was not stored. A retry gets the stored winner's response.
 */
export class IdempotencyLeaseLostException extends IdempotencyException {
  constructor(retryAfterSeconds: number) {
    super(
      HttpStatus.SERVICE_UNAVAILABLE,
      'idempotency_lease_lost',
      'Idempotency lease lost',
      'This request outlived its lease and another request with the same key took over; its response was discarded. Retry with the same key to get the stored result.',
      { 'Retry-After': String(retryAfterSeconds) },
    );
  }
}

/** 500: the route answers in a way that cannot be stored (a stream or `@Res()` writes). */
export class IdempotencyUnsupportedResponseException extends IdempotencyException {
  constructor(detail: string) {
    super(
      HttpStatus.INTERNAL_SERVER_ERROR,
      'idempotency_unsupported_response',
      'Route cannot be made idempotent',
      detail,
    );
  }
}

/**
 * 500: the application's scope resolver threw or did not return a string, so the module
 * cannot tell who owns the key. A configuration error: the handler did not run, and the log
 * says what the resolver did.
 */
export class IdempotencyScopeUnresolvedException extends IdempotencyException {
  constructor() {
    super(
      HttpStatus.INTERNAL_SERVER_ERROR,
      'idempotency_scope_unresolved',
      'Idempotency scope could not be resolved',
      'The server could not determine who owns this idempotency key, so the request was not processed. This is a server configuration error, described in the server log.',
    );
  }
}

/**
 * 500: the route is set up so that this request cannot be compared with another faithfully
 * (its body is being read by someone else, or parsed into something that is not JSON
 * values). The detail says what to change; the handler did not run.
 */
export class IdempotencyRequestUnsupportedException extends IdempotencyException {
  constructor(detail: string) {
    super(
      HttpStatus.INTERNAL_SERVER_ERROR,
      'idempotency_unsupported_request',
      'Request cannot be fingerprinted',
      detail,
    );
  }
}

/**
 * 413: the body has to be read to be fingerprinted (no parser has read it before the
 * idempotency check) and is larger than the module buffers for that.
 */
export class IdempotencyBodyTooLargeException extends IdempotencyException {
  constructor(limit: number) {
    super(
      HttpStatus.PAYLOAD_TOO_LARGE,
      'idempotency_body_too_large',
      'Body too large to fingerprint',
      `A body that no parser has read before the idempotency check is read to fingerprint it, up to ${limit} bytes; this one is larger. Send a smaller body, or (for uploads) let the upload interceptor run first: @Idempotent() written above @UseInterceptors(FileInterceptor(...)).`,
    );
  }
}

/** 400: the client stopped sending the body before it ended; the handler did not run. */
export class IdempotencyBodyIncompleteException extends IdempotencyException {
  constructor() {
    super(
      HttpStatus.BAD_REQUEST,
      'idempotency_body_incomplete',
      'Incomplete body',
      'The request body ended before the length announced for it (the connection closed or failed while it was read).',
    );
  }
}
