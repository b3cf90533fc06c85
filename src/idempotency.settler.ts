// Settles a claimed record once its response is written: stores a 2xx, releases the key
// otherwise, and (transactional routes) commits the handler's writes with the response or
// rolls both back. Returns a replacement when what is being sent must not reach the client.
import { Inject, Injectable, Logger } from '@nestjs/common';
import {
  IdempotencyLeaseLostException,
  IdempotencyStoreUnavailableException,
  IdempotencyUnsupportedResponseException,
  type IdempotencyException,
} from './idempotency.exceptions.js';
import type { ResolvedOptions } from './idempotency.options.js';
import { IDEMPOTENCY_DATA_SOURCE, type IdempotencyConnection } from './idempotency.providers.js';
import type { CapturedResponse, ReplacementResponse } from './idempotency-response.js';
import { IdempotencySettlements } from './idempotency.settlements.js';
import { IdempotencyStore, type ClaimedRecord } from './idempotency-store.js';
import { OpenTransaction } from './idempotency.transaction.js';
import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';

const COMPLETE_RETRY_FIRST_MS = 250;
const COMPLETE_RETRY_MAX_MS = 5_000;

/** What the route handler itself did, as opposed to what was finally written. */
export class HandlerOutcome {
  private state: 'running' | 'failed' | 'answered' = 'running';
  private status?: number;

  answered(status: number): void {
    this.state = 'answered';
    this.status = status;
  }

  failed(): void {
    this.state = 'failed';
  }

  /**
   * Whether an error response may free the key: only when the handler itself threw or
   * answered with an error status. If it succeeded (or is still running) and something after
   * it failed, its side effects may have happened, so the key stays held until its lease
   * passes rather than letting a retry run them again.
   */
  get releasable(): boolean {
    return this.state === 'failed' || (this.state === 'answered' && !isSuccessStatus(this.status!));
  }
}

@Injectable()
export class IdempotencySettler {
  protected readonly logger = new Logger('Idempotency');

  constructor(
    protected readonly store: IdempotencyStore,
    private readonly settlements: IdempotencySettlements,
    @Inject(IDEMPOTENCY_DATA_SOURCE)
    private readonly connection: IdempotencyConnection | undefined,
  ) {}

  /** Stores a 2xx response or releases the key; shutdown waits for it. */
  settle(
    record: ClaimedRecord,
    captured: CapturedResponse,
    options: ResolvedOptions,
    handler: HandlerOutcome,
  ): Promise<ReplacementResponse | undefined> {
    return this.settlements.track(this.storeOrRelease(record, captured, options, handler));
  }

  /** Commits the handler's writes with the stored response, or rolls both back. */
  settleTransaction(
    transaction: OpenTransaction,
    record: ClaimedRecord,
    captured: CapturedResponse,
    options: ResolvedOptions,
  ): Promise<ReplacementResponse | undefined> {
    return this.settlements.track(this.commit(transaction, record, captured, options));
  }

  /** Opens the transaction a `transactional` route runs in; releases the key if it cannot. */
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

  private async storeOrRelease(
    record: ClaimedRecord,
    captured: CapturedResponse,
    options: ResolvedOptions,
    handler: HandlerOutcome,
  ): Promise<ReplacementResponse | undefined> {
    const succeeded = isSuccessStatus(captured.status);
    if (!succeeded && !handler.releasable) {
      this.logger.warn(
        `Key "${record.key}" (scope "${record.scope}") answered ${captured.status} although its handler did not fail (or had not finished): the key stays held until its lease passes, so the handler does not run again meanwhile.`,
      );
      return undefined;
    }
    try {
      if (!succeeded) {
        if (!(await this.store.release(record))) this.warnLeaseLost(record, 'release');
        return undefined;
      }
      if (await this.store.complete(record, captured, options.retentionMs)) return undefined;
    } catch (error) {
      // The handler ran but its result could not be stored. The record stays claimed, so no
      // duplicate runs meanwhile; the client gets the real result, and storing it is retried
      // in the background until the lease runs out.
      this.logger.error(
        `Could not ${succeeded ? 'store the response for' : 'release'} key "${record.key}" (scope "${record.scope}"): ${describe(error)}`,
      );
      if (succeeded) this.retryComplete(record, captured, options);
      return undefined;
    }
    this.warnLeaseLost(record, 'complete');
    return problemResponse(new IdempotencyLeaseLostException(options.retryAfterSeconds));
  }

  private async commit(
    transaction: OpenTransaction,
    record: ClaimedRecord,
    captured: CapturedResponse,
    options: ResolvedOptions,
  ): Promise<ReplacementResponse | undefined> {
    const succeeded = isSuccessStatus(captured.status);
    let stored = false;
    try {
      if (succeeded) {
        stored = await (this.store as PostgresIdempotencyStore)
          .withExecutor(transaction.executor)
          .complete(record, captured, options.retentionMs);
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
      return problemResponse(new IdempotencyStoreUnavailableException(options.retryAfterSeconds));
    }
    if (!succeeded) {
      await this.store.release(record).catch((error: unknown) => {
        this.logger.error(`Could not release key "${record.key}": ${describe(error)}`);
      });
      return undefined;
    }
    this.warnLeaseLost(record, 'commit');
    return problemResponse(new IdempotencyLeaseLostException(options.retryAfterSeconds));
  }

  /**
   * Keeps trying to store a response whose first write failed (a database blip), with
   * backoff, until shortly before the lease would let another request run the handler again.
   * Timers are unref'd: a process that is shutting down does not wait for them.
   */
  private retryComplete(
    record: ClaimedRecord,
    captured: CapturedResponse,
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
        this.store.complete(record, captured, options.retentionMs).then(
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

function isSuccessStatus(status: number): boolean {
  return status >= 200 && status < 300;
}

function problemResponse(problem: IdempotencyException): ReplacementResponse {
  return {
    status: problem.getStatus(),
    headers: { ...problem.headers, 'content-type': 'application/problem+json' },
    body: JSON.stringify(problem.getProblem()),
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
