// A stored response to send again. Thrown by the interceptor and rendered by
// IdempotencyExceptionFilter: Nest applies the route's own status after interceptors run,
// so a replay's 409 can only be set on the way out through a filter.
import type { StoredResponse } from './idempotency-store.js';
import type { ReplayStatus } from './idempotency-options.interface.js';

export class IdempotentReplay {
  constructor(
    readonly response: StoredResponse,
    /** The replay's status: `replayStatus`'s, or another (a stored error's own 409: 422). */
    readonly replayStatus: ReplayStatus | number,
  ) {}
}
