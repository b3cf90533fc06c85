// What the module reports about each call and each background step, for metrics, traces and
// alerts: the event types (one per outcome, told apart by `type`) and the
// `node:diagnostics_channel` channels they are published on. A channel costs nothing while
// nobody subscribes to it; IdempotencyEvents (idempotency-events.service.ts) checks that
// before it builds an event. Events never carry the raw key: a client may have put something
// sensitive in it. They carry `keyHash`, which idempotencyKeyHash() recomputes from a key a
// client reports.
import { createHash } from 'node:crypto';
import { channel, type Channel } from 'node:diagnostics_channel';

/** What identifies the call an event is about. */
export interface IdempotencyEventBase {
  /** `ExecutionContext#getType()`: `'http'`, `'graphql'` or `'rpc'`; absent for background work. */
  context?: string;
  /** The handler, as `ClassName.methodName`: a bounded set, fit for a metric label. */
  handler?: string;
  /** The scope the key belongs to; absent when the call was refused before it was resolved. */
  scope?: string;
  /** idempotencyKeyHash(scope, key); absent when no usable key was sent. */
  keyHash?: string;
}

/** Outcomes of the claim, before the handler runs (`claimMs` includes any wait). */
interface AdmissionEvent extends IdempotencyEventBase {
  /** From the first claim to this outcome, in milliseconds, waits included. */
  claimMs: number;
  /** Of which spent waiting for the first request (`waitInFlightMs`); 0 when it did not wait. */
  waitedMs: number;
}

/** The key was free (or its record had expired, or its lease had passed): the handler runs. */
export interface IdempotencyClaimedEvent extends AdmissionEvent {
  type: 'claimed';
}

/** The same request had completed: its stored response was answered. */
export interface IdempotencyReplayedEvent extends AdmissionEvent {
  type: 'replayed';
  /** The stored response's own status (the replay may answer 409). */
  status: number;
}

/** The same request was still running (after waiting, with `waitedMs`): 423. */
export interface IdempotencyInFlightEvent extends AdmissionEvent {
  type: 'in-flight';
  retryAfterSeconds: number;
}

/** The key had been used for another request: 422. */
export interface IdempotencyMismatchEvent extends AdmissionEvent {
  type: 'mismatch';
}

/**
 * The call was refused before any claim: a key missing where required or invalid
 * (`idempotency_key_missing`, `idempotency_key_invalid`), a scope that could not be resolved,
 * a request or route that cannot be made idempotent.
 */
export interface IdempotencyRejectedEvent extends IdempotencyEventBase {
  type: 'rejected';
  /** The problem's stable `code`. */
  code: string;
  /** The HTTP-equivalent status. */
  status: number;
}

/** The handler's response was stored (and, with `transactional`, committed with its writes). */
export interface IdempotencyCompletedEvent extends IdempotencyEventBase {
  type: 'completed';
  /** The stored response's status. */
  status: number;
  /** From the claim to the handler's outcome, in milliseconds. */
  handlerMs: number;
  /** The store step that settled it (with `transactional`, the store and the commit). */
  storeMs: number;
}

/** The handler failed (or its transaction rolled back): the key is free again. */
export interface IdempotencyReleasedEvent extends IdempotencyEventBase {
  type: 'released';
  handlerMs: number;
  storeMs: number;
}

/** Something failed after the handler may have had effects: the key stays held until its lease passes. */
export interface IdempotencyHeldEvent extends IdempotencyEventBase {
  type: 'held';
  reason: string;
  handlerMs: number;
}

/** `renewLease`: the lease of a record whose handler still runs was extended. */
export interface IdempotencyLeaseRenewedEvent extends IdempotencyEventBase {
  type: 'lease-renewed';
  storeMs: number;
}

/**
 * This call's lease had passed and another request took the key over: found when renewing,
 * storing, committing or releasing. Its result was discarded (503 `idempotency_lease_lost`).
 */
export interface IdempotencyLeaseLostEvent extends IdempotencyEventBase {
  type: 'lease-lost';
  phase: 'renew' | 'complete' | 'commit' | 'release';
}

/**
 * This call's claim took the key over from a request whose lease had passed: that one
 * crashed, or is still running past `leaseMs` (it then gets `lease-lost`). Reported before
 * this call's `claimed`.
 */
export interface IdempotencyLeaseTakenOverEvent extends IdempotencyEventBase {
  type: 'lease-taken-over';
}

/**
 * The store failed or did not answer within `statementTimeoutMs`. For `claim` and `begin`
 * the call was answered 503; for `complete` the response is stored again in the background,
 * for `release` the release is retried; for `renew`, the next tick renews again.
 */
export interface IdempotencyStoreUnavailableEvent extends IdempotencyEventBase {
  type: 'store-unavailable';
  operation: 'claim' | 'begin' | 'complete' | 'commit' | 'release' | 'renew';
  /** How long the failed store step took, in milliseconds. */
  storeMs: number;
  /** Whether it failed by outliving `statementTimeoutMs`. */
  timedOut: boolean;
  error: Error;
}

/** One batch of the purge sweep (no call: no scope or key). */
export interface IdempotencyPurgeBatchEvent extends IdempotencyEventBase {
  type: 'purge-batch';
  deleted: number;
  storeMs: number;
}

/** Every event, told apart by `type`. */
export type IdempotencyEvent =
  | IdempotencyClaimedEvent
  | IdempotencyReplayedEvent
  | IdempotencyInFlightEvent
  | IdempotencyMismatchEvent
  | IdempotencyRejectedEvent
  | IdempotencyCompletedEvent
  | IdempotencyReleasedEvent
  | IdempotencyHeldEvent
  | IdempotencyLeaseRenewedEvent
  | IdempotencyLeaseLostEvent
  | IdempotencyLeaseTakenOverEvent
  | IdempotencyStoreUnavailableEvent
  | IdempotencyPurgeBatchEvent;

export type IdempotencyEventType = IdempotencyEvent['type'];

/** The event of one type. */
export type IdempotencyEventOf<T extends IdempotencyEventType> = Extract<
  IdempotencyEvent,
  { type: T }
>;

/**
 * The `node:diagnostics_channel` channel names, one per event type:
 * `nest-idempotency-pg:<type>`.
 * @example diagnostics_channel.subscribe(IDEMPOTENCY_CHANNELS.replayed, (event) => ...)
 */
export const IDEMPOTENCY_CHANNELS = {
  claimed: 'nest-idempotency-pg:claimed',
  replayed: 'nest-idempotency-pg:replayed',
  'in-flight': 'nest-idempotency-pg:in-flight',
  mismatch: 'nest-idempotency-pg:mismatch',
  rejected: 'nest-idempotency-pg:rejected',
  completed: 'nest-idempotency-pg:completed',
  released: 'nest-idempotency-pg:released',
  held: 'nest-idempotency-pg:held',
  'lease-renewed': 'nest-idempotency-pg:lease-renewed',
  'lease-lost': 'nest-idempotency-pg:lease-lost',
  'lease-taken-over': 'nest-idempotency-pg:lease-taken-over',
  'store-unavailable': 'nest-idempotency-pg:store-unavailable',
  'purge-batch': 'nest-idempotency-pg:purge-batch',
} as const satisfies Record<IdempotencyEventType, string>;

/** Every event type, in a stable order. */
export const IDEMPOTENCY_EVENT_TYPES = Object.keys(IDEMPOTENCY_CHANNELS) as IdempotencyEventType[];

/** @internal The channel objects, created once (a lookup by name on every call costs). */
export const idempotencyChannels = Object.fromEntries(
  IDEMPOTENCY_EVENT_TYPES.map((type) => [type, channel(IDEMPOTENCY_CHANNELS[type])]),
) as Record<IdempotencyEventType, Channel>;

/**
 * The `keyHash` events and log lines carry instead of the key: the first 16 hex digits of
 * SHA-256 over the scope and the key. Compute it from a key a client reports to find its
 * events.
 * @example idempotencyKeyHash('user:42', 'db55f986-c30c-4883-ac4f-0d2cfada6d3f')
 */
export function idempotencyKeyHash(scope: string, key: string): string {
  return createHash('sha256').update(`${scope}\n${key}`, 'utf8').digest('hex').slice(0, 16);
}
