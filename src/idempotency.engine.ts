// The transport-free core: claims a key, and settles a claimed record once the handler's
// outcome is known (store it, release the key, or hold it). It knows nothing of HTTP,
// GraphQL or messages: each context file reads the key, fingerprints the call, runs the
// handler and shapes the answers, and calls in here for every decision that touches the
// record.
import { Inject, Injectable, Optional, type ExecutionContext } from '@nestjs/common';
import { Observable } from 'rxjs';
import {
  IdempotencyKeyReusedException,
  IdempotencyLeaseLostException,
  IdempotencyRequestInFlightException,
  IdempotencyStoreUnavailableException,
  IdempotencyUnsupportedResponseException,
  type IdempotencyException,
} from './idempotency.exceptions.js';
import {
  idempotencyKeyHash,
  type IdempotencyEvent,
  type IdempotencyEventBase,
} from './idempotency.events.js';
import { IdempotencyEvents } from './idempotency-events.service.js';
import { keepLeaseAlive } from './idempotency.lease.js';
import type { IdempotencyLog } from './idempotency.log.js';
import type { ResolvedOptions } from './idempotency.options.js';
import { IDEMPOTENCY_DATA_SOURCE, type IdempotencyConnection } from './idempotency.providers.js';
import { IdempotencySettlements, type BackgroundRetry } from './idempotency.settlements.js';
import {
  IdempotencyStore,
  IdempotencyStoreTimeoutError,
  type ClaimedRecord,
  type LateClaim,
  type StoredResponse,
} from './idempotency-store.js';
import { OpenTransaction } from './idempotency.transaction.js';
import { IdempotencyWaiters, type InFlightWait } from './idempotency.waiters.js';
import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';

const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5_000;

/** One keyed call, as every context describes it. */
export interface IdempotentCall {
  scope: string;
  key: string;
  /** SHA-256 of the operation (see computeFingerprint). */
  fingerprint: Buffer;
  options: ResolvedOptions;
  /** The handler's context, named in events; absent for calls made outside a handler. */
  context?: ExecutionContext;
  /** Calls `gone` if the caller leaves; returns the stopper (IdempotencyContextAdapter.watchCaller). */
  watchCaller?: (gone: () => void) => () => void;
}

/** What events about a claimed record say, kept from its claim until it is settled. */
interface ClaimFacts extends IdempotencyEventBase {
  claimedAt: number;
}

/** What the caller may do with a key: run the handler, or answer with the stored result. */
export type Admission =
  { outcome: 'claimed'; record: ClaimedRecord } | { outcome: 'replay'; response: StoredResponse };

/** What to do with a claimed record once the handler's outcome is known. */
export type Settlement =
  /** The handler succeeded: store its response for replays. */
  | { action: 'store'; response: StoredResponse }
  /** The handler failed: free the key so a retry runs it again. */
  | { action: 'release' }
  /**
   * Something failed after the handler may have had its effects: keep the key until its
   * lease passes, so a retry does not repeat them meanwhile.
   */
  | { action: 'hold'; reason: string };

@Injectable()
export class IdempotencyEngine {
  protected readonly logger: IdempotencyLog;
  /** Facts about claimed records for their later events, kept only while someone listens. */
  private readonly claims = new WeakMap<ClaimedRecord, ClaimFacts>();

  constructor(
    protected readonly store: IdempotencyStore,
    private readonly settlements: IdempotencySettlements,
    @Optional()
    @Inject(IDEMPOTENCY_DATA_SOURCE)
    private readonly connection: IdempotencyConnection | undefined,
    @Optional() private readonly waiters: IdempotencyWaiters = new IdempotencyWaiters(),
    @Optional() readonly events: IdempotencyEvents = new IdempotencyEvents(),
  ) {
    this.logger = events.log;
  }

  /**
   * Claims the key for this call, or finds the stored result to replay. Throws the other
   * outcomes: 422 (another request used the key), 423 (still running), 503 (store failing).
   * With `waitInFlightMs`, a call whose key is still running waits for it first and claims
   * again each time it may have settled (see IdempotencyWaiters).
   */
  async admit(call: IdempotentCall): Promise<Admission> {
    const { scope, key, fingerprint, options } = call;
    const started = performance.now();
    let waitedMs = 0;
    const wait = this.waiters.start(
      this.store,
      { scope, key, fingerprint },
      options.waitInFlightMs,
      call.watchCaller,
    );
    try {
      let result = await this.claim(call);
      for (;;) {
        switch (result.outcome) {
          case 'claimed':
            if (result.takenOver) this.tookOver(call);
            if (this.events.active) {
              const facts = { ...this.describe(call), claimedAt: performance.now() };
              this.claims.set(result.record, facts);
              this.report('claimed', facts, started, waitedMs);
            }
            return { outcome: 'claimed', record: result.record };
          case 'completed': {
            const { status } = result.response;
            this.report('replayed', call, started, waitedMs, { status });
            return { outcome: 'replay', response: result.response };
          }
          case 'mismatch':
            this.report('mismatch', call, started, waitedMs);
            throw new IdempotencyKeyReusedException();
          case 'in_progress': {
            const waitFrom = performance.now();
            if (wait && (await wait.next(result.leaseLeftMs))) {
              waitedMs += performance.now() - waitFrom;
              result = await this.claim(call, wait);
              continue;
            }
            if (wait) waitedMs += performance.now() - waitFrom;
            const leaseLeft = Math.ceil(result.leaseLeftMs / 1000);
            const retryAfterSeconds = Math.max(1, Math.min(options.retryAfterSeconds, leaseLeft));
            this.report('in-flight', call, started, waitedMs, { retryAfterSeconds });
            throw new IdempotencyRequestInFlightException(retryAfterSeconds);
          }
        }
      }
    } finally {
      wait?.end();
    }
  }

  /** Reports an admission outcome, building it only when someone listens. */
  private report<T extends 'claimed' | 'replayed' | 'in-flight' | 'mismatch'>(
    type: T,
    call: IdempotentCall | ClaimFacts,
    started: number,
    waitedMs: number,
    fields?: T extends 'replayed'
      ? { status: number }
      : T extends 'in-flight'
        ? { retryAfterSeconds: number }
        : undefined,
  ): void {
    if (!this.events.wants(type)) return;
    const claimMs = performance.now() - started;
    const base = 'fingerprint' in call ? this.describe(call) : baseOf(call);
    this.events.emit({ type, ...base, claimMs, waitedMs, ...fields } as IdempotencyEvent);
  }

  /** The fields every event about this call carries: never the raw key. */
  private describe({ scope, key, context }: IdempotentCall): IdempotencyEventBase {
    return {
      context: context?.getType(),
      handler: context && `${context.getClass().name}.${context.getHandler().name}`,
      scope,
      keyHash: idempotencyKeyHash(scope, key),
    };
  }

  /** What events about a claimed record say (with no listener at its claim: scope and hash). */
  private factsOf(record: ClaimedRecord): ClaimFacts {
    return (
      this.claims.get(record) ?? {
        scope: record.scope,
        keyHash: idempotencyKeyHash(record.scope, record.key),
        claimedAt: performance.now(),
      }
    );
  }

  /**
   * Claims the key; with `wait`, shares the claim with waiters that woke with this one. A
   * shared claim that fails fails each of them: each is reported (its own 503), and the one
   * that sent it looks after a claim that may still take effect.
   */
  private async claim(call: IdempotentCall, wait?: InFlightWait) {
    const { scope, key, fingerprint, options } = call;
    const started = performance.now();
    const request = {
      scope,
      key,
      fingerprint,
      leaseMs: options.leaseMs,
      retentionMs: options.retentionMs,
      timeoutMs: options.statementTimeoutMs,
    };
    let sent = !wait;
    try {
      return await (wait
        ? wait.claimAgain(() => {
            sent = true;
            return this.store.claim(request);
          })
        : this.store.claim(request));
    } catch (error) {
      this.storeFailed('claim', this.describe(call), started, error);
      if (sent && error instanceof IdempotencyStoreTimeoutError && error.lateClaim) {
        this.releaseLateClaim(error.lateClaim, options);
      }
      throw new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
  }

  /** Starts renewing the record's lease when the route asks for it; returns the stopper. */
  keepLeaseAlive(record: ClaimedRecord, options: ResolvedOptions): () => void {
    if (!options.renewLease) return () => undefined;
    return keepLeaseAlive(this.store, record, options, {
      renewed: (storeMs) => {
        if (this.events.wants('lease-renewed')) {
          this.events.emit({ type: 'lease-renewed', ...this.baseOf(record), storeMs });
        }
      },
      lost: () => this.leaseLost(record, 'renew'),
      failed: (started, error) =>
        this.storeFailed('renew', this.baseOf(record), started, error, 'warn'),
    });
  }

  /** Opens the transaction a `transactional` call runs in; releases the key if it cannot. */
  async begin(record: ClaimedRecord, options: ResolvedOptions): Promise<OpenTransaction> {
    if (!(this.store instanceof PostgresIdempotencyStore) || !this.connection) {
      await this.release(record, options);
      throw new IdempotencyUnsupportedResponseException(
        'transactional: true needs the Postgres store, which shares a transaction with the handler.',
      );
    }
    const started = performance.now();
    try {
      return await OpenTransaction.begin(this.connection, options.statementTimeoutMs);
    } catch (error) {
      this.storeFailed('begin', this.baseOf(record), started, error);
      await this.release(record, options);
      throw new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
  }

  /**
   * `begin` for a caller that may go away while it waits (an outer timeout unsubscribes):
   * a transaction that opens after that is rolled back and the key freed, instead of holding
   * a pool connection idle in a transaction, and the key, for good.
   */
  transactionFor(record: ClaimedRecord, options: ResolvedOptions): Observable<OpenTransaction> {
    return new Observable<OpenTransaction>((subscriber) => {
      this.begin(record, options).then(
        (transaction) => {
          if (subscriber.closed) {
            void this.abandon(record, options, transaction);
            return;
          }
          subscriber.next(transaction);
          subscriber.complete();
        },
        (error: unknown) => subscriber.error(error),
      );
    });
  }

  /**
   * The caller went away after the claim and before its handler ran: nothing ran, so the
   * key is freed (and the transaction opened for it rolled back) rather than left to its lease.
   */
  async abandon(
    record: ClaimedRecord,
    options: ResolvedOptions,
    transaction?: OpenTransaction,
  ): Promise<void> {
    await transaction?.rollback(options.statementTimeoutMs).catch(() => undefined);
    await this.release(record, options).catch(() => undefined);
  }

  /**
   * Settles a claimed record; with a transaction, commits the handler's writes with the
   * stored response or rolls both back. Resolves to a problem to answer instead of the
   * handler's result when that result must not reach the caller (its lease was lost, or
   * its writes were rolled back). Shutdown waits for every settlement.
   */
  settle(
    record: ClaimedRecord,
    settlement: Settlement,
    options: ResolvedOptions,
    transaction?: OpenTransaction,
  ): Promise<IdempotencyException | undefined> {
    return this.settlements.track(
      transaction
        ? this.commit(transaction, record, settlement, options)
        : this.storeOrRelease(record, settlement, options),
    );
  }

  private async storeOrRelease(
    record: ClaimedRecord,
    settlement: Settlement,
    options: ResolvedOptions,
  ): Promise<IdempotencyException | undefined> {
    if (settlement.action === 'hold') {
      const facts = this.factsOf(record);
      this.logger.warn(
        `Key ${facts.keyHash} (scope "${record.scope}"${at(facts)}) ${settlement.reason}: the key stays held until its lease passes, so the handler does not run again meanwhile.`,
      );
      if (this.events.wants('held')) {
        const handlerMs = performance.now() - facts.claimedAt;
        this.events.emit({ type: 'held', ...baseOf(facts), reason: settlement.reason, handlerMs });
      }
      return undefined;
    }
    if (settlement.action === 'release') {
      await this.release(record, options);
      return undefined;
    }
    const settling = performance.now();
    try {
      if (
        await this.store.complete(record, settlement.response, options.retentionMs, {
          timeoutMs: options.statementTimeoutMs,
        })
      ) {
        this.completed(record, settlement.response.status, settling);
        return undefined;
      }
    } catch (error) {
      // The handler ran but its result could not be stored. The record stays claimed, so no
      // duplicate runs meanwhile; the caller gets the real result, and storing it is retried
      // in the background until the lease runs out.
      this.storeFailed('complete', this.baseOf(record), settling, error);
      this.retryComplete(
        record,
        settlement.response,
        options,
        error instanceof IdempotencyStoreTimeoutError,
      );
      return undefined;
    }
    this.leaseLost(record, 'complete');
    return new IdempotencyLeaseLostException(options.retryAfterSeconds);
  }

  /**
   * Stores the response in the handler's transaction and commits both, or rolls both back.
   * The whole settlement (store, commit, and on failure the first release attempt) shares one
   * `statementTimeoutMs`.
   */
  private async commit(
    transaction: OpenTransaction,
    record: ClaimedRecord,
    settlement: Settlement,
    options: ResolvedOptions,
  ): Promise<IdempotencyException | undefined> {
    const deadline = Date.now() + options.statementTimeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    const settling = performance.now();
    let stored = false;
    try {
      if (settlement.action === 'store') {
        stored = await (this.store as PostgresIdempotencyStore)
          .withExecutor(transaction.executor)
          .complete(record, settlement.response, options.retentionMs, { timeoutMs: left() });
      }
      if (stored) {
        await transaction.commit(left());
        this.completed(
          record,
          (settlement as { response: StoredResponse }).response.status,
          settling,
        );
        return undefined;
      }
      await transaction.rollback(left());
    } catch (error) {
      this.storeFailed('commit', this.baseOf(record), settling, error);
      await transaction.rollback(left()).catch(() => undefined);
      // If COMMIT itself failed midway, the record may be completed after all: release only
      // deletes a record that is still in progress, so it cannot undo a commit.
      await this.release(record, options, deadline);
      return new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
    if (settlement.action !== 'store') {
      // Rolled back, so nothing the handler wrote survives: the key can run again.
      await this.release(record, options, deadline);
      return undefined;
    }
    this.leaseLost(record, 'commit');
    return new IdempotencyLeaseLostException(options.retryAfterSeconds);
  }

  /**
   * Frees the key of a record whose handler failed or was rolled back, so a retry runs it
   * again. A release that fails (the database is away, or `deadline` has passed) is retried
   * in the background: otherwise the key would stay held until its lease passes, while the
   * client was told to retry.
   */
  private async release(
    record: ClaimedRecord,
    options: ResolvedOptions,
    deadline = Date.now() + options.statementTimeoutMs,
  ): Promise<void> {
    const timeoutMs = deadline - Date.now();
    const settling = performance.now();
    try {
      if (timeoutMs <= 0) throw new Error('no time left');
      if (await this.store.release(record, { timeoutMs })) {
        if (this.events.wants('released')) {
          const facts = this.factsOf(record);
          const handlerMs = settling - facts.claimedAt;
          const storeMs = performance.now() - settling;
          this.events.emit({ type: 'released', ...baseOf(facts), handlerMs, storeMs });
        }
      } else {
        this.leaseLost(record, 'release');
      }
    } catch (error) {
      this.storeFailed('release', this.baseOf(record), settling, error);
      const hash = this.factsOf(record).keyHash;
      this.settlements.trackRetry(
        this.retryInBackground(
          record,
          options,
          async () => {
            if (await this.store.release(record, { timeoutMs: options.statementTimeoutMs })) {
              this.logger.log(`Released key ${hash} on retry`);
            }
            return true;
          },
          {
            giveUp: `Gave up releasing key ${hash} (scope "${record.scope}"): it stays held until its lease passes.`,
            lastWords: `Shutting down: could not release key ${hash} (scope "${record.scope}") on a last attempt; it stays held until its lease passes.`,
          },
        ),
      );
    }
  }

  /**
   * A claim that timed out may still take effect (a frozen database resuming): release it
   * if it did, so the client's retry with the same key finds the key free instead of held
   * for the whole lease. When its fate is unknown, keeps looking for it until the lease
   * would have passed anyway.
   */
  private releaseLateClaim({ record, applied }: LateClaim, options: ResolvedOptions): void {
    void applied.then((taken) => {
      if (taken === false) return;
      this.settlements.trackRetry(
        this.retryInBackground(record, options, async () => {
          const released = await this.store.release(record, {
            timeoutMs: options.statementTimeoutMs,
          });
          if (released) {
            this.logger.warn(
              `Released key ${this.factsOf(record).keyHash} (scope "${record.scope}"): its claim took effect after the request had timed out.`,
            );
          }
          return released || taken === true;
        }),
      );
    });
  }

  /**
   * Keeps trying to store a response whose first write failed (a database blip), with
   * backoff, until shortly before the lease would let another request run the handler again.
   */
  private retryComplete(
    record: ClaimedRecord,
    response: StoredResponse,
    options: ResolvedOptions,
    firstTimedOut: boolean,
  ): void {
    const hash = this.factsOf(record).keyHash;
    // Tracked like the first store, so shutdown waits for it: a response dropped here is
    // lost for good, and a retry after the lease runs the handler again. Bounded by the lease.
    void this.settlements.track(
      this.retryInBackground(
        record,
        options,
        async () => {
          const settling = performance.now();
          const stored = await this.store.complete(record, response, options.retentionMs, {
            timeoutMs: options.statementTimeoutMs,
          });
          if (stored) {
            this.logger.log(`Stored the response for key ${hash} on retry`);
            this.completed(record, response.status, settling);
          } else if (firstTimedOut) {
            // A statement that timed out can still be applied once the database answers.
            this.logger.warn(
              `Key ${hash} (scope "${record.scope}") was no longer in progress when its response was stored on retry: the first attempt, which timed out, went through after all, or another request took the key over.`,
            );
          } else {
            this.leaseLost(record, 'complete');
          }
          return true;
        },
        {
          giveUp: `Gave up storing the response for key ${hash} (scope "${record.scope}"): once its lease passes, a retry runs the handler again.`,
        },
        true,
      ).finished,
    );
  }

  /**
   * Runs `attempt` with backoff until it returns true, or until shortly before the record's
   * lease passes (after which another request may take the key over anyway). A rejection
   * counts as "not yet". `finished` resolves once it succeeded or gave up. Timers are
   * unref'd unless `keepAlive`. lastAttempt() (shutdown) runs the next attempt at once, or
   * right after the one in flight, and ends it there: `lastWords` is logged if that fails.
   */
  private retryInBackground(
    record: ClaimedRecord,
    options: ResolvedOptions,
    attempt: () => Promise<boolean>,
    messages: { giveUp?: string; lastWords?: string } = {},
    keepAlive = false,
  ): BackgroundRetry {
    const deadline = Date.now() + options.leaseMs - RETRY_FIRST_MS;
    let timer: NodeJS.Timeout | undefined;
    let running = false;
    let last = false;
    let oneMore = false;
    let over = false;
    let finished!: () => void;
    const done = new Promise<void>((resolve) => (finished = resolve));
    const finish = (message?: string) => {
      over = true;
      clearTimeout(timer);
      if (message) this.logger.error(message);
      finished();
    };
    const run = (delayMs: number) => {
      running = true;
      timer = undefined;
      attempt()
        .catch(() => false)
        .then((succeeded) => {
          running = false;
          if (succeeded) finish();
          else if (oneMore) {
            oneMore = false;
            run(0);
          } else if (last) finish(messages.lastWords);
          else schedule(Math.min(delayMs * 2, RETRY_MAX_MS));
        });
    };
    const schedule = (delayMs: number) => {
      if (Date.now() + delayMs > deadline) return finish(messages.giveUp);
      timer = setTimeout(() => run(delayMs), delayMs);
      if (!keepAlive) timer.unref();
    };
    schedule(RETRY_FIRST_MS);
    return {
      finished: done,
      lastAttempt: () => {
        if (over || last) return;
        last = true;
        // An attempt in flight may have been sent before the database came back: the last
        // one follows it. Either way, at most two statement timeouts.
        if (running) oneMore = true;
        else {
          clearTimeout(timer);
          run(0);
        }
      },
    };
  }

  /** This call took its key over from a request whose lease had passed. */
  private tookOver(call: IdempotentCall): void {
    const base = this.describe(call);
    this.logger.warn(
      `Took over key ${base.keyHash} (scope "${base.scope}"${at(base)}): the request that held it let its lease pass, so it crashed or is running longer than leaseMs (if so, it gets 503 idempotency_lease_lost when it finishes).`,
    );
    if (this.events.wants('lease-taken-over')) {
      this.events.emit({ type: 'lease-taken-over', ...base });
    }
  }

  /** The record's response is stored: reports it, with the handler's and the store's time. */
  private completed(record: ClaimedRecord, status: number, settling: number): void {
    if (!this.events.wants('completed')) return;
    const facts = this.factsOf(record);
    const handlerMs = settling - facts.claimedAt;
    const storeMs = performance.now() - settling;
    this.events.emit({ type: 'completed', ...baseOf(facts), status, handlerMs, storeMs });
  }

  private baseOf(record: ClaimedRecord): IdempotencyEventBase {
    return baseOf(this.factsOf(record));
  }

  private leaseLost(
    record: ClaimedRecord,
    phase: 'renew' | 'complete' | 'commit' | 'release',
  ): void {
    const facts = this.factsOf(record);
    const message =
      phase === 'renew'
        ? 'stopped renewing its lease'
        : `could not ${phase}; its result was discarded`;
    this.logger.warn(
      `Lease lost for key ${facts.keyHash} (scope "${record.scope}"${at(facts)}): another request took it over, so this one ${message}. Raise leaseMs above the slowest handler run, or set renewLease.`,
    );
    if (this.events.wants('lease-lost')) {
      this.events.emit({ type: 'lease-lost', ...baseOf(facts), phase });
    }
  }

  /** A store step failed: logged for the operator (with the key's hash) and reported. */
  private storeFailed(
    operation: 'claim' | 'begin' | 'complete' | 'commit' | 'release' | 'renew',
    base: IdempotencyEventBase,
    started: number,
    error: unknown,
    level: 'warn' | 'error' = 'error',
  ): void {
    this.logger[level](
      `Idempotency store unavailable (${operation}) for key ${base.keyHash} (scope "${base.scope}"${at(base)}): ${describe(error)}${STORE_FAILURE_AFTERMATH[operation]}`,
    );
    if (this.events.wants('store-unavailable')) {
      this.events.emit({
        type: 'store-unavailable',
        ...base,
        operation,
        storeMs: performance.now() - started,
        timedOut: error instanceof IdempotencyStoreTimeoutError,
        error: error instanceof Error ? error : new Error(String(error)),
      });
    }
  }
}

/** What happens after a failed store step, for its log line. */
const STORE_FAILURE_AFTERMATH: Record<string, string> = {
  claim: '; answered 503, the handler did not run.',
  begin: '; answered 503, the handler did not run.',
  complete: '; the client got its result, storing it is retried in the background.',
  commit: '; its writes were rolled back and it answered 503.',
  release: '; retrying the release in the background.',
  renew: '; renewing again at the next tick.',
};

/** The event fields of a claim's facts, without its bookkeeping. */
function baseOf({
  context,
  handler,
  scope,
  keyHash,
}: ClaimFacts | IdempotencyEventBase): IdempotencyEventBase {
  return { context, handler, scope, keyHash };
}

/** ", at Handler.method" when the handler is known, for log lines. */
function at({ handler }: IdempotencyEventBase): string {
  return handler ? `, ${handler}` : '';
}

export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
