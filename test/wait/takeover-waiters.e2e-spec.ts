// has_waiters belongs to the owner it was set for. A duplicate that waits marks the record,
// so that completing or releasing it notifies; a request that takes the record over (its
// lease passed, or its retention expired) starts with no waiters, so its own completion
// must not notify (NOTIFY takes a global lock at commit). Counted with a LISTEN connection
// on the store's channel, under Express and Fastify.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { IdempotencyStore, type PostgresIdempotencyStore } from '../../src/index.js';
import { settledPayload } from '../../src/postgres-idempotency.store.js';
import { send, type TestResponse } from '../support/http.js';
import { expectProblem, expectReplayOf } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { ADAPTERS, waitForRecord, type AdapterName } from '../support/test-app.js';
import { startWaitApp, type WaitApp } from './wait-app.js';

const LEASE_MS = 1_500;
const RETENTION_MS = 2_000;

function post(app: WaitApp, key: string): Promise<TestResponse> {
  return send(app.url, '/gated', { headers: [['x-idempotency-key', key]], body: {} });
}

describe.each(ADAPTERS)('has_waiters after a takeover under %s', (adapter: AdapterName) => {
  let listener: pg.Client;
  let db: pg.Client;
  const heard: string[] = [];

  beforeAll(async () => {
    listener = new pg.Client(process.env.DATABASE_URL);
    db = new pg.Client(process.env.DATABASE_URL);
    await Promise.all([listener.connect(), db.connect()]);
    listener.on('notification', (message) => heard.push(message.payload ?? ''));
  });
  afterAll(async () => {
    await Promise.all([listener.end(), db.end()]);
  });

  async function listen(app: WaitApp): Promise<void> {
    const store = app.app.get(IdempotencyStore) as PostgresIdempotencyStore;
    await listener.query(`LISTEN "${store.notificationChannel}"`);
    heard.length = 0;
  }

  async function hasWaiters(app: WaitApp, key: string): Promise<boolean> {
    const { rows } = await db.query(
      `SELECT has_waiters FROM "${app.tableName}" WHERE idempotency_key = $1`,
      [key],
    );
    return rows[0].has_waiters as boolean;
  }

  /** Lets notifications already sent arrive before they are counted. */
  const settle = () => sleep(300);

  it('a waiter that takes the key over after the lease passed: its completion notifies nobody', async () => {
    const app = await startWaitApp(adapter, { leaseMs: LEASE_MS, waitInFlightMs: 8_000 });
    const key = randomUUID();
    try {
      await listen(app);
      const first = post(app, key);
      await waitForRecord(app.tableName, key, 'in_progress');
      // The duplicate waits: it marks the record, then takes it over once the lease passes.
      const duplicate = post(app, key);
      await waitFor('the duplicate to mark the record', () => hasWaiters(app, key));
      await waitFor('the takeover', () => app.runs.of(key) === 2, 10_000);
      const markedAfterTakeover = await hasWaiters(app, key);

      app.runs.open(key);
      expectProblem(await first, 503, 'idempotency_lease_lost');
      expect((await duplicate).status).toBe(201);
      await settle();
      expect({ markedAfterTakeover, heard }).toEqual({ markedAfterTakeover: false, heard: [] });
      expect(app.runs.of(key)).toBe(2);
    } finally {
      app.runs.open(key);
      await app.close();
    }
  }, 30_000);

  it('a request that takes over an expired record waited for before: its completion notifies nobody', async () => {
    const app = await startWaitApp(adapter, { retentionMs: RETENTION_MS, waitInFlightMs: 8_000 });
    const key = randomUUID();
    try {
      await listen(app);
      const first = post(app, key);
      await waitForRecord(app.tableName, key, 'in_progress');
      const duplicate = post(app, key);
      await waitFor('the duplicate to mark the record', () => hasWaiters(app, key));
      app.runs.open(key);
      const original = await first;
      expect(original.status).toBe(201);
      expectReplayOf(await duplicate, original);
      // The waited-for completion notified once, as it should.
      await waitFor('the notification', () => heard.length > 0);
      expect(heard).toEqual([settledPayload('', key)]);

      // Past its retention the record is claimed anew: nobody waits for this run.
      await sleep(RETENTION_MS + 200);
      const again = await post(app, key);
      expect(again.status).toBe(201);
      expect(app.runs.of(key)).toBe(2);
      const markedAfterTakeover = await hasWaiters(app, key);
      await settle();
      expect({ markedAfterTakeover, heard }).toEqual({
        markedAfterTakeover: false,
        heard: [settledPayload('', key)],
      });
    } finally {
      app.runs.open(key);
      await app.close();
    }
  }, 30_000);
});
