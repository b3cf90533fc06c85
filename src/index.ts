// The public API, exported by name.
export { IdempotencyModule } from './idempotency.module.js';
export { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
export { Idempotent } from './idempotent.decorator.js';
export { IdempotencyTransaction } from './idempotency.transaction.js';
export { IdempotencyInterceptor } from './idempotency.interceptor.js';
export { IdempotencyExceptionFilter } from './idempotency-exception.filter.js';
export { IdempotentReplay } from './idempotency.replay.js';
export { IdempotencyEvents } from './idempotency-events.service.js';
export {
  IDEMPOTENCY_CHANNELS,
  IDEMPOTENCY_EVENT_TYPES,
  idempotencyKeyHash,
  type IdempotencyEvent,
  type IdempotencyEventBase,
  type IdempotencyEventOf,
  type IdempotencyEventType,
  type IdempotencyClaimedEvent,
  type IdempotencyReplayedEvent,
  type IdempotencyInFlightEvent,
  type IdempotencyMismatchEvent,
  type IdempotencyRejectedEvent,
  type IdempotencyCompletedEvent,
  type IdempotencyReleasedEvent,
  type IdempotencyHeldEvent,
  type IdempotencyLeaseRenewedEvent,
  type IdempotencyLeaseLostEvent,
  type IdempotencyLeaseTakenOverEvent,
  type IdempotencyStoreUnavailableEvent,
  type IdempotencyPurgeBatchEvent,
} from './idempotency.events.js';
export {
  idempotencyApolloPlugin,
  idempotencyMercuriusHooks,
  type IdempotencyReplayedField,
} from './idempotency-graphql.extensions.js';
export type {
  IdempotencyModuleOptions,
  IdempotentRouteOptions,
  IdempotencyKeyResolver,
  IdempotencyScopeResolver,
  ReplayStatus,
  IdempotencyPurgeOptions,
} from './idempotency-options.interface.js';
export {
  IdempotencyPurger,
  purgeExpiredIdempotencyRecords,
  type PurgeOptions,
} from './idempotency.purge.js';
export { defaultScope } from './idempotency.options.js';
export {
  IdempotencyKeys,
  type IdempotencyKeyRef,
  type InvalidateKeyOptions,
} from './idempotency-keys.service.js';
export {
  IdempotencyStore,
  IdempotencyStoreTimeoutError,
  type ClaimRequest,
  type ClaimResult,
  type ClaimedRecord,
  type LateClaim,
  type StoreCallOptions,
  type InFlightRecord,
  type StoredResponse,
  type IdempotencyRecordInfo,
  type InvalidateOptions,
  type InvalidateResult,
} from './idempotency-store.js';
export {
  PostgresIdempotencyStore,
  type IdempotencyDurability,
  type PostgresIdempotencyStoreOptions,
  type SqlExecutor,
  type SqlResult,
  type SqlStatement,
} from './postgres-idempotency.store.js';
export { StatementTimeoutError, type StatementAftermath } from './postgres-statement.runner.js';
export {
  PostgresIdempotencyListener,
  listenerApplicationName,
  type ListenerClient,
} from './postgres-idempotency.listener.js';
export { computeFingerprint, type FingerprintInput } from './idempotency.fingerprint.js';
export {
  fingerprintHttpRequest,
  DEFAULT_MAX_BUFFERED_BODY_BYTES,
  type FingerprintableRequest,
  type HttpFingerprintOptions,
} from './idempotency-http.fingerprint.js';
export { IdempotencyRecord } from './idempotency-record.entity.js';
export {
  CreateIdempotencyRecords1764403200000,
  createIdempotencyRecordsMigration,
  idempotencyRecordsDdl,
} from '../migrations/1764403200000-CreateIdempotencyRecords.js';
export {
  AddIdempotencyWaiters1795910400000,
  createIdempotencyWaitersMigration,
  idempotencyWaitersDdl,
} from '../migrations/1795910400000-AddIdempotencyWaiters.js';
export {
  IdempotencyException,
  IdempotencyBodyIncompleteException,
  IdempotencyBodyTooLargeException,
  IdempotencyKeyInvalidException,
  IdempotencyKeyMissingException,
  IdempotencyKeyReusedException,
  IdempotencyLeaseLostException,
  IdempotencyRequestInFlightException,
  IdempotencyRequestUnsupportedException,
  IdempotencyStoreUnavailableException,
  IdempotencyUnsupportedResponseException,
  IdempotencyScopeUnresolvedException,
  type IdempotencyProblem,
} from './idempotency.exceptions.js';
