// Frees the space of expired records in bounded batches: the module's background sweep, and
// the same work as one function for applications that prefer their own cron job.
import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnModuleDestroy,
} from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';
import { IdempotencyStore } from './idempotency-store.js';
import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';

export const DEFAULT_PURGE_INTERVAL_MS = 5 * 60_000;
export const DEFAULT_PURGE_BATCH_SIZE = 1_000;
export const DEFAULT_PURGE_MAX_BATCHES = 100;

export interface PurgeOptions {
  /** Table name, when not the default. @default 'idempotency_records' */
  tableName?: string;
  /** Rows deleted per statement; small batches keep each statement short. @default 1000 */
  batchSize?: number;
  /** Batches per run at most, so one run stays bounded. @default 100 */
  maxBatches?: number;
}

/**
 * Deletes expired records in batches until none are left (or `maxBatches` ran) and returns
 * how many it deleted. Safe to run from several processes at once.
 * @example await purgeExpiredIdempotencyRecords(dataSource, { batchSize: 5000 })
 */
export async function purgeExpiredIdempotencyRecords(
  dataSource: DataSource,
  options: PurgeOptions = {},
): Promise<number> {
  const store = PostgresIdempotencyStore.fromDataSource(dataSource, options.tableName);
  return sweep(store, options.batchSize, options.maxBatches);
}

async function sweep(
  store: IdempotencyStore,
  batchSize = DEFAULT_PURGE_BATCH_SIZE,
  maxBatches = DEFAULT_PURGE_MAX_BATCHES,
): Promise<number> {
  let total = 0;
  for (let batch = 0; batch < maxBatches; batch++) {
    const deleted = await store.purgeExpired(batchSize);
    total += deleted;
    if (deleted < batchSize) break;
  }
  return total;
}

/** Runs the sweep every `purge.intervalMs` while the application runs. */
@Injectable()
export class IdempotencyPurger implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger('Idempotency');
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;

  constructor(
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) private readonly options: IdempotencyModuleOptions,
    private readonly store: IdempotencyStore,
  ) {}

  onApplicationBootstrap(): void {
    const purge = this.options.purge ?? {};
    if (purge.enabled === false) return;
    const interval = purge.intervalMs ?? DEFAULT_PURGE_INTERVAL_MS;
    this.timer = setInterval(() => void this.runOnce(), interval);
    this.timer.unref();
  }

  /** One sweep; overlapping calls share the sweep already running. */
  runOnce(): Promise<number> {
    if (!this.running) {
      const purge = this.options.purge ?? {};
      this.running = sweep(this.store, purge.batchSize, purge.maxBatches)
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
    await this.running;
  }
}
