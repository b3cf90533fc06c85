// Internal tokens and defaults. Not exported from the package entry.
export const IDEMPOTENT_ROUTE_OPTIONS = 'idempotency:route-options';

export const DEFAULT_HEADER_NAME = 'x-idempotency-key';
export const DEFAULT_TABLE_NAME = 'idempotency_records';
export const DEFAULT_RETENTION_MS = 48 * 60 * 60 * 1000;
export const DEFAULT_LEASE_MS = 60_000;
export const DEFAULT_RETRY_AFTER_SECONDS = 1;
export const DEFAULT_STATEMENT_TIMEOUT_MS = 5_000;
export const MAX_KEY_LENGTH = 255;
export const DEFAULT_WAIT_IN_FLIGHT_MS = 0;
export const DEFAULT_MAX_IN_FLIGHT_WAITERS = 1_000;
/**
 * A waiting duplicate claims again at least this often even when a notification is due: the
 * bound on how long a lost notification (a dropped listening connection) can delay it.
 */
export const WAIT_POLL_MS = 1_000;
/** How often a duplicate claims again on a store that cannot notify waiters. */
export const WAIT_BLIND_POLL_MS = 200;

/** Methods that are safe by definition and never tracked. */
export const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Response headers sent on a replay. */
export const REPLAYED_HEADER = 'Idempotent-Replayed';
export const ORIGINAL_STATUS_HEADER = 'x-idempotency-original-status';
