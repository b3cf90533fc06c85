// Exactly-once effects for `@Idempotent({ transactional: true })`: the handler's writes and
// the stored response commit in one Postgres transaction, or neither does.
import { Inject, Injectable } from '@nestjs/common';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { EntityManager, QueryRunner } from 'typeorm';
import { IDEMPOTENCY_DATA_SOURCE, type IdempotencyConnection } from './idempotency.providers.js';
import type { SqlExecutor } from './postgres-idempotency.store.js';
import { guardedPoolOf } from './postgres-pool.guard.js';

/** The transaction of the request being handled, found through the async context. */
const currentTransaction = new AsyncLocalStorage<EntityManager>();

/**
 * Gives a handler the EntityManager to write with. Inside a `transactional` idempotent
 * request it is that request's transaction; anywhere else (no key sent, other routes) it is
 * the DataSource's own manager, so the same handler code works in both cases.
 * @example
 * constructor(private readonly tx: IdempotencyTransaction) {}
 * book(@Body() dto: BookingDto) { return this.tx.manager.getRepository(Booking).save(dto); }
 */
@Injectable()
export class IdempotencyTransaction {
  constructor(
    @Inject(IDEMPOTENCY_DATA_SOURCE)
    private readonly connection: IdempotencyConnection | undefined,
  ) {}

  /** The manager to use for writes that must commit with the stored response. */
  get manager(): EntityManager {
    const manager = currentTransaction.getStore() ?? this.connection?.dataSource.manager;
    if (!manager) {
      throw new Error(
        'IdempotencyTransaction needs IdempotencyModule on Postgres (`dataSource` or `connection`), not a custom `store`.',
      );
    }
    return manager;
  }

  /** True while handling a `transactional` idempotent request. */
  get isActive(): boolean {
    return currentTransaction.getStore() !== undefined;
  }
}

/** An open transaction on its own connection, as the interceptor drives it. */
export class OpenTransaction {
  private constructor(private readonly queryRunner: QueryRunner) {}

  static async begin(connection: IdempotencyConnection): Promise<OpenTransaction> {
    guardedPoolOf(connection.dataSource);
    const queryRunner = connection.dataSource.createQueryRunner();
    try {
      await queryRunner.connect();
      await queryRunner.startTransaction();
    } catch (error) {
      await queryRunner.release().catch(() => undefined);
      throw error;
    }
    return new OpenTransaction(queryRunner);
  }

  /** Runs `fn` so that IdempotencyTransaction.manager is this transaction's manager. */
  run<T>(fn: () => T): T {
    return currentTransaction.run(this.queryRunner.manager, fn);
  }

  /** Runs the store's statements inside this transaction. */
  get executor(): SqlExecutor {
    return {
      query: async ({ text, values }) => {
        const result = await this.queryRunner.query(text, values, true);
        return { rows: result.records ?? [], rowCount: result.affected ?? null };
      },
    };
  }

  async commit(): Promise<void> {
    try {
      await this.queryRunner.commitTransaction();
    } finally {
      await this.queryRunner.release();
    }
  }

  async rollback(): Promise<void> {
    try {
      if (this.queryRunner.isTransactionActive) await this.queryRunner.rollbackTransaction();
    } finally {
      await this.queryRunner.release();
    }
  }
}
