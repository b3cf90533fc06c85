// The DataSource the module uses (given, or opened and owned) and the store built on it.
import type { Provider } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';
import { IdempotencyEvents } from './idempotency-events.service.js';
import { IdempotencyStore } from './idempotency-store.js';
import { PostgresIdempotencyListener } from './postgres-idempotency.listener.js';
import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';
import { guardedPoolOf } from './postgres-pool.guard.js';

/** Injection token of the DataSource the module uses (internal). */
export const IDEMPOTENCY_DATA_SOURCE = Symbol('IDEMPOTENCY_DATA_SOURCE');

/**
 * The DataSource and whether the module opened it (and so must close it); `undefined` when
 * the module runs on a `store` the application gave instead of Postgres.
 */
export interface IdempotencyConnection {
  dataSource: DataSource;
  owned: boolean;
}

export const idempotencyProviders: Provider[] = [
  {
    provide: IDEMPOTENCY_DATA_SOURCE,
    inject: [IDEMPOTENCY_MODULE_OPTIONS],
    useFactory: async (
      options: IdempotencyModuleOptions,
    ): Promise<IdempotencyConnection | undefined> => {
      const given = (['dataSource', 'connection', 'store'] as const).filter(
        (name) => options[name] !== undefined,
      );
      if (given.length !== 1) {
        // `connection: process.env.DATABASE_URL` with the variable unset is the usual 'none'.
        const none =
          'none (`connection: process.env.DATABASE_URL` is undefined while DATABASE_URL is unset)';
        throw new Error(
          `IdempotencyModule: give exactly one of \`dataSource\` (an existing TypeORM DataSource), \`connection\` (a Postgres URL or options) or \`store\`; got ${given.length ? given.join(' and ') : none}.`,
        );
      }
      if (options.store) return undefined;
      if (options.dataSource) {
        // A given DataSource may not be initialized yet; the store guards its pool on first use.
        if (options.dataSource.isInitialized) guardedPoolOf(options.dataSource);
        return { dataSource: options.dataSource, owned: false };
      }
      if (!options.connection) {
        throw new Error(
          'IdempotencyModule: `connection` is empty; give a Postgres URL or options.',
        );
      }
      const settings =
        typeof options.connection === 'string'
          ? { type: 'postgres' as const, url: options.connection }
          : options.connection;
      const dataSource = new DataSource({
        ...settings,
        // Fail fast while Postgres is unreachable: requests get 503 instead of hanging.
        connectTimeoutMS: settings.connectTimeoutMS ?? 5_000,
        applicationName: settings.applicationName ?? 'nest-idempotency',
      });
      await dataSource.initialize().catch((error: unknown) => {
        // A bare ECONNREFUSED at start-up does not say who was connecting, or with what.
        throw new Error(
          `IdempotencyModule: could not connect to Postgres with its \`connection\` option (${describeTarget(settings)}): ${(error as Error)?.message ?? String(error)}`,
          { cause: error },
        );
      });
      guardedPoolOf(dataSource);
      return { dataSource, owned: true };
    },
  },
  {
    // Connects on the first wait only; Nest closes it on shutdown (its onApplicationShutdown).
    provide: PostgresIdempotencyListener,
    inject: [IDEMPOTENCY_DATA_SOURCE, IdempotencyEvents],
    useFactory: (connection: IdempotencyConnection | undefined, events: IdempotencyEvents) =>
      connection && PostgresIdempotencyListener.forDataSource(connection.dataSource, events.log),
  },
  {
    provide: IdempotencyStore,
    inject: [IDEMPOTENCY_DATA_SOURCE, IDEMPOTENCY_MODULE_OPTIONS, PostgresIdempotencyListener],
    useFactory: (
      connection: IdempotencyConnection | undefined,
      options: IdempotencyModuleOptions,
      listener: PostgresIdempotencyListener | undefined,
    ): IdempotencyStore =>
      options.store ??
      PostgresIdempotencyStore.fromDataSource(connection!.dataSource, options.tableName, {
        listener,
        batching: options.batching,
        durability: options.durability,
      }),
  },
];

/** Where a connection points, without its password. */
function describeTarget(settings: {
  url?: string;
  host?: string;
  port?: number;
  database?: string;
}): string {
  if (settings.url) {
    try {
      const url = new URL(settings.url);
      url.password = url.password ? '***' : '';
      return url.toString();
    } catch {
      return 'an unparsable URL';
    }
  }
  return `${settings.host ?? 'localhost'}:${settings.port ?? 5432}/${settings.database ?? ''}`;
}
