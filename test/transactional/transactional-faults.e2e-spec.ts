// Issue 10.7 and 10.8 on `transactional: true` routes: the database freezes or goes away
// while the handler runs, so its transaction cannot be settled. The client gets 503 with
// Retry-After within `statementTimeoutMs` of the handler's end (no hanging on a frozen
// server), the booking is rolled back, and the key is free again soon after the database is
// back (the release that failed with the commit is retried in the background), instead of
// answering 423 for the whole lease.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { idempotencyRecordsDdl } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import { expectRetryable } from '../support/problem.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { waitFor } from '../support/processes.js';
import { ADAPTERS, sleep, uniqueTableName } from '../support/test-app.js';
import { bookingsDdl, startTransactionalApp } from '../support/transactional-app.js';

const TIMEOUT_MS = 1_000;
/** Far longer than the test: a key still held shows up as 423s. */
const LEASE_MS = 120_000;
const HANDLER_MS = 600;

let db: pg.Client;
beforeAll(async () => {
  db = new pg.Client(process.env.DATABASE_URL);
  await db.connect();
});
afterAll(async () => {
  await db?.end();
});

describe.each(ADAPTERS)(
  'transactional route, database faults while the handler runs (%s)',
  (adapter) => {
    const tableName = uniqueTableName('idem_txf');
    const bookingsTable = `${tableName}_bookings`;
    let proxy: TcpProxy;
    let app: Awaited<ReturnType<typeof startTransactionalApp>>;
    /** Bookings the handler has inserted (in its transaction, so invisible to other sessions). */
    let inserted = 0;

    beforeAll(async () => {
      for (const statement of idempotencyRecordsDdl(tableName).up) await db.query(statement);
      for (const statement of bookingsDdl(tableName, bookingsTable)) await db.query(statement);
      proxy = TcpProxy.forUrl(process.env.DATABASE_URL!);
      await proxy.open();
      app = await startTransactionalApp({
        adapter,
        tableName,
        bookingsTable,
        leaseMs: LEASE_MS,
        connection: {
          type: 'postgres',
          url: proxy.url(process.env.DATABASE_URL!),
          connectTimeoutMS: 1_000,
        },
        moduleOptions: { statementTimeoutMs: TIMEOUT_MS, retryAfterSeconds: 2 },
        onInserted: () => inserted++,
      });
    }, 30_000);

    afterAll(async () => {
      proxy.resume();
      if (!proxy.listening) await proxy.open();
      await app?.app.close();
      await proxy.close();
      await db.query(`DROP TABLE IF EXISTS "${bookingsTable}"`);
      await db.query(`DROP FUNCTION IF EXISTS "${bookingsTable}_fail"() CASCADE`);
      for (const statement of idempotencyRecordsDdl(tableName).down) await db.query(statement);
    }, 30_000);

    // A failed case must not leave the next one a frozen or closed database.
    afterEach(async () => {
      proxy.resume();
      if (!proxy.listening) await proxy.open();
    });

    const book = (key: string, product: string): Promise<TestResponse> =>
      send(app.url, '/bookings', {
        headers: [['x-idempotency-key', key]],
        body: { product, delayMs: HANDLER_MS },
      });

    const bookings = async (product: string) =>
      (
        await db.query(`SELECT count(*)::int AS n FROM "${bookingsTable}" WHERE product = $1`, [
          product,
        ])
      ).rows[0].n as number;

    /**
     * Sends a booking and waits until its handler has written it, the fault's moment. Not the
     * record turning in_progress: that is the claim, before the transaction and the handler's
     * INSERT, and a database frozen in between freezes the handler's own statement, which
     * nothing of the module bounds. On a loaded machine the module may also answer 503 before
     * the handler runs (a pool connection or BEGIN slower than statementTimeoutMs; seen once in
     * a full CI run): that attempt says nothing about the fault, so another key is booked, up
     * to three times.
     */
    async function bookUntilInserted(label: string) {
      for (let attempt = 1; ; attempt++) {
        const key = randomUUID();
        const product = `${label}-${key}`;
        const before = inserted;
        const pending = book(key, product);
        let answered = false;
        void pending.then(
          () => (answered = true),
          () => (answered = true),
        );
        await waitFor('the handler to insert its booking, or an answer', () => {
          return inserted > before || answered;
        });
        if (inserted > before) return { key, product, pending };
        // Answered before its handler ran: only the fail-closed answer may come first.
        expectRetryable(await pending, 503, 'idempotency_store_unavailable');
        if (attempt === 3) throw new Error('the handler did not run in 3 attempts');
      }
    }

    /** Retries until the answer is neither 423 nor 503, for `ms` at most. */
    async function retryUntilSettled(key: string, product: string, ms: number) {
      const deadline = Date.now() + ms;
      const statuses: number[] = [];
      let answer = await book(key, product);
      statuses.push(answer.status);
      while ([423, 503].includes(answer.status) && Date.now() < deadline) {
        await sleep(250);
        answer = await book(key, product);
        statuses.push(answer.status);
      }
      return { answer, statuses };
    }

    it('a frozen database: 503 within the bound, rolled back, and the key runs once on resume', async () => {
      const { key, product, pending } = await bookUntilInserted('frozen');
      proxy.pause();
      const frozenAt = Date.now();
      const answer = await pending;
      const answeredAfter = Date.now() - frozenAt;
      expect(expectRetryable(answer, 503, 'idempotency_store_unavailable')).toBe(2);
      console.log(
        `${adapter}: transactional answer ${answer.status} ${answeredAfter} ms after the freeze`,
      );
      // Answered while the database was still frozen, which it stays for a while longer.
      await sleep(Math.max(0, frozenAt + HANDLER_MS + 4 * TIMEOUT_MS - Date.now()));
      proxy.resume();

      const { answer: retried, statuses } = await retryUntilSettled(key, product, 10_000);
      expect({ statuses, status: retried.status }).toMatchObject({ status: 201 });
      expect(await bookings(product)).toBe(1);
    }, 30_000);

    it('commit and release both fail (the database goes away): the key is free once it is back', async () => {
      const { key, product, pending } = await bookUntilInserted('outage');
      // Every connection cut and none possible: the commit fails, and so does the release.
      await proxy.close();
      const answer = await pending;
      expect(expectRetryable(answer, 503, 'idempotency_store_unavailable')).toBe(2);
      await sleep(500);
      await proxy.open();

      const { answer: retried, statuses } = await retryUntilSettled(key, product, 10_000);
      expect({ statuses, status: retried.status }).toMatchObject({ status: 201 });
      expect(await bookings(product)).toBe(1);
    }, 30_000);
  },
);
