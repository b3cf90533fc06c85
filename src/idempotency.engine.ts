// The transport-free core: claims a key, and settles a claimed record once the handler's
// outcome is known (store it, release the key, or hold it). It knows nothing of HTTP,
// GraphQL or messages: each context file reads the key, fingerprints the call, runs the
// handler and shapes the answers, and calls in here for every decision that touches the
// record.
import { Inject, Injectable, Logger, Optional } from '@nestjs/common';
import {
  IdempotencyKeyReusedException,
  IdempotencyLeaseLostException,
  IdempotencyRequestInFlightException,
  IdempotencyStoreUnavailableException,
  IdempotencyUnsupportedResponseException,
  type IdempotencyException,
} from './idempotency.exceptions.js';
import { keepLeaseAlive } from './idempotency.lease.js';
import type { ResolvedOptions } from './idempotency.options.js';
import { IDEMPOTENCY_DATA_SOURCE, type IdempotencyConnection } from './idempotency.providers.js';
import { IdempotencySettlements } from './idempotency.settlements.js';
import {
  IdempotencyStore,
  IdempotencyStoreTimeoutError,
  type ClaimedRecord,
  type LateClaim,
  type StoredResponse,
} from './idempotency-store.js';
import { OpenTransaction } from './idempotency.transaction.js';
import { IdempotencyWaiters } from './idempotency.waiters.js';
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
  protected readonly logger = new Logger('Idempotency');

  constructor(
    protected readonly store: IdempotencyStore,
    private readonly settlements: IdempotencySettlements,
    @Optional()
    @Inject(IDEMPOTENCY_DATA_SOURCE)
    private readonly connection: IdempotencyConnection | undefined,
    @Optional() private readonly waiters: IdempotencyWaiters = new IdempotencyWaiters(),
  ) {}

  /**
   * Claims the key for this call, or finds the stored result to replay. Throws the other
   * outcomes: 422 (another request used the key), 423 (still running), 503 (store failing).
   * With `waitInFlightMs`, a call whose key is still running waits for it first and claims
   * again each time it may have settled (see IdempotencyWaiters).
   */
  async admit(call: IdempotentCall): Promise<Admission> {
    const { scope, key, fingerprint, options } = call;
    const wait = this.waiters.start(
      this.store,
      { scope, key, fingerprint },
      options.waitInFlightMs,
    );
    try {
      let result = await this.claim(call);
      for (;;) {
        switch (result.outcome) {
          case 'claimed':
            return { outcome: 'claimed', record: result.record };
          case 'completed':
            return { outcome: 'replay', response: result.response };
          case 'mismatch':
            throw new IdempotencyKeyReusedException();
          case 'in_progress': {
            if (wait && (await wait.next(result.leaseLeftMs))) {
              result = await wait.claimAgain(() => this.claim(call));
              continue;
            }
            const leaseLeft = Math.ceil(result.leaseLeftMs / 1000);
            throw new IdempotencyRequestInFlightException(
              Math.max(1, Math.min(options.retryAfterSeconds, leaseLeft)),
            );
          }
        }
      }
    } finally {
      wait?.end();
    }
  }

  private async claim({ scope, key, fingerprint, options }: IdempotentCall) {
    try {
      return await this.store.claim({
        scope,
        key,
        fingerprint,
        leaseMs: options.leaseMs,
        retentionMs: options.retentionMs,
        timeoutMs: options.statementTimeoutMs,
      });
    } catch (error) {
      this.logger.error(`Could not claim key "${key}": ${describe(error)}`);
      if (error instanceof IdempotencyStoreTimeoutError && error.lateClaim) {
        this.releaseLateClaim(error.lateClaim, options);
      }
      throw new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
  }

  /** Starts renewing the record's lease when the route asks for it; returns the stopper. */
  keepLeaseAlive(record: ClaimedRecord, options: ResolvedOptions): () => void {
    return options.renewLease
      ? keepLeaseAlive(this.store, record, options, this.logger)
      : () => undefined;
  }

  /** Opens the transaction a `transactional` call runs in; releases the key if it cannot. */
  async begin(record: ClaimedRecord, options: ResolvedOptions): Promise<OpenTransaction> {
    if (!(this.store instanceof PostgresIdempotencyStore) || !this.connection) {
      await this.release(record, options);
      throw new IdempotencyUnsupportedResponseException(
        'transactional: true needs the Postgres store, which shares a transaction with the handler.',
      );
    }
    try {
      return await OpenTransaction.begin(this.connection, options.statementTimeoutMs);
    } catch (error) {
      this.logger.error(`Could not open a transaction for key "${record.key}": ${describe(error)}`);
      await this.release(record, options);
      throw new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
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
      this.logger.warn(
        `Key "${record.key}" (scope "${record.scope}") ${settlement.reason}: the key stays held until its lease passes, so the handler does not run again meanwhile.`,
      );
      return undefined;
    }
    if (settlement.action === 'release') {
      await this.release(record, options);
      return undefined;
    }
    try {
      if (
        await this.store.complete(record, settlement.response, options.retentionMs, {
          timeoutMs: options.statementTimeoutMs,
        })
      ) {
        return undefined;
      }
    } catch (error) {
      // The handler ran but its result could not be stored. The record stays claimed, so no
      // duplicate runs meanwhile; the caller gets the real result, and storing it is retried
      // in the background until the lease runs out.
      this.logger.error(
        `Could not store the response for key "${record.key}" (scope "${record.scope}"): ${describe(error)}`,
      );
      this.retryComplete(
        record,
        settlement.response,
        options,
        error instanceof IdempotencyStoreTimeoutError,
      );
      return undefined;
    }
    this.warnLeaseLost(record, 'complete');
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
    let stored = false;
    try {
      if (settlement.action === 'store') {
        stored = await (this.store as PostgresIdempotencyStore)
          .withExecutor(transaction.executor)
          .complete(record, settlement.response, options.retentionMs, { timeoutMs: left() });
      }
      if (stored) {
        await transaction.commit(left());
        return undefined;
      }
      await transaction.rollback(left());
    } catch (error) {
      this.logger.error(
        `Could not commit key "${record.key}" (scope "${record.scope}"); its writes were rolled back: ${describe(error)}`,
      );
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
    this.warnLeaseLost(record, 'commit');
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
    try {
      if (timeoutMs <= 0) throw new Error('no time left');
      if (!(await this.store.release(record, { timeoutMs }))) this.warnLeaseLost(record, 'release');
    } catch (error) {
      this.logger.error(
        `Could not release key "${record.key}" (scope "${record.scope}"), retrying in the background: ${describe(error)}`,
      );
      this.retryInBackground(
        record,
        options,
        async () => {
          if (await this.store.release(record, { timeoutMs: options.statementTimeoutMs })) {
            this.logger.log(`Released key "${record.key}" on retry`);
          }
          return true;
        },
        `Gave up releasing key "${record.key}" (scope "${record.scope}"): it stays held until its lease passes.`,
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
      this.retryInBackground(record, options, async () => {
        const released = await this.store.release(record, {
          timeoutMs: options.statementTimeoutMs,
        });
        if (released) {
          this.logger.warn(
            `Released key "${record.key}" (scope "${record.scope}"): its claim took effect after the request had timed out.`,
          );
        }
        return released || taken === true;
      });
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
    this.retryInBackground(
      record,
      options,
      async () => {
        const stored = await this.store.complete(record, response, options.retentionMs, {
          timeoutMs: options.statementTimeoutMs,
        });
        if (stored) {
          this.logger.log(`Stored the response for key "${record.key}" on retry`);
        } else if (firstTimedOut) {
          // A statement that timed out can still be applied once the database answers.
          this.logger.warn(
            `Key "${record.key}" (scope "${record.scope}") was no longer in progress when its response was stored on retry: the first attempt, which timed out, went through after all, or another request took the key over.`,
          );
        } else {
          this.warnLeaseLost(record, 'complete');
        }
        return true;
      },
      `Gave up storing the response for key "${record.key}" (scope "${record.scope}"): once its lease passes, a retry runs the handler again.`,
    );
  }

  /**
   * Runs `attempt` with backoff until it returns true, or until shortly before the record's
   * lease passes (after which another request may take the key over anyway). A rejection
   * counts as "not yet". Timers are unref'd: a process that is shutting down does not wait.
   */
  private retryInBackground(
    record: ClaimedRecord,
    options: ResolvedOptions,
    attempt: () => Promise<boolean>,
    giveUpMessage?: string,
  ): void {
    const deadline = Date.now() + options.leaseMs - RETRY_FIRST_MS;
    const next = (delayMs: number) => {
      if (Date.now() + delayMs > deadline) {
        if (giveUpMessage) this.logger.error(giveUpMessage);
        return;
      }
      const again = () => next(Math.min(delayMs * 2, RETRY_MAX_MS));
      setTimeout(() => {
        attempt().then((done) => done || again(), again);
      }, delayMs).unref();
    };
    next(RETRY_FIRST_MS);
  }

  private warnLeaseLost(record: ClaimedRecord, action: string): void {
    this.logger.warn(
      `Lease lost for key "${record.key}" (scope "${record.scope}"): another request took it over before this one could ${action}; its result was discarded. Raise leaseMs above the slowest handler run.`,
    );
  }
}

export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
