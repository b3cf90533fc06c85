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
  /**
   * The caller owns the record and must complete or release it. `takenOver`: the key was
   * held by a request whose lease had passed (it crashed, or outran `leaseMs`), and this
   * claim took it over. Optional: a store that cannot tell leaves it out.
   */
  | { outcome: 'claimed'; record: ClaimedRecord; takenOver?: boolean }
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

  // What operators use (IdempotencyKeys). Not abstract, so that a store written before they
  // existed still compiles; the store contract (nest-idempotency-pg/testing) checks them.

  /** The record of (scope, key), expired or not; `undefined` when there is none. */
  inspect(
    _scope: string,
    _key: string,
    _call?: StoreCallOptions,
  ): Promise<IdempotencyRecordInfo | undefined> {
    return Promise.reject(notImplemented(this, 'inspect'));
  }

  /**
   * Deletes the record of (scope, key) when completed, or in progress with `inProgress`; in
   * one atomic step, so a record that is claimed meanwhile is not deleted by mistake.
   */
  invalidate(
    _scope: string,
    _key: string,
    _options?: InvalidateOptions,
  ): Promise<InvalidateResult> {
    return Promise.reject(notImplemented(this, 'invalidate'));
  }
}

// What operators read and ask for: IdempotencyStore.inspect() and invalidate().

/** One record as an operator sees it (IdempotencyKeys.lookup). */
export interface IdempotencyRecordInfo {
  /** The scope as stored: the owner, prefixed with `namespace|` outside HTTP routes. */
  scope: string;
  key: string;
  state: 'in_progress' | 'completed';
  /** SHA-256 of the request the key belongs to, in hex. */
  fingerprint: string;
  /** The current claim's fencing token: it changes on every claim and takeover. */
  fencingToken: string;
  /** When the current claim was made. */
  createdAt: Date;
  /** Completed: when its response was stored. */
  completedAt?: Date;
  /** End of retention: after it (and while not running) the key starts anew. */
  expiresAt: Date;
  /** In progress: when the lease passes, after which its owner is presumed dead. */
  leaseExpiresAt?: Date;
  /** In progress and past its lease: the same request takes it over on its next try. */
  leasePassed: boolean;
  /** Past retention and not running: what a claim would treat as absent. */
  expired: boolean;
  /** Completed: the stored response (`bodyBytes` is the size of the stored body). */
  response?: { status: number; headers: Record<string, string>; bodyBytes: number };
}

export interface InvalidateOptions extends StoreCallOptions {
  /**
   * Also delete a record still in progress. Only safe once its owner is known to be dead:
   * if it is still running, the next request with the key runs the handler a second time.
   * @default false
   */
  inProgress?: boolean;
}

export type InvalidateResult =
  /** The record is gone; `state` is what it was. */
  | { outcome: 'deleted'; state: 'in_progress' | 'completed' }
  /** There was no record. */
  | { outcome: 'missing' }
  /** The record is in progress and `inProgress` was not set: nothing was deleted. */
  | { outcome: 'refused'; state: 'in_progress' };

function notImplemented(store: object, method: string): Error {
  return new Error(
    `${store.constructor.name} does not implement ${method}(), which IdempotencyKeys needs: see IdempotencyStore.`,
  );
}
