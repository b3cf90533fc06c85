// The has_waiters column comes from a second migration. A table created before it (only
// CreateIdempotencyRecords) keeps working: every outcome with the wait off, and waits by
// polling with it on. The migration classes and runMigrations add the column to such a
// table, after which waits are woken by notifications.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { DataSource } from 'typeorm';
import {
  createIdempotencyRecordsMigration,
  createIdempotencyWaitersMigration,
  idempotencyRecordsDdl,
} from '../../src/index.js';
import { send } from '../support/http.js';
import { expectProblem, expectReplayOf, expectRetryable } from '../support/problem.js';
import { dropTable, uniqueTableName, waitForRecord } from '../support/test-app.js';
import { startWaitApp, type WaitApp } from './wait-app.js';

const post = (app: WaitApp, path: string, key: string, body: object, fail = false) =>
  send(app.url, path, {
    headers: [['x-idempotency-key', key], ...(fail ? [['x-fail', '1'] as [string, string]] : [])],
    body,
  });

async function hasWaitersColumn(tableName: string): Promise<boolean> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    const { rows } = await client.query(
      `SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = 'has_waiters'`,
      [tableName],
    );
    return rows.length === 1;
  } finally {
    await client.end();
  }
}

/** A table as the first migration alone creates it. */
async function createOldTable(tableName: string): Promise<void> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    for (const statement of idempotencyRecordsDdl(tableName).up) await client.query(statement);
  } finally {
    await client.end();
  }
}

describe('a table without the has_waiters column', () => {
  const tableName = uniqueTableName('idem_old');
  beforeAll(() => createOldTable(tableName));
  afterAll(() => dropTable(tableName));

  it('works as before with the wait off: new key, replay, 423, 422, a failure frees the key', async () => {
    const app = await startWaitApp('express', { tableName, runMigrations: false });
    try {
      expect(await hasWaitersColumn(tableName)).toBe(false);
      const key = randomUUID();
      const running = post(app, '/slow', key, { delayMs: 800 });
      await waitForRecord(tableName, key, 'in_progress');
      expectRetryable(
        await post(app, '/slow', key, { delayMs: 800 }),
        423,
        'idempotency_request_in_flight',
      );
      expectProblem(await post(app, '/slow', key, { other: 1 }), 422, 'idempotency_key_reused');
      const first = await running;
      expect(first.status).toBe(201);
      expectReplayOf(await post(app, '/slow', key, { delayMs: 800 }), first);

      const failing = randomUUID();
      expect((await post(app, '/slow', failing, {}, true)).status).toBe(500);
      const retried = await post(app, '/slow', failing, {});
      expect(retried.status).toBe(201);
      expect(app.runs.of(failing)).toBe(2);

      // A transactional route completes in the handler's transaction: fine without it too.
      const tx = randomUUID();
      const stored = await post(app, '/tx', tx, {});
      expect(stored.status).toBe(200);
      expectReplayOf(await post(app, '/tx', tx, {}), stored);
      expect(app.runs.of(key)).toBe(1);
    } finally {
      await app.close();
    }
  });

  it('with the wait on, a duplicate still gets its replay (by polling)', async () => {
    const app = await startWaitApp('fastify', {
      tableName,
      runMigrations: false,
      waitInFlightMs: 5_000,
    });
    try {
      const key = randomUUID();
      const running = post(app, '/slow', key, { delayMs: 800 });
      await waitForRecord(tableName, key, 'in_progress');
      const duplicate = await post(app, '/slow', key, { delayMs: 800 });
      const first = await running;
      expectReplayOf(duplicate, first);
      expect(app.runs.of(key)).toBe(1);
      expect(await hasWaitersColumn(tableName)).toBe(false);
    } finally {
      await app.close();
    }
  });
});

describe('adding the column', () => {
  it('runMigrations: true adds it to a table created before it, keeping its records', async () => {
    const tableName = uniqueTableName('idem_upgrade');
    await createOldTable(tableName);
    const before = await startWaitApp('express', { tableName, runMigrations: false });
    const key = randomUUID();
    let first;
    try {
      first = await post(before, '/slow', key, {});
      expect(first.status).toBe(201);
    } finally {
      await before.close();
    }
    const app = await startWaitApp('express', { tableName, runMigrations: true });
    try {
      expect(await hasWaitersColumn(tableName)).toBe(true);
      expectReplayOf(await post(app, '/slow', key, {}), first);
    } finally {
      await app.close();
      await dropTable(tableName);
    }
  });

  it('createIdempotencyWaitersMigration runs after createIdempotencyRecordsMigration, and reverts', async () => {
    const tableName = uniqueTableName('idem_typeorm');
    const dataSource = new DataSource({
      type: 'postgres',
      url: process.env.DATABASE_URL,
      migrations: [
        createIdempotencyRecordsMigration(tableName),
        createIdempotencyWaitersMigration(tableName),
      ],
      migrationsTableName: `${tableName}_migrations`,
    });
    await dataSource.initialize();
    try {
      const applied = await dataSource.runMigrations();
      expect(applied.map((migration) => migration.name)).toEqual([
        `CreateIdempotencyRecords_${tableName}_1764403200000`,
        `AddIdempotencyWaiters_${tableName}_1795910400000`,
      ]);
      expect(await hasWaitersColumn(tableName)).toBe(true);
      await dataSource.undoLastMigration();
      expect(await hasWaitersColumn(tableName)).toBe(false);
    } finally {
      await dataSource.query(`DROP TABLE IF EXISTS "${tableName}_migrations"`);
      await dataSource.destroy();
      await dropTable(tableName);
    }
  });
});
