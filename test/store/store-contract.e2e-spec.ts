// The exported store contract (nest-idempotency-pg/testing), run against both stores this
// package ships: Postgres (a fresh table per case, on the real database) and in-memory.
import pg from 'pg';
import { PostgresIdempotencyStore, idempotencyRecordsDdl } from '../../src/index.js';
import { InMemoryIdempotencyStore, idempotencyStoreContract } from '../../src/testing/index.js';
import { uniqueTableName } from '../support/test-app.js';

describe('PostgresIdempotencyStore passes the store contract', () => {
  // Big enough that every racing claim of the concurrency cases holds its own connection.
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 24 });
  const tables: string[] = [];

  afterAll(async () => {
    for (const table of tables) await pool.query(`DROP TABLE IF EXISTS "${table}"`);
    await pool.end();
  });

  const cases = idempotencyStoreContract(async () => {
    const table = uniqueTableName('contract');
    tables.push(table);
    for (const statement of idempotencyRecordsDdl(table).up) await pool.query(statement);
    return new PostgresIdempotencyStore(pool, table);
  });
  it.each(cases.map((c) => [c.name, c.run] as const))('%s', (_name, run) => run());
});

describe('InMemoryIdempotencyStore passes the store contract', () => {
  const cases = idempotencyStoreContract(() => new InMemoryIdempotencyStore());
  it.each(cases.map((c) => [c.name, c.run] as const))('%s', (_name, run) => run());
});
