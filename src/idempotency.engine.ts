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
import { IdempotencyStore, type ClaimedRecord, type StoredResponse } from './idempotency-store.js';
import { OpenTransaction } from './idempotency.transaction.js';
import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';

const COMPLETE_RETRY_FIRST_MS = 250;
const COMPLETE_RETRY_MAX_MS = 5_000;

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
  ) {}

  /**
   * Claims the key for this call, or finds the stored result to replay. Throws the other
   * outcomes: 422 (another request used the key), 423 (still running), 503 (store failing).
   */
  async admit(call: IdempotentCall): Promise<Admission> {
    const { scope, key, fingerprint, options } = call;
    let result;
    try {
      result = await this.store.claim({
        scope,
        key,
        fingerprint,
        leaseMs: options.leaseMs,
        retentionMs: options.retentionMs,
      });
    } catch (error) {
      this.logger.error(`Could not claim key "${key}": ${describe(error)}`);
      throw new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
    switch (result.outcome) {
      case 'claimed':
        return { outcome: 'claimed', record: result.record };
      case 'completed':
        return { outcome: 'replay', response: result.response };
      case 'mismatch':
        throw new IdempotencyKeyReusedException();
      case 'in_progress': {
        const leaseLeft = Math.ceil(result.leaseLeftMs / 1000);
        throw new IdempotencyRequestInFlightException(
          Math.max(1, Math.min(options.retryAfterSeconds, leaseLeft)),
        );
      }
    }
  }

  /** Starts renewing the record's lease when the route asks for it; returns the stopper. */
  keepLeaseAlive(record: ClaimedRecord, options: ResolvedOptions): () => void {
    return options.renewLease
      ? keepLeaseAlive(this.store, record, options.leaseMs, this.logger)
      : () => undefined;
  }

  /** Opens the transaction a `transactional` call runs in; releases the key if it cannot. */
  async begin(record: ClaimedRecord, options: ResolvedOptions): Promise<OpenTransaction> {
    if (!(this.store instanceof PostgresIdempotencyStore) || !this.connection) {
      await this.store.release(record).catch(() => undefined);
      throw new IdempotencyUnsupportedResponseException(
        'transactional: true needs the Postgres store, which shares a transaction with the handler.',
      );
    }
    try {
      return await OpenTransaction.begin(this.connection);
    } catch (error) {
      this.logger.error(`Could not open a transaction for key "${record.key}": ${describe(error)}`);
      await this.store.release(record).catch(() => undefined);
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
    try {
      if (settlement.action === 'release') {
        if (!(await this.store.release(record))) this.warnLeaseLost(record, 'release');
        return undefined;
      }
      if (await this.store.complete(record, settlement.response, options.retentionMs)) {
        return undefined;
      }
    } catch (error) {
      // The handler ran but its result could not be stored. The record stays claimed, so no
      // duplicate runs meanwhile; the caller gets the real result, and storing it is retried
      // in the background until the lease runs out.
      const stored = settlement.action === 'store';
      this.logger.error(
        `Could not ${stored ? 'store the response for' : 'release'} key "${record.key}" (scope "${record.scope}"): ${describe(error)}`,
      );
      if (settlement.action === 'store') this.retryComplete(record, settlement.response, options);
      return undefined;
    }
    this.warnLeaseLost(record, 'complete');
    return new IdempotencyLeaseLostException(options.retryAfterSeconds);
  }

  private async commit(
    transaction: OpenTransaction,
    record: ClaimedRecord,
    settlement: Settlement,
    options: ResolvedOptions,
  ): Promise<IdempotencyException | undefined> {
    let stored = false;
    try {
      if (settlement.action === 'store') {
        stored = await (this.store as PostgresIdempotencyStore)
          .withExecutor(transaction.executor)
          .complete(record, settlement.response, options.retentionMs);
      }
      if (stored) {
        await transaction.commit();
        return undefined;
      }
      await transaction.rollback();
    } catch (error) {
      this.logger.error(
        `Could not commit key "${record.key}" (scope "${record.scope}"); its writes were rolled back: ${describe(error)}`,
      );
      await transaction.rollback().catch(() => undefined);
      // If COMMIT itself failed midway, the record may be completed after all: release only
      // deletes a record that is still in progress, so it cannot undo a commit.
      await this.store.release(record).catch(() => undefined);
      return new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
    if (settlement.action !== 'store') {
      // Rolled back, so nothing the handler wrote survives: the key can run again.
      await this.store.release(record).catch((error: unknown) => {
        this.logger.error(`Could not release key "${record.key}": ${describe(error)}`);
      });
      return undefined;
    }
    this.warnLeaseLost(record, 'commit');
    return new IdempotencyLeaseLostException(options.retryAfterSeconds);
  }

  /**
   * Keeps trying to store a response whose first write failed (a database blip), with
   * backoff, until shortly before the lease would let another request run the handler again.
   * Timers are unref'd: a process that is shutting down does not wait for them.
   */
  private retryComplete(
    record: ClaimedRecord,
    response: StoredResponse,
    options: ResolvedOptions,
  ): void {
    const deadline = Date.now() + options.leaseMs - COMPLETE_RETRY_FIRST_MS;
    const attempt = (delayMs: number) => {
      if (Date.now() + delayMs > deadline) {
        this.logger.error(
          `Gave up storing the response for key "${record.key}" (scope "${record.scope}"): once its lease passes, a retry runs the handler again.`,
        );
        return;
      }
      setTimeout(() => {
        this.store.complete(record, response, options.retentionMs).then(
          (stored) => {
            if (stored) this.logger.log(`Stored the response for key "${record.key}" on retry`);
            else this.warnLeaseLost(record, 'complete');
          },
          () => attempt(Math.min(delayMs * 2, COMPLETE_RETRY_MAX_MS)),
        );
      }, delayMs).unref();
    };
    attempt(COMPLETE_RETRY_FIRST_MS);
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
