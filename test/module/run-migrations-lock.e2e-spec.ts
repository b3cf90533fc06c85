// runMigrations: true runs on every start of every instance. Once the table is there, a start
// must not take a lock on it: `CREATE INDEX IF NOT EXISTS` and `ALTER TABLE ... ADD COLUMN IF
// NOT EXISTS` lock the table before they find there is nothing to do, so during a rolling
// deploy they waited behind any open transaction on it (a `transactional` handler running),
// and every claim of every instance queued behind them: 503s, and an instance that did not
// start.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { send } from '../support/http.js';
import { createTestApp, sleep, uniqueTableName, type TestApp } from '../support/test-app.js';

describe('runMigrations: true on a table that is already there', () => {
  const tableName = uniqueTableName('idem_lock');
  let running: TestApp;
  let starting: Promise<TestApp> | undefined;
  const holder = new pg.Client(process.env.DATABASE_URL);

  beforeAll(async () => {
    running = await createTestApp('express', { tableName, statementTimeoutMs: 1_000 });
    await holder.connect();
  }, 30_000);
  afterAll(async () => {
    await holder.query('ROLLBACK').catch(() => undefined);
    await holder.end();
    await (await starting)?.app.close();
    await running?.close();
  });

  it('starts another instance without waiting for open transactions, and claims go on', async () => {
    // A transaction that writes to the table and stays open, as a transactional handler does.
    await holder.query('BEGIN');
    await holder.query(
      `INSERT INTO "${tableName}" (scope, idempotency_key, fingerprint, state, fencing_token, locked_until, expires_at)
       VALUES ('', $1, '\\x00', 'in_progress', 1, now() + interval '1 minute', now() + interval '1 hour')`,
      [randomUUID()],
    );

    starting = createTestApp('express', { tableName, statementTimeoutMs: 1_000 });
    const started = await Promise.race([starting.then(() => true), sleep(3_000).then(() => false)]);
    const response = await send(running.url, '/x/partners/p1/bookings', {
      headers: [['x-idempotency-key', randomUUID()]],
      body: { product: 'kibble' },
    });
    await holder.query('ROLLBACK');

    expect({ started, status: response.status }).toEqual({ started: true, status: 201 });
  }, 30_000);
});
