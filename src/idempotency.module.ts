// IdempotencyModule.forRoot() / forRootAsync(): import once; then put @Idempotent() on routes.
import { Inject, Module, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { idempotencyRecordsDdl } from '../migrations/1764403200000-CreateIdempotencyRecords.js';
import { idempotencyWaitersDdl } from '../migrations/1795910400000-AddIdempotencyWaiters.js';
import { IdempotencyEngine } from './idempotency.engine.js';
import { IdempotencyEvents } from './idempotency-events.service.js';
import { IdempotencyLog } from './idempotency.log.js';
import {
  ConfigurableIdempotencyModule,
  IDEMPOTENCY_MODULE_OPTIONS,
} from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';
import {
  IDEMPOTENCY_DATA_SOURCE,
  idempotencyProviders,
  type IdempotencyConnection,
} from './idempotency.providers.js';
import { IdempotencyPurger } from './idempotency.purge.js';
import { IdempotencySettlements } from './idempotency.settlements.js';
import { IdempotencyTransaction } from './idempotency.transaction.js';
import { assertValidOptions } from './idempotency.options.js';
import { IdempotencyStore } from './idempotency-store.js';
import { DEFAULT_STATEMENT_TIMEOUT_MS } from './idempotency.constants.js';
import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';
import { IdempotencyWaiters } from './idempotency.waiters.js';
import { idempotencyOpenApiProvider } from './idempotency-openapi.js';
import { idempotencyFilterOrderProvider } from './idempotency-filter-order.js';
import { IdempotencyKeys } from './idempotency-keys.service.js';
import { EXPIRY_INDEX_OF, idempotencyTableNames } from './idempotency-table.js';

@Module({
  // DiscoveryModule: the OpenAPI documenter and the filter order find the @Idempotent()
  // routes through it.
  imports: [DiscoveryModule],
  providers: [
    idempotencyOpenApiProvider,
    idempotencyFilterOrderProvider,
    ...idempotencyProviders,
    IdempotencyEngine,
    IdempotencyEvents,
    IdempotencyPurger,
    IdempotencySettlements,
    IdempotencyTransaction,
    IdempotencyWaiters,
    IdempotencyKeys,
  ],
  // What the interceptor that @Idempotent() binds in each controller's module needs, and
  // what applications may inject.
  exports: [
    IdempotencyEngine,
    IdempotencyEvents,
    IdempotencyTransaction,
    IdempotencyStore,
    IdempotencyPurger,
    IdempotencyKeys,
    IDEMPOTENCY_MODULE_OPTIONS,
    IDEMPOTENCY_DATA_SOURCE,
  ],
})
export class IdempotencyModule
  extends ConfigurableIdempotencyModule
  implements OnModuleInit, OnApplicationShutdown
{
  private readonly logger: IdempotencyLog;

  constructor(
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) private readonly options: IdempotencyModuleOptions,
    @Inject(IDEMPOTENCY_DATA_SOURCE) private readonly connection: IdempotencyConnection | undefined,
    private readonly settlements: IdempotencySettlements,
    private readonly store: IdempotencyStore,
  ) {
    super();
    this.logger = new IdempotencyLog(options.logger);
  }

  async onModuleInit(): Promise<void> {
    assertValidOptions(this.options);
    if (!this.connection) {
      if (this.options.runMigrations) {
        throw new Error('IdempotencyModule: runMigrations needs Postgres, not a custom `store`.');
      }
      return;
    }
    this.warnAboutPoolTimeout(this.connection);
    if (!this.options.runMigrations) {
      // Fail at start-up, with the fix, rather than answer 503 to every keyed request.
      if (this.store instanceof PostgresIdempotencyStore) {
        await this.store
          .checkTable({
            timeoutMs: this.options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS,
          })
          .catch(async (error: unknown) => {
            // No shutdown hook runs after a failed start: close what the module opened.
            if (this.connection?.owned) await this.connection.dataSource.destroy();
            throw error;
          });
      }
      return;
    }
    // The DDL locks the table even when it has nothing to do (CREATE INDEX and ALTER TABLE
    // take the lock before they look), and so would queue every claim behind any open
    // transaction on it: once everything is there, a start runs none of it.
    // The index is found by what it indexes, not by name: a table name over 48 characters
    // may have it under the name an earlier version gave it (expiryIndexName).
    const { table } = idempotencyTableNames(this.options.tableName);
    const [ready] = await this.connection.dataSource.query(
      `SELECT EXISTS (${EXPIRY_INDEX_OF})
              AND EXISTS (SELECT 1 FROM pg_attribute
                           WHERE attrelid = to_regclass($1) AND attname = 'has_waiters'
                             AND NOT attisdropped) AS ready`,
      [table],
    );
    if (ready?.ready === true) {
      this.logger.log(`Table ${this.options.tableName ?? 'idempotency_records'} is ready`);
      return;
    }
    // Several instances may start together: an advisory lock makes the DDL run one at a time.
    await this.connection.dataSource.transaction(async (manager) => {
      await manager.query(`SELECT pg_advisory_xact_lock(hashtext('nest-idempotency:migrate'))`);
      // Every migration in order, as a migrations list would run them.
      for (const ddl of [idempotencyRecordsDdl, idempotencyWaitersDdl]) {
        for (const statement of ddl(this.options.tableName).up) await manager.query(statement);
      }
    });
    this.logger.log(`Table ${this.options.tableName ?? 'idempotency_records'} is ready`);
  }

  /**
   * Without a connect timeout, a connection attempt to an unreachable Postgres holds its pool
   * slot until the operating system gives up. Keyed requests still answer 503 after
   * statementTimeoutMs, but everything else waiting on that pool waits behind it.
   */
  private warnAboutPoolTimeout(connection: IdempotencyConnection): void {
    const options = connection.dataSource.options as { connectTimeoutMS?: number };
    if (!connection.owned && !options.connectTimeoutMS) {
      this.logger.warn(
        'The DataSource given to IdempotencyModule has no connectTimeoutMS: while Postgres is unreachable, connection attempts hold pool slots until the operating system gives up, and everything on that pool waits (keyed requests answer 503 after statementTimeoutMs). Set connectTimeoutMS (for example 5000) on the DataSource.',
      );
    }
  }

  /** Lets in-flight results finish storing, then closes a DataSource the module opened. */
  async onApplicationShutdown(): Promise<void> {
    await this.settlements.drain();
    if (this.connection?.owned && this.connection.dataSource.isInitialized) {
      await this.connection.dataSource.destroy();
    }
  }
}
