// Issue 10.1 and 10.8: a transactional app in a real child process, its pool saturated by
// slow keyed requests, while another connection terminates that app's Postgres backends (and
// only those: found by a unique application_name) every second. The process must stay up
// and keep answering; every answer is a contract outcome; no booking is written twice; and
// a key answered 503 ("retry with the same key") can be retried soon, not only once its
// lease has passed.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { idempotencyRecordsDdl } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import { statusCounts } from '../support/problem.js';
import { CHILD_START_MS, startAppProcess, stopAll, type AppProcess } from '../support/processes.js';
import { ADAPTERS, sleep, uniqueTableName } from '../support/test-app.js';
import { bookingsDdl } from '../support/transactional-app.js';

const CONCURRENCY = 30;
const POOL_SIZE = 10;
const STORM_MS = 10_000;
/**
 * The storm goes on past STORM_MS, up to this, until it has answered more keys than it has
 * workers and booked at least one: on a loaded machine a 200 ms handler can take longer than
 * the 1 s between terminations, and the first 10 s may see every request cut off.
 */
const STORM_MAX_MS = 30_000;
const TERMINATE_EVERY_MS = 1_000;
const HANDLER_MS = 200;
/** Far longer than the test: a key still held after a 503 shows up as 423s. */
const LEASE_MS = 120_000;
/** How long a 503'd key may take to become usable again (a handful of background retries). */
const SETTLE_MS = 15_000;

let db: pg.Client;
beforeAll(async () => {
  db = new pg.Client({
    connectionString: process.env.DATABASE_URL,
    application_name: 'idem-test-terminator',
  });
  await db.connect();
});
afterAll(async () => {
  await stopAll();
  await db?.end();
});

describe.each(ADAPTERS)('backend terminations under a saturated pool (%s)', (adapter) => {
  const tableName = uniqueTableName('idem_term');
  const bookingsTable = `${tableName}_bookings`;
  const applicationName = `idem-term-${randomUUID().slice(0, 8)}`;
  let app: AppProcess;

  beforeAll(async () => {
    for (const statement of idempotencyRecordsDdl(tableName).up) await db.query(statement);
    for (const statement of bookingsDdl(tableName, bookingsTable)) await db.query(statement);
    app = await startAppProcess({
      idemTable: tableName,
      runsTable: bookingsTable,
      adapter,
      entry: 'test/support/transactional-server.ts',
      env: {
        TABLE_NAME: tableName,
        BOOKINGS_TABLE: bookingsTable,
        APPLICATION_NAME: applicationName,
        POOL_SIZE: String(POOL_SIZE),
        LEASE_MS: String(LEASE_MS),
        EXIT_WITH_STDIN: '1',
      },
    });
  }, CHILD_START_MS + 30_000);

  afterAll(async () => {
    await app?.stop();
    await db.query(`DROP TABLE IF EXISTS "${bookingsTable}"`);
    await db.query(`DROP FUNCTION IF EXISTS "${bookingsTable}_fail"() CASCADE`);
    for (const statement of idempotencyRecordsDdl(tableName).down) await db.query(statement);
  });

  const alive = () => {
    try {
      process.kill(app.pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const book = (key: string): Promise<TestResponse> =>
    send(app.url, '/bookings', {
      headers: [['x-idempotency-key', key]],
      body: { product: key, delayMs: HANDLER_MS },
    });

  it('stays up, answers only 201/409/423/503, never books twice, and frees keys it answered 503', async () => {
    // Terminates only this app's backends, never anybody else's.
    let terminated = 0;
    let terminating = true;
    const terminator = (async () => {
      while (terminating) {
        await sleep(TERMINATE_EVERY_MS);
        const { rows } = await db.query(
          `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n
             FROM pg_stat_activity
            WHERE application_name = $1 AND pid <> pg_backend_pid()`,
          [applicationName],
        );
        terminated += rows[0].n;
      }
    })();

    const answers = new Map<string, number[]>();
    const failures: string[] = [];
    const stormStart = Date.now();
    let booked201 = false;
    const stormGoesOn = () => {
      const ran = Date.now() - stormStart;
      if (ran >= STORM_MAX_MS) return false;
      return ran < STORM_MS || !booked201 || answers.size <= CONCURRENCY;
    };
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (stormGoesOn() && alive()) {
          const key = randomUUID();
          try {
            const { status } = await book(key);
            answers.set(key, [status]);
            if (status === 201) booked201 = true;
          } catch (error) {
            failures.push(String(error));
          }
        }
      }),
    );
    terminating = false;
    await terminator;

    const firstAnswers = [...answers.values()].map(([status]) => ({ status }) as TestResponse);
    console.log(
      `${adapter}: ${answers.size} keys in ${Date.now() - stormStart} ms, ${terminated} backends terminated, answers ${JSON.stringify(statusCounts(firstAnswers))}`,
    );
    const crash = /^.*(Unhandled|uncaught|terminating connection).*$/im.exec(app.output())?.[0];
    expect({ alive: alive(), crash, failures: failures.slice(0, 3) }).toEqual({
      alive: true,
      crash: undefined,
      failures: [],
    });
    expect(terminated).toBeGreaterThan(0);
    expect(answers.size).toBeGreaterThan(CONCURRENCY);
    for (const [status] of answers.values()) expect([201, 409, 423, 503]).toContain(status);
    expect(firstAnswers.some(({ status }) => status === 201)).toBe(true);

    // Still answering: a new key books once.
    const fresh = randomUUID();
    expect((await book(fresh)).status).toBe(201);

    // A key answered 503 is free again soon (or holds the result it did commit after all):
    // retried in rounds, a few at a time, as clients honouring Retry-After would.
    const settleBy = Date.now() + SETTLE_MS;
    let unsettled = [...answers].filter(([, [status]]) => status !== 201).map(([key]) => key);
    while (unsettled.length > 0 && Date.now() < settleBy) {
      const round = [...unsettled];
      unsettled = [];
      await Promise.all(
        Array.from({ length: POOL_SIZE / 2 }, async () => {
          for (let key = round.shift(); key; key = round.shift()) {
            const retry = await book(key);
            answers.get(key)!.push(retry.status);
            if (retry.status !== 201 && retry.status !== 409) unsettled.push(key);
          }
        }),
      );
      if (unsettled.length > 0) await sleep(500);
    }
    expect(unsettled.map((key) => [key, answers.get(key)])).toEqual([]);

    // Every key booked exactly once: answered 201 or 409, never twice.
    const { rows } = await db.query<{ product: string; n: number }>(
      `SELECT product, count(*)::int AS n FROM "${bookingsTable}" GROUP BY product`,
    );
    const booked = new Map(rows.map((row) => [row.product, row.n]));
    expect([...booked.values()].filter((n) => n > 1)).toEqual([]);
    for (const key of [...answers.keys(), fresh]) expect([key, booked.get(key)]).toEqual([key, 1]);
  }, 150_000);
});
