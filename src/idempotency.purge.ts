// Frees the space of expired records: the module's background sweep, and the same work as
// one function for applications that prefer their own cron job. A sweep deletes in batches
// for as long as they come back full, up to a time box, so its capacity scales with the
// backlog instead of being capped at a fixed number of rows per interval.
import {
  Inject,
  Injectable,
  Optional,
  type OnApplicationBootstrap,
  type OnModuleDestroy,
} from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';
import { IdempotencyStore } from './idempotency-store.js';
import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';
import { DEFAULT_STATEMENT_TIMEOUT_MS } from './idempotency.constants.js';
import { IdempotencyEvents } from './idempotency-events.service.js';

export const DEFAULT_PURGE_INTERVAL_MS = 60_000;
export const DEFAULT_PURGE_BATCH_SIZE = 5_000;
export const DEFAULT_PURGE_TIME_BOX_MS = 20_000;

export interface PurgeOptions {
  /** Table name, when not the default. @default 'idempotency_records' */
  tableName?: string;
  /** Rows deleted per statement; each statement must finish within `statementTimeoutMs`. @default 5000 */
  batchSize?: number;
  /**
   * How long one sweep keeps deleting, in milliseconds: it goes on while batches come back
   * full, and starts no batch after this. @default 20_000
   */
  timeBoxMs?: number;
  /** Batches per sweep at most, on top of the time box. @default unlimited */
  maxBatches?: number;
  /** Time bound of each batch statement, pool wait included. @default 5_000 */
  statementTimeoutMs?: number;
}

/** What one sweep did. */
export interface PurgeSweep {
  deleted: number;
  batches: number;
  elapsedMs: number;
  /**
   * `'time box'`, `'max batches'` or `'stopped'` (the application shut down): expired
   * records were left for the next sweep.
   */
  stoppedBy: 'drained' | 'time box' | 'max batches' | 'stopped';
}

/**
 * Deletes expired records in batches while they come back full, for `timeBoxMs` at most, and
 * returns how many it deleted. Safe to run from several processes at once.
 * @example await purgeExpiredIdempotencyRecords(dataSource, { batchSize: 5000, timeBoxMs: 60_000 })
 */
export async function purgeExpiredIdempotencyRecords(
  dataSource: DataSource,
  options: PurgeOptions = {},
): Promise<number> {
  const store = PostgresIdempotencyStore.fromDataSource(dataSource, options.tableName);
  return (await sweepExpired(store, options)).deleted;
}

/** One sweep over `store` (see purgeExpiredIdempotencyRecords). */
export async function sweepExpired(
  store: IdempotencyStore,
  options: Omit<PurgeOptions, 'tableName'> = {},
  /** Hears each batch: how many it deleted and how long its statement took. */
  onBatch?: (deleted: number, storeMs: number) => void,
  /** Once aborted, no further batch starts (the one in flight finishes). */
  signal?: AbortSignal,
): Promise<PurgeSweep> {
  const batchSize = options.batchSize ?? DEFAULT_PURGE_BATCH_SIZE;
  // 0 (or less) would never come back short of a full batch: empty batches until the time box.
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`Purge batchSize must be a whole number of at least 1, got ${batchSize}.`);
  }
  const timeBoxMs = options.timeBoxMs ?? DEFAULT_PURGE_TIME_BOX_MS;
  const maxBatches = options.maxBatches ?? Infinity;
  const timeoutMs = options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  const started = Date.now();
  const result: PurgeSweep = { deleted: 0, batches: 0, elapsedMs: 0, stoppedBy: 'drained' };
  for (;;) {
    const batchStarted = performance.now();
    const deleted = await store.purgeExpired(batchSize, { timeoutMs });
    onBatch?.(deleted, performance.now() - batchStarted);
    result.deleted += deleted;
    result.batches++;
    result.elapsedMs = Date.now() - started;
    if (deleted < batchSize) break;
    if (signal?.aborted) {
      result.stoppedBy = 'stopped';
      break;
    }
    if (result.elapsedMs >= timeBoxMs) {
      result.stoppedBy = 'time box';
      break;
    }
    if (result.batches >= maxBatches) {
      result.stoppedBy = 'max batches';
      break;
    }
    // Between batches, whatever else waits for the event loop or the pool goes first.
    await new Promise((resolve) => setImmediate(resolve));
  }
  return result;
}

/** Runs the sweep every `purge.intervalMs` while the application runs. */
@Injectable()
export class IdempotencyPurger implements OnApplicationBootstrap, OnModuleDestroy {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  /** Aborted on shutdown: a sweep in progress starts no further batch. */
  private readonly stopping = new AbortController();

  constructor(
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) private readonly options: IdempotencyModuleOptions,
    private readonly store: IdempotencyStore,
    @Optional() private readonly events: IdempotencyEvents = new IdempotencyEvents(options),
  ) {}

  private get logger() {
    return this.events.log;
  }

  onApplicationBootstrap(): void {
    const purge = this.options.purge ?? {};
    if (purge.enabled === false) return;
    for (const name of ['intervalMs', 'batchSize', 'timeBoxMs', 'maxBatches'] as const) {
      const value = purge[name];
      if (value !== undefined && !(value > 0)) {
        throw new Error(
          `Idempotency option purge.${name} must be a positive number, got ${value}.`,
        );
      }
    }
    if (purge.batchSize !== undefined && !Number.isSafeInteger(purge.batchSize)) {
      throw new Error(
        `Idempotency option purge.batchSize must be a whole number, got ${purge.batchSize}.`,
      );
    }
    const interval = purge.intervalMs ?? DEFAULT_PURGE_INTERVAL_MS;
    this.timer = setInterval(() => void this.runOnce(), interval);
    this.timer.unref();
  }

  /** One sweep; overlapping calls share the sweep already running. */
  runOnce(): Promise<number> {
    if (!this.running) {
      const purge = this.options.purge ?? {};
      this.running = sweepExpired(
        this.store,
        { ...purge, statementTimeoutMs: this.options.statementTimeoutMs },
        (deleted, storeMs) => {
          if (this.events.wants('purge-batch')) {
            this.events.emit({ type: 'purge-batch', deleted, storeMs });
          }
        },
        this.stopping.signal,
      )
        .then((sweep) => {
          if (sweep.stoppedBy === 'time box' || sweep.stoppedBy === 'max batches') {
            this.logger.warn(
              `Purge deleted ${sweep.deleted} expired idempotency records in ${sweep.elapsedMs} ms and stopped at its ${sweep.stoppedBy} with more left. If this repeats, the sweep cannot keep up with new keys: raise purge.timeBoxMs or purge.batchSize, or lower purge.intervalMs.`,
            );
          }
          return sweep.deleted;
        })
        .catch((error: unknown) => {
          this.logger.warn(`Purge of expired idempotency records failed: ${String(error)}`);
          return 0;
        })
        .finally(() => (this.running = undefined));
    }
    return this.running as Promise<number>;
  }

  async onModuleDestroy(): Promise<void> {
    clearInterval(this.timer);
    this.stopping.abort();
    await this.running;
  }
}
