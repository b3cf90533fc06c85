// Events of duplicates that wait (waitInFlightMs): each waiter's outcome is reported once,
// with its own fields, even when waiters that woke together shared one claim.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  PostgresIdempotencyListener,
  PostgresIdempotencyStore,
  idempotencyKeyHash,
  listenerApplicationName,
  type SqlExecutor,
} from '../../src/index.js';
import { IdempotencyWaiters } from '../../src/idempotency.waiters.js';
import { EventLog } from '../support/events.js';
import { parallel, send } from '../support/http.js';
import { expectRetryable } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { waitForRecord } from '../support/test-app.js';
import { startWaitApp } from '../wait/wait-app.js';

describe('waiters that woke together and shared a claim that failed', () => {
  it('each answer 503 and each is reported as store-unavailable', async () => {
    const seed = await startWaitApp('express', { waitInFlightMs: 0 });
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
    let failClaims = false;
    const failing: SqlExecutor = {
      query: (statement) =>
        failClaims && /_claim(_reset_waiters)?$/.test(statement.name)
          ? Promise.reject(new Error('claims fail now'))
          : pool.query(statement),
    };
    const listener = new PostgresIdempotencyListener(
      () =>
        new pg.Client({
          connectionString: process.env.DATABASE_URL,
          application_name: listenerApplicationName('events-wait'),
        }),
    );
    const app = await startWaitApp('express', {
      connection: undefined,
      store: new PostgresIdempotencyStore(failing, seed.tableName, { listener, batching: false }),
      runMigrations: false,
      tableName: seed.tableName,
      waitInFlightMs: 8_000,
      logger: false,
    });
    const log = new EventLog();
    try {
      const key = randomUUID();
      const hash = idempotencyKeyHash('', key);
      const running = send(app.url, '/gated', { headers: [['x-idempotency-key', key]], body: {} });
      await waitForRecord(app.tableName, key, 'in_progress');
      const waiters = app.app.get(IdempotencyWaiters);
      const waiting = parallel(3, () =>
        send(app.url, '/gated', { headers: [['x-idempotency-key', key]], body: {} }),
      );
      await waitFor('the duplicates to wait', () => waiters.count === 3);
      failClaims = true;
      app.runs.open(key);
      expect((await running).status).toBe(201);
      const answers = await waiting;
      for (const response of answers)
        expectRetryable(response, 503, 'idempotency_store_unavailable');
      await new Promise((resolve) => setTimeout(resolve, 200));
      const failures = log.of('store-unavailable', hash);
      expect(failures).toHaveLength(3);
      for (const failure of failures) {
        expect(failure).toMatchObject({
          context: 'http',
          handler: 'WaitController.gated',
          operation: 'claim',
          timedOut: false,
        });
        expect(failure.error.message).toBe('claims fail now');
      }
    } finally {
      log.close();
      await app.close();
      await listener.close();
      await pool.end();
      await seed.close();
    }
  });
});
