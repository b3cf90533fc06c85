// A record whose retention ran out while its request is still in flight (a route with
// retentionMs shorter than the handler) must not be taken over while its lease holds:
// CONTRACT "What must never happen" allows a second run only once the lease passed.
// (Found as a bug: the claim once took such a record over on `expires_at` alone.)
import { randomUUID } from 'node:crypto';
import { send } from '../support/http.js';
import { expectRetryable } from '../support/problem.js';
import { Db, waitFor } from '../support/processes.js';
import { ADAPTERS, createTestApp, type TestApp } from '../support/test-app.js';

const BOOKINGS = '/x/partners/p1/bookings';

const db = new Db();
afterAll(async () => {
  await db.end();
});

describe.each(ADAPTERS)('retention shorter than a request in flight, under %s', (adapter) => {
  let t: TestApp;

  /**
   * Sends a slow first request (3 s handler) and resolves once its handler is running and
   * its record's retention has passed while the lease (20 s) still holds.
   */
  async function firstInFlightPastExpiry(key: string) {
    const before = t.runs.count('book');
    const first = send(t.url, BOOKINGS, {
      headers: [['x-idempotency-key', key]],
      body: { product: 'expiry', delayMs: 3_000 },
    });
    await waitFor('the handler to start', () => t.runs.count('book') === before + 1);
    await waitFor('the retention to pass', async () => {
      const { rows } = await db.query(
        `SELECT expires_at <= now() AS expired, locked_until > now() AS leased
           FROM "${t.tableName}" WHERE idempotency_key = $1`,
        [key],
      );
      return rows[0]?.expired === true && rows[0]?.leased === true;
    });
    return { first, runsBefore: before };
  }

  beforeAll(async () => {
    t = await createTestApp(adapter, { retentionMs: 1_000, leaseMs: 20_000 });
  }, 30_000);
  afterAll(async () => {
    await t?.close();
  }, 30_000);

  it('a retry after expires_at but within the lease gets 423, not a second run', async () => {
    const key = randomUUID();
    const { first, runsBefore } = await firstInFlightPastExpiry(key);
    const retry = await send(t.url, BOOKINGS, {
      headers: [['x-idempotency-key', key]],
      body: { product: 'expiry', delayMs: 3_000 },
    });
    const firstAnswer = await first;
    expectRetryable(retry, 423, 'idempotency_request_in_flight');
    expect(firstAnswer.status).toBe(201);
    expect(t.runs.count('book')).toBe(runsBefore + 1);
  }, 20_000);

  it('a different request with that key, same moment, gets 422, not a run', async () => {
    const key = randomUUID();
    const { first, runsBefore } = await firstInFlightPastExpiry(key);
    const other = await send(t.url, BOOKINGS, {
      headers: [['x-idempotency-key', key]],
      body: { product: 'something else' },
    });
    const firstAnswer = await first;
    expect(other.status).toBe(422);
    expect(firstAnswer.status).toBe(201);
    expect(t.runs.count('book')).toBe(runsBefore + 1);
  }, 20_000);
});
