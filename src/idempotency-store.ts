// The storage contract. The abstract class is both the TypeScript type and the injection
// token: provide another implementation with `{ provide: IdempotencyStore, useClass: ... }`.
import { setTimeout as sleep } from 'node:timers/promises';
import { WAIT_BLIND_POLL_MS } from './idempotency.constants.js';

/** A response as stored and replayed: status, the headers worth replaying, exact body bytes. */
export interface StoredResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Identifies one claim of a record: the fencing token changes on every takeover. */
export interface ClaimedRecord {
  scope: string;
  key: string;
  token: string;
}

/** Settings of one store call. */
export interface StoreCallOptions {
  /**
   * Settle within this many milliseconds, including any wait for a connection, or reject
   * with IdempotencyStoreTimeoutError. The engine relies on it: it is how no request waits
   * on the store for longer than `statementTimeoutMs`.
   */
  timeoutMs?: number;
}

export interface ClaimRequest extends StoreCallOptions {
  scope: string;
  key: string;
  /** SHA-256 of the operation (see computeFingerprint). */
  fingerprint: Buffer;
  leaseMs: number;
  retentionMs: number;
}

/**
 * A claim whose caller stopped waiting may still take effect (the statement reached a
 * database that answered too late). Its record then holds the key until its lease passes,
 * unless released: the engine releases it once `applied` says it may have taken effect.
 */
export interface LateClaim {
  record: ClaimedRecord;
  /** true: it took effect; false: it did not; 'unknown': it may, at any time. */
  applied: Promise<boolean | 'unknown'>;
}

/** A store call outlived its `timeoutMs`. */
export class IdempotencyStoreTimeoutError extends Error {
  constructor(
    readonly timeoutMs: number,
    /** Set by `claim` when its statement may still take effect. */
    readonly lateClaim?: LateClaim,
    options?: { cause?: unknown },
  ) {
    super(`The idempotency store did not answer within ${timeoutMs} ms`, options);
    this.name = 'IdempotencyStoreTimeoutError';
  }
}

/** The in-flight record a waiting duplicate waits for (see `waitInFlightMs`). */
export interface InFlightRecord {
  scope: string;
  key: string;
  fingerprint: Buffer;
}

export type ClaimResult =
  /** The caller owns the record and must complete or release it. */
  | { outcome: 'claimed'; record: ClaimedRecord }
  /** Same request already succeeded: replay it. */
  | { outcome: 'completed'; response: StoredResponse }
  /** Same request still running elsewhere. */
  | { outcome: 'in_progress'; leaseLeftMs: number }
  /** The key belongs to a different request. */
  | { outcome: 'mismatch' };

export abstract class IdempotencyStore {
  /** Atomically claims the key, or reports why it cannot be claimed. */
  abstract claim(request: ClaimRequest): Promise<ClaimResult>;

  /**
   * Stores the response and marks the record completed, only if `record.token` still owns
   * it. Returns false when the lease was taken over meanwhile.
   */
  abstract complete(
    record: ClaimedRecord,
    response: StoredResponse,
    retentionMs: number,
    call?: StoreCallOptions,
  ): Promise<boolean>;

  /** Extends the lease of a record still owned by `record.token`; false if no longer owned. */
  abstract renew(record: ClaimedRecord, leaseMs: number, call?: StoreCallOptions): Promise<boolean>;

  /** Deletes an in-flight record so the key can run again; false if no longer owned. */
  abstract release(record: ClaimedRecord, call?: StoreCallOptions): Promise<boolean>;

  /**
   * Deletes up to `batchSize` expired records, never one whose lease is still live, and
   * returns how many it deleted. Only frees space: expiry is enforced when reading.
   */
  abstract purgeExpired(batchSize: number, call?: StoreCallOptions): Promise<number>;

  /**
   * Waits until the in-flight record may have completed or been released, `timeoutMs` has
   * passed or `signal` aborts; the caller then claims again, and that claim decides. So
   * returning early is always safe, and returning late only delays the answer. Must not hold
   * a connection of the pool while it waits.
   *
   * This default polls: it waits a short interval. A store that can be told when a record
   * settles overrides it (the Postgres store listens for a notification).
   */
  async awaitSettled(
    _record: InFlightRecord,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<void> {
    await sleep(Math.min(timeoutMs, WAIT_BLIND_POLL_MS), undefined, { signal }).catch(
      () => undefined,
    );
  }
}
