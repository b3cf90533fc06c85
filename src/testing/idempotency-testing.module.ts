// IdempotencyTestingModule.forRoot(): IdempotencyModule on a fresh in-memory store, for unit
// and e2e tests of controllers that carry @Idempotent(): no Postgres, no migration.
import type { DynamicModule } from '@nestjs/common';
import { IdempotencyModule } from '../idempotency.module.js';
import type { IdempotencyModuleOptions } from '../idempotency-options.interface.js';
import type { IdempotencyStore } from '../idempotency-store.js';
import { InMemoryIdempotencyStore } from './in-memory-idempotency.store.js';

/** Module options for tests: everything but the Postgres ones. */
export interface IdempotencyTestingOptions extends Omit<
  IdempotencyModuleOptions,
  'dataSource' | 'connection' | 'store' | 'tableName' | 'runMigrations' | 'transactional'
> {
  /**
   * The store to use; keep a reference to inspect it or move its clock.
   * @default a new InMemoryIdempotencyStore per forRoot() call
   * @example IdempotencyTestingModule.forRoot({ store: new InMemoryIdempotencyStore({ now: () => clock }) })
   */
  store?: IdempotencyStore;
}

export class IdempotencyTestingModule {
  /**
   * Registers IdempotencyModule (global) on an in-memory store, with the purge sweep off.
   * Routes with `transactional: true` need Postgres: test those against the real module.
   * @example Test.createTestingModule({ imports: [IdempotencyTestingModule.forRoot()], controllers: [BookingsController] })
   */
  static forRoot(options: IdempotencyTestingOptions = {}): DynamicModule {
    return IdempotencyModule.forRoot({
      purge: { enabled: false },
      ...options,
      store: options.store ?? new InMemoryIdempotencyStore(),
    });
  }
}
