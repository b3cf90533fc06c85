// TypeORM records migrations by name: the migrations built for two tables must not share one,
// or the second table's reads as already run (and two in one list are refused as duplicates).
import pg from 'pg';
import { DataSource } from 'typeorm';
import {
  AddIdempotencyWaiters1795910400000,
  CreateIdempotencyRecords1764403200000,
  createIdempotencyRecordsMigration,
  createIdempotencyWaitersMigration,
} from '../../src/index.js';
import { dropTable, uniqueTableName } from '../support/test-app.js';

async function columnsOf(tableName: string): Promise<string[]> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    const { rows } = await client.query<{ column_name: string }>(
      `SELECT column_name FROM information_schema.columns WHERE table_name = $1`,
      [tableName],
    );
    return rows.map((row) => row.column_name);
  } finally {
    await client.end();
  }
}

describe('migrations for custom table names', () => {
  const first = uniqueTableName('idem_mig_a');
  const second = uniqueTableName('idem_mig_b');
  const migrationsTableName = `${first}_migrations`;

  const dataSourceWith = (migrations: DataSource['options']['migrations']) =>
    new DataSource({
      type: 'postgres',
      url: process.env.DATABASE_URL,
      migrations,
      migrationsTableName,
    });

  afterAll(async () => {
    const cleanup = dataSourceWith([]);
    await cleanup.initialize();
    await cleanup.query(`DROP TABLE IF EXISTS "${migrationsTableName}"`);
    await cleanup.destroy();
    await dropTable(first);
    await dropTable(second);
  });

  it('keeps the default names for the default table', () => {
    expect(new CreateIdempotencyRecords1764403200000().name).toBe(
      'CreateIdempotencyRecords1764403200000',
    );
    expect(new AddIdempotencyWaiters1795910400000().name).toBe(
      'AddIdempotencyWaiters1795910400000',
    );
    expect(new (createIdempotencyRecordsMigration('idempotency_records'))().name).toBe(
      'CreateIdempotencyRecords1764403200000',
    );
  });

  it('names each table in its migrations, keeping the timestamp last', () => {
    expect(new (createIdempotencyRecordsMigration('billing.keys'))().name).toBe(
      'CreateIdempotencyRecords_billing.keys_1764403200000',
    );
    expect(new (createIdempotencyWaitersMigration('billing.keys'))().name).toBe(
      'AddIdempotencyWaiters_billing.keys_1795910400000',
    );
  });

  it('runs a second table’s migrations after the first table’s, in one migrations table', async () => {
    const before = dataSourceWith([
      createIdempotencyRecordsMigration(first),
      createIdempotencyWaitersMigration(first),
    ]);
    await before.initialize();
    try {
      expect(await before.runMigrations()).toHaveLength(2);
    } finally {
      await before.destroy();
    }

    // Later, a second table (a rename, another schema) in the same list.
    const after = dataSourceWith([
      createIdempotencyRecordsMigration(first),
      createIdempotencyWaitersMigration(first),
      createIdempotencyRecordsMigration(second),
      createIdempotencyWaitersMigration(second),
    ]);
    await after.initialize();
    try {
      const applied = await after.runMigrations();
      expect(applied.map((migration) => migration.name).sort()).toEqual([
        `AddIdempotencyWaiters_${second}_1795910400000`,
        `CreateIdempotencyRecords_${second}_1764403200000`,
      ]);
    } finally {
      await after.destroy();
    }
    expect(await columnsOf(second)).toEqual(expect.arrayContaining(['scope', 'has_waiters']));
    expect(await columnsOf(first)).toEqual(expect.arrayContaining(['scope', 'has_waiters']));
  });
});
