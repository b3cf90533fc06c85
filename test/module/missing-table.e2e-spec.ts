// Issue 10.10: without `runMigrations`, a missing (or older) table stops the application at
// start-up with the fix in the message, instead of surfacing as 503s on the first requests.
// Each case runs in a schema of its own (search_path), dropped afterwards.
import { Test } from '@nestjs/testing';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { IdempotencyModule, type IdempotencyModuleOptions } from '../../src/index.js';

const schema = `missing_table_${randomBytes(4).toString('hex')}`;
const inSchema = {
  type: 'postgres' as const,
  url: process.env.DATABASE_URL,
  extra: { options: `-c search_path=${schema}` },
};
let db: pg.Client;

beforeAll(async () => {
  db = new pg.Client(process.env.DATABASE_URL);
  await db.connect();
  await db.query(`CREATE SCHEMA ${schema}`);
});
afterAll(async () => {
  await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await db.end();
});

async function start(options: Partial<IdempotencyModuleOptions>) {
  const moduleRef = await Test.createTestingModule({
    imports: [
      IdempotencyModule.forRoot({ connection: inSchema, purge: { enabled: false }, ...options }),
    ],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.init();
  return app;
}

describe('start-up check of the idempotency table (runMigrations: false)', () => {
  it('fails naming both migration classes and runMigrations when the default table is missing', async () => {
    await expect(start({})).rejects.toThrow(
      /table "idempotency_records" does not exist.*Run the migrations CreateIdempotencyRecords1764403200000 and AddIdempotencyWaiters1795910400000 .*runMigrations: true/,
    );
  });

  it('names both migration factories for a custom table name', async () => {
    await expect(start({ tableName: 'order_keys' })).rejects.toThrow(
      /table "order_keys" does not exist.*createIdempotencyRecordsMigration\('order_keys'\) and createIdempotencyWaitersMigration\('order_keys'\).*runMigrations: true/,
    );
  });

  it('fails for a table in a schema that does not exist', async () => {
    await expect(start({ tableName: `${schema}_absent.keys` })).rejects.toThrow(
      /does not exist.*createIdempotencyRecordsMigration/,
    );
  });

  it('fails for a table that lacks columns the module uses', async () => {
    await db.query(`CREATE TABLE ${schema}.old_keys (scope text, idempotency_key text)`);
    await expect(start({ tableName: 'old_keys' })).rejects.toThrow(
      /table "old_keys" lacks columns the module needs/,
    );
  });

  it('starts once the table exists (created by runMigrations, then checked)', async () => {
    const migrated = await start({ tableName: 'keys_ok', runMigrations: true });
    await migrated.close();
    const checked = await start({ tableName: 'keys_ok' });
    await checked.close();
  });
});
