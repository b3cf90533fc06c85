// What an @Idempotent() HTTP route answers besides its own success, as OpenAPI objects: the
// key header parameter, the replay and the module's problem+json errors. Plain data, so it
// needs nothing of @nestjs/swagger; idempotency-openapi.ts hands it to swagger's decorators.
import {
  MAX_KEY_LENGTH,
  ORIGINAL_STATUS_HEADER,
  REPLAYED_HEADER,
} from './idempotency.constants.js';
import type { ResolvedOptions } from './idempotency.options.js';

/** An OpenAPI response as `ApiResponse()` takes it (status separate). */
export interface OpenApiResponse {
  description: string;
  headers?: Record<string, { description: string; schema: Record<string, unknown> }>;
  content?: Record<string, { schema: Record<string, unknown> }>;
}

/** The key header, as `ApiHeader()` takes it; the format is what readIdempotencyKey checks. */
export function keyHeaderParameter(options: ResolvedOptions) {
  return {
    name: options.headerName,
    required: options.required,
    description: options.required
      ? 'Idempotency key, required: a unique id of the operation (a UUID), sent again unchanged on every retry.'
      : 'Idempotency key: a unique id of the operation (a UUID), sent again unchanged on every retry. Without it the request is not tracked.',
    schema: {
      type: 'string',
      minLength: 1,
      maxLength: MAX_KEY_LENGTH,
      // Printable ASCII, as the module checks it.
      pattern: '^[\\x20-\\x7E]+$',
      example: 'db55f986-c30c-4883-ac4f-0d2cfada6d3f',
    },
  };
}

/** The headers every replay carries (IdempotencyExceptionFilter sets them). */
export const REPLAY_HEADERS: NonNullable<OpenApiResponse['headers']> = {
  [REPLAYED_HEADER]: {
    description: 'Present on a replay: this is the stored response of an earlier request.',
    schema: { type: 'string', enum: ['true'] },
  },
  [ORIGINAL_STATUS_HEADER]: {
    description: 'On a replay: the status the first response had.',
    schema: { type: 'integer' },
  },
};

const RETRY_AFTER = {
  'Retry-After': {
    description: 'Seconds to wait before retrying with the same key.',
    schema: { type: 'integer', minimum: 1 },
  },
};

/** The replay of a completed request under `replayStatus: 409`. */
export function replayResponse(options: ResolvedOptions): OpenApiResponse {
  return {
    description: `Replay: a request with this key and the same method, path, query and body already succeeded; this is its stored response, byte for byte (${ORIGINAL_STATUS_HEADER} has its status)${options.waitInFlightMs > 0 ? ', also sent to a duplicate that waited for the first' : ''}. Treat it as success.`,
    headers: REPLAY_HEADERS,
  };
}

/** The module's own errors for this route, by status. */
export function problemResponses(options: ResolvedOptions): Record<number, OpenApiResponse> {
  const keyCodes = ['idempotency_key_invalid', 'idempotency_body_incomplete'];
  if (options.required) keyCodes.unshift('idempotency_key_missing');
  return {
    400: problem(
      options.required
        ? 'The idempotency key is missing or malformed (empty, over 255 characters, not printable ASCII, sent twice), or the body ended early.'
        : 'The idempotency key is malformed (empty, over 255 characters, not printable ASCII, sent twice), or the body ended early.',
      keyCodes,
    ),
    422: problem(
      `The key was already used for a different request (another method, path, query or body). Use a new key for a new operation.${options.replayStatus === 409 ? ' Also a conflict the handler answered itself (its 409, with its own body and x-idempotency-original-status: 409): under a key a 409 only ever means a replayed success.' : ''}`,
      ['idempotency_key_reused'],
    ),
    423: problem(
      `A request with this key is still being processed${options.waitInFlightMs > 0 ? ` (and did not finish within ${options.waitInFlightMs} ms)` : ''}. Retry after Retry-After seconds with the same key.`,
      ['idempotency_request_in_flight'],
      RETRY_AFTER,
    ),
    503: problem(
      'The idempotency record could not be read or written (the handler did not run), or the lease was lost to another request. Retry after Retry-After seconds with the same key.',
      ['idempotency_store_unavailable', 'idempotency_lease_lost'],
      RETRY_AFTER,
    ),
  };
}

function problem(
  description: string,
  codes: string[],
  headers?: OpenApiResponse['headers'],
): OpenApiResponse {
  return {
    description,
    ...(headers ? { headers } : {}),
    content: { 'application/problem+json': { schema: problemSchema(codes) } },
  };
}

/** RFC 9457, with the stable `code` (IdempotencyProblem). */
function problemSchema(codes: string[]): Record<string, unknown> {
  return {
    type: 'object',
    required: ['type', 'title', 'status', 'detail', 'code'],
    properties: {
      type: { type: 'string', example: `urn:problem-type:${codes[0].replaceAll('_', '-')}` },
      title: { type: 'string' },
      status: { type: 'integer' },
      detail: { type: 'string' },
      code: { type: 'string', enum: codes },
    },
  };
}
