// `nest-idempotency-pg/client`: the retrying client, usable without NestJS or TypeORM.
export { IdempotentClient, type IdempotentResponse } from './idempotent-client.js';
export type {
  IdempotentClientOptions,
  IdempotentRequestOptions,
  RetryEvent,
  RetryListener,
} from './idempotent-client.options.js';
export {
  IdempotentRequestAbortedError,
  IdempotentRequestError,
  type IdempotentRequestAbortedErrorDetails,
  type IdempotentRequestErrorDetails,
} from './idempotent-request.error.js';
export { parseRetryAfter } from './idempotent-client.backoff.js';
