// Exactly-once effects for `@Idempotent({ transactional: true })`: the handler's writes and
// the stored response commit in one Postgres transaction, or neither does.
import { Inject, Injectable } from '@nestjs/common';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { EntityManager, QueryRunner } from 'typeorm';
import { IDEMPOTENCY_DATA_SOURCE, type IdempotencyConnection } from './idempotency.providers.js';
import type { SqlExecutor } from './postgres-idempotency.store.js';
import { guardedPoolOf } from './postgres-pool.guard.js';
import {
  cancelOnServer,
  isServerError,
  runStatement,
  withinTimeout,
  type PgClientLike,
} from './postgres-statement.runner.js';

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
  /** Set once the connection was cut: the transaction can only have rolled back. */
  private cut?: Error;

  private constructor(private readonly queryRunner: QueryRunner) {}

  /**
   * Takes a pool connection and starts a transaction on it, within `timeoutMs`: past it, a
   * connection still on its way is given back when it arrives, and one stuck on a frozen
   * server is cut.
   */
  static async begin(
    connection: IdempotencyConnection,
    timeoutMs?: number,
  ): Promise<OpenTransaction> {
    guardedPoolOf(connection.dataSource);
    const queryRunner = connection.dataSource.createQueryRunner();
    const transaction = new OpenTransaction(queryRunner);
    const connecting = queryRunner.connect();
    try {
      await withinTimeout(
        connecting.then(() => queryRunner.startTransaction()),
        timeoutMs,
        (error) => transaction.cutConnection(error),
      );
    } catch (error) {
      // A connection still on its way goes back (closed, if cut) once it arrives.
      void connecting.then(
        () => {
          if (transaction.cut) transaction.cutConnection(transaction.cut);
          return queryRunner.release();
        },
        () => undefined,
      );
      throw error;
    }
    return transaction;
  }

  /** Runs `fn` so that IdempotencyTransaction.manager is this transaction's manager. */
  run<T>(fn: () => T): T {
    return currentTransaction.run(this.queryRunner.manager, fn);
  }

  /**
   * Runs the store's statements inside this transaction, on its connection, each within its
   * `timeoutMs`; one that outlives it leaves the transaction rolled back and its connection
   * closed (see runStatement).
   */
  get executor(): SqlExecutor {
    return {
      query: (statement) => {
        if (this.cut || !this.client) {
          return Promise.reject(this.cut ?? new Error('The transaction has no connection.'));
        }
        return runStatement(this.client, statement, (error) => {
          if (error && !isServerError(error)) this.cutConnection(error);
        });
      },
    };
  }

  /** Commits within `timeoutMs`; past it, the connection is cut and the outcome unknown. */
  async commit(timeoutMs?: number): Promise<void> {
    try {
      if (this.cut) throw this.cut;
      await withinTimeout(this.queryRunner.commitTransaction(), timeoutMs, (error) =>
        this.cutConnection(error),
      );
    } finally {
      await this.queryRunner.release();
    }
  }

  /** Rolls back within `timeoutMs`; past it, cutting the connection rolls back instead. */
  async rollback(timeoutMs?: number): Promise<void> {
    try {
      if (!this.cut && this.queryRunner.isTransactionActive) {
        await withinTimeout(this.queryRunner.rollbackTransaction(), timeoutMs, (error) =>
          this.cutConnection(error),
        );
      }
    } finally {
      await this.queryRunner.release();
    }
  }

  /**
   * Rolls back by closing the connection, for a handler that may still be running on it:
   * after a ROLLBACK its next query would run outside any transaction and commit on its own;
   * on a closed connection it fails. The statement it may be running is cancelled first: a
   * server reads the close only between statements, so a long one (a lock wait) would keep
   * its backend, and the locks its writes took, until it ended. rollback() then only gives
   * the query runner back.
   */
  abort(): void {
    const client = this.client;
    if (client && !this.cut) cancelOnServer(client);
    this.cutConnection(new Error('The transaction was ended while its handler still ran.'));
  }

  /** The pg client under the query runner, once connected. */
  private get client(): PgClientLike | undefined {
    return (this.queryRunner as unknown as { databaseConnection?: PgClientLike })
      .databaseConnection;
  }

  /**
   * Closes the connection, which ends the transaction on the server; the pool drops it when
   * the query runner is released. Before the connection arrives, only marks the cut.
   */
  private cutConnection(error: Error): void {
    this.cut = error;
    void this.client?.end();
  }
}
