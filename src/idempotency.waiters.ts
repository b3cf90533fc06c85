// Duplicates that wait for the request they repeat (`waitInFlightMs`) instead of answering
// 423 at once: how many may wait at once in this process, and the end of every wait on
// shutdown. The waiting itself is the store's (Postgres: a notification on a dedicated
// connection), so a waiter holds no pool connection, and a store that cannot notify polls.
import { Inject, Injectable, Optional, type BeforeApplicationShutdown } from '@nestjs/common';
import { setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_MAX_IN_FLIGHT_WAITERS, WAIT_BLIND_POLL_MS } from './idempotency.constants.js';
import { idempotencyKeyHash } from './idempotency.events.js';
import { IdempotencyLog } from './idempotency.log.js';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';
import { IdempotencyStore, type ClaimResult, type InFlightRecord } from './idempotency-store.js';

@Injectable()
export class IdempotencyWaiters implements BeforeApplicationShutdown {
  private readonly logger: IdempotencyLog;
  private readonly max: number;
  private waiting = 0;
  private readonly stopping = new AbortController();
  /** The latest claim of each record that waiters sent after waking, to share. */
  private readonly claims = new Map<string, { sentAt: number; result: Promise<ClaimResult> }>();

  constructor(
    @Optional()
    @Inject(IDEMPOTENCY_MODULE_OPTIONS)
    options?: Pick<IdempotencyModuleOptions, 'maxInFlightWaiters' | 'logger'>,
  ) {
    this.logger = new IdempotencyLog(options?.logger);
    this.max = options?.maxInFlightWaiters ?? DEFAULT_MAX_IN_FLIGHT_WAITERS;
    // Every waiter listens for shutdown while it waits: as many listeners as waiters.
    setMaxListeners(this.max + 10, this.stopping.signal);
  }

  /** How many duplicates are waiting in this process right now. */
  get count(): number {
    return this.waiting;
  }

  /** The wait of one call, or undefined when its route does not wait. */
  start(
    store: IdempotencyStore,
    record: InFlightRecord,
    waitMs: number,
    watchCaller?: (gone: () => void) => () => void,
  ): InFlightWait | undefined {
    return waitMs > 0
      ? new InFlightWait(this, store, record, Date.now() + waitMs, watchCaller)
      : undefined;
  }

  /**
   * Before the HTTP server closes (which waits for open requests), every waiter answers
   * 423 so its client retries elsewhere; from then on duplicates answer 423 at once.
   */
  beforeApplicationShutdown(): void {
    this.stopping.abort();
  }

  /** @internal */
  get signal(): AbortSignal {
    return this.stopping.signal;
  }

  /** @internal A place among the waiters, if there is one. */
  enter(): boolean {
    if (this.waiting >= this.max) return false;
    this.waiting++;
    return true;
  }

  /** @internal */
  leave(): void {
    this.waiting--;
  }

  /**
   * @internal Waiters of one record that wake together (one notification wakes them all)
   * share one claim instead of each sending its own: a claim sent after a waiter began
   * waiting sees at least what woke it, or at worst the waiter waits once more, and its
   * next mark finds the record settled at once. Only the claimant may take a `claimed`
   * result; the others claim for themselves (and find the record in progress).
   */
  claimAgain(
    id: string,
    waitingSince: number,
    claim: () => Promise<ClaimResult>,
  ): Promise<ClaimResult> {
    const shared = this.claims.get(id);
    if (shared && shared.sentAt >= waitingSince) {
      return shared.result.then((result) => (result.outcome === 'claimed' ? claim() : result));
    }
    const entry = { sentAt: performance.now(), result: claim() };
    this.claims.set(id, entry);
    const forget = () => {
      if (this.claims.get(id) === entry) this.claims.delete(id);
    };
    entry.result.then(forget, forget);
    return entry.result;
  }

  /** @internal */
  warn(message: string): void {
    this.logger.warn(message);
  }
}

/** One call's wait, across the claims it makes until it is answered. */
export class InFlightWait {
  private entered = false;
  private waitingSince = 0;
  private readonly id: string;
  /** Shutdown, or (once waiting) the caller leaving. */
  private signal: AbortSignal;
  private stopWatching?: () => void;

  constructor(
    private readonly waiters: IdempotencyWaiters,
    private readonly store: IdempotencyStore,
    private readonly record: InFlightRecord,
    private readonly deadline: number,
    private readonly watchCaller?: (gone: () => void) => () => void,
  ) {
    this.signal = waiters.signal;
    this.id = `${record.scope.length}:${record.scope}${record.key}\n${record.fingerprint.toString('base64')}`;
  }

  /**
   * Waits until the record may have settled. Resolves true when the caller should claim
   * again, false when it must answer 423 now: the wait is over, too many are waiting, or
   * the application is shutting down.
   */
  async next(leaseLeftMs: number): Promise<boolean> {
    const left = this.deadline - Date.now();
    if (left <= 0 || this.signal.aborted) return false;
    if (!this.entered) {
      if (!(this.entered = this.waiters.enter())) return false;
      // A caller that leaves stops waiting, and gives its place back.
      if (this.watchCaller) {
        const gone = new AbortController();
        this.signal = AbortSignal.any([this.signal, gone.signal]);
        this.stopWatching = this.watchCaller(() => gone.abort());
        if (this.signal.aborted) return false;
      }
    }
    const { signal } = this;
    this.waitingSince = performance.now();
    // No longer than the lease: once it passes, the next claim takes the record over.
    const timeoutMs = Math.max(1, Math.min(left, Math.ceil(leaseLeftMs) + 1));
    try {
      // A store written against the contract before it could wait gets the default poll.
      const awaitSettled = this.store.awaitSettled ?? IdempotencyStore.prototype.awaitSettled;
      await awaitSettled.call(this.store, this.record, timeoutMs, signal);
    } catch (error) {
      // A failing wait must not spin on claims: pause, then let the claim decide (it
      // answers 503 if the database is what failed).
      this.waiters.warn(
        `Waiting for key ${idempotencyKeyHash(this.record.scope, this.record.key)} failed, polling instead: ${error instanceof Error ? error.message : String(error)}`,
      );
      await sleep(Math.min(timeoutMs, WAIT_BLIND_POLL_MS), undefined, { signal }).catch(
        () => undefined,
      );
    }
    return !signal.aborted;
  }

  /** Claims again after next(), sharing the claim with waiters that woke with this one. */
  claimAgain(claim: () => Promise<ClaimResult>): Promise<ClaimResult> {
    return this.waiters.claimAgain(this.id, this.waitingSince, claim);
  }

  /** Gives the place back; call once the call is answered. */
  end(): void {
    if (this.entered) this.waiters.leave();
    this.entered = false;
    this.stopWatching?.();
    this.stopWatching = undefined;
  }
}
