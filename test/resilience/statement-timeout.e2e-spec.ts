// Issue 10.7: every statement the module runs has a time bound (`statementTimeoutMs`), pool
// wait included. A frozen database (the proxy paused: connections open, nothing answered,
// as under SIGSTOP) and a locked table (LOCK TABLE held by another session) both answer 503
// with Retry-After within the bound while the database is still stuck; the handler does not
// run; nothing is lost (a response that could not be stored in time is stored later); and
// once the database is back the same keys run once, without waiting for their lease.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  IdempotencyStoreTimeoutError,
  PostgresIdempotencyStore,
  idempotencyRecordsDdl,
} from '../../src/index.js';
import { parallel, send, type TestResponse } from '../support/http.js';
import { expectReplayOf, expectRetryable, statusCounts } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import {
  ADAPTERS,
  createTestApp,
  dropTable,
  sleep,
  uniqueTableName,
  type TestApp,
} from '../support/test-app.js';

const BOOKINGS = '/x/partners/p1/bookings';
const TIMEOUT_MS = 1_000;
/** More requests than the pool (10) has connections: some wait for one, some for Postgres. */
const REQUESTS = 14;

const post = (t: TestApp, key: string, body: object = { product: 'frozen' }) =>
  send(t.url, BOOKINGS, { headers: [['x-idempotency-key', key]], body });

/**
 * Sends `key` until the answer is neither 423 nor 503 (both say "retry with the same key"),
 * pausing briefly in between, for `ms` at most.
 */
async function retryUntilSettled(
  t: TestApp,
  key: string,
  ms: number,
  body?: object,
): Promise<TestResponse[]> {
  const deadline = Date.now() + ms;
  const answers = [await post(t, key, body)];
  while ([423, 503].includes(answers.at(-1)!.status) && Date.now() < deadline) {
    await sleep(200);
    answers.push(await post(t, key, body));
  }
  return answers;
}

describe.each(ADAPTERS)('statementTimeoutMs under %s', (adapter) => {
  describe('a frozen database', () => {
    let proxy: TcpProxy;
    let t: TestApp;

    beforeAll(async () => {
      proxy = TcpProxy.forUrl(process.env.DATABASE_URL!);
      await proxy.open();
      t = await createTestApp(adapter, {
        connection: {
          type: 'postgres',
          url: proxy.url(process.env.DATABASE_URL!),
          // Longer than the bound: the 503s below come from statementTimeoutMs.
          connectTimeoutMS: 20_000,
        },
        statementTimeoutMs: TIMEOUT_MS,
        retryAfterSeconds: 2,
      });
    }, 30_000);

    afterAll(async () => {
      proxy.resume();
      await t?.close();
      await proxy.close();
    }, 30_000);

    it('answers 503 within the bound while frozen, loses nothing, and frees the keys on resume', async () => {
      // Connections open in the pool, so that claims are sent to the frozen database. Each
      // warm-up key is retried until it runs: opening ten connections at once can take more
      // than the 1 s bound on a loaded machine, and a 503 then is the contract's answer.
      const warm = await parallel(10, async () =>
        (await retryUntilSettled(t, randomUUID(), 15_000)).at(-1)!,
      );
      expect(statusCounts(warm)).toEqual({ 201: 10 });

      // A handler that is running when the database freezes: its answer is delivered, and
      // stored once the database is back.
      const runningKey = randomUUID();
      const runningBody = { product: 'running', delayMs: 300 };
      const runsBefore = t.runs.count('book');
      const running = post(t, runningKey, runningBody);
      await waitFor('the handler to start', () => t.runs.count('book') === runsBefore + 1);
      proxy.pause();
      const frozenAt = Date.now();

      const keys = Array.from({ length: REQUESTS }, () => randomUUID());
      const answers = await parallel(REQUESTS, (i) => post(t, keys[i]));
      const ranAnswer = await running;
      const answeredWithin = Date.now() - frozenAt;
      console.log(
        `${adapter}: ${REQUESTS} keyed requests to a frozen database answered ${JSON.stringify(statusCounts(answers))} within ${answeredWithin} ms`,
      );
      for (const answer of answers) {
        expect(expectRetryable(answer, 503, 'idempotency_store_unavailable')).toBe(2);
      }
      expect({ status: ranAnswer.status, body: ranAnswer.text }).toMatchObject({ status: 201 });
      expect(t.runs.count('book')).toBe(runsBefore + 1);
      // Everyone was answered while the database was still frozen: it stays frozen for a
      // while longer, and nothing was waiting for it.
      await sleep(Math.max(0, frozenAt + 4 * TIMEOUT_MS - Date.now()));
      proxy.resume();

      // The keys answered 503 run once each, without waiting out their lease (60 s): a claim
      // that reached the frozen database and took effect on resume is released.
      let heldAfterResume = 0;
      for (const key of keys) {
        const retried = await retryUntilSettled(t, key, 10_000);
        if (retried.some((r) => r.status === 423)) heldAfterResume++;
        expect({ key, statuses: retried.map((r) => r.status) }).toMatchObject({
          statuses: expect.arrayContaining([201]),
        });
        expect(retried.at(-1)!.status).toBe(201);
      }
      console.log(
        `${adapter}: ${heldAfterResume} keys held briefly by a claim that landed on resume`,
      );
      expect(t.runs.count('book')).toBe(runsBefore + 1 + REQUESTS);
      // The answer delivered during the freeze was stored after all: it replays.
      const replay = await retryUntilSettled(t, runningKey, 10_000, runningBody);
      expectReplayOf(replay.at(-1)!, ranAnswer);
      expect(t.runs.count('book')).toBe(runsBefore + 1 + REQUESTS);
    }, 60_000);
  });

  describe('a locked table', () => {
    const applicationName = `idem-lock-${randomUUID().slice(0, 8)}`;
    let t: TestApp;
    let locker: pg.Client;
    let observer: pg.Client;

    beforeAll(async () => {
      t = await createTestApp(adapter, {
        connection: { type: 'postgres', url: process.env.DATABASE_URL, applicationName },
        statementTimeoutMs: TIMEOUT_MS,
        retryAfterSeconds: 2,
      });
      locker = new pg.Client(process.env.DATABASE_URL);
      observer = new pg.Client(process.env.DATABASE_URL);
      await Promise.all([locker.connect(), observer.connect()]);
    }, 30_000);

    afterAll(async () => {
      await locker?.query('ROLLBACK').catch(() => undefined);
      await Promise.all([locker?.end(), observer?.end()]);
      await t?.close();
    });

    const waitingOnLocks = async () =>
      (
        await observer.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE application_name = $1 AND wait_event_type = 'Lock'`,
          [applicationName],
        )
      ).rows[0].n as number;

    it('answers 503 within the bound, leaves no backend waiting, and runs the keys once unlocked', async () => {
      // The first request opens a connection, which can take longer than the 1 s bound on a
      // loaded machine (503, the contract's answer): it is retried until it runs.
      expect((await retryUntilSettled(t, randomUUID(), 15_000)).at(-1)!.status).toBe(201);
      const runsBefore = t.runs.count('book');
      // Only this test's own table is locked.
      await locker.query('BEGIN');
      await locker.query(`LOCK TABLE "${t.tableName}" IN ACCESS EXCLUSIVE MODE`);

      const keys = Array.from({ length: REQUESTS }, () => randomUUID());
      const answers = await parallel(REQUESTS, (i) => post(t, keys[i]));
      for (const answer of answers) {
        expect(expectRetryable(answer, 503, 'idempotency_store_unavailable')).toBe(2);
      }
      expect(t.runs.count('book')).toBe(runsBefore);
      // The statements that waited on the lock were cancelled on the server: none of the
      // app's backends is still queued behind the lock, holding a connection.
      await waitFor(
        'no backend of the app waiting on the lock',
        async () => (await waitingOnLocks()) === 0,
        5_000,
      );
      // Still locked; then released.
      await locker.query('COMMIT');

      for (const key of keys) {
        const retried = await post(t, key);
        expect({ key, status: retried.status }).toEqual({ key, status: 201 });
      }
      expect(t.runs.count('book')).toBe(runsBefore + REQUESTS);
    }, 60_000);
  });
});

/** A claim of a new key, bounded by `timeoutMs`. */
const newClaim = (timeoutMs: number) => ({
  scope: '',
  key: randomUUID(),
  fingerprint: Buffer.alloc(32),
  leaseMs: 60_000,
  retentionMs: 60_000,
  timeoutMs,
});

describe('PostgresIdempotencyStore on a plain pg Pool', () => {
  const tableName = uniqueTableName('idem_pool_store');
  let pool: pg.Pool;
  let locker: pg.Client;

  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
    for (const statement of idempotencyRecordsDdl(tableName).up) await pool.query(statement);
    locker = new pg.Client(process.env.DATABASE_URL);
    await locker.connect();
  });
  afterAll(async () => {
    await locker.end();
    await pool.end();
    await dropTable(tableName);
  });

  it('bounds its statements too: a claim on a locked table times out, and nothing lands', async () => {
    const store = new PostgresIdempotencyStore(pool, tableName);
    const claim = newClaim(300);
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE "${tableName}" IN ACCESS EXCLUSIVE MODE`);
    const failure = await store.claim(claim).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreTimeoutError);
    const late = (failure as IdempotencyStoreTimeoutError).lateClaim!;
    expect(late.record).toMatchObject({ scope: '', key: claim.key });
    // Cancelled on the server while still waiting for the lock: it never takes effect.
    expect(await late.applied).toBe(false);
    await locker.query('COMMIT');
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${tableName}"`);
    expect(rows[0].n).toBe(0);
    expect(await store.claim(claim)).toMatchObject({ outcome: 'claimed' });
  });
});

// A timed-out statement is cancelled with a CancelRequest, which travels on a connection of
// its own and may reach the server after the statement has ended anyway. Had its connection
// gone back to the pool, the late cancel would hit whatever ran next on that backend: another
// caller's statement (the application's own, on a shared DataSource).
describe('a cancel that reaches the server after its statement ended', () => {
  const tableName = uniqueTableName('idem_late_cancel');
  let proxy: TcpProxy;
  let pool: pg.Pool;
  let locker: pg.Client;

  beforeAll(async () => {
    proxy = TcpProxy.forUrl(process.env.DATABASE_URL!);
    await proxy.open();
    // One connection: the next caller gets the very one the timed-out statement ran on.
    pool = new pg.Pool({ connectionString: proxy.url(process.env.DATABASE_URL!), max: 1 });
    for (const statement of idempotencyRecordsDdl(tableName).up) await pool.query(statement);
    locker = new pg.Client(process.env.DATABASE_URL);
    await locker.connect();
  });
  afterAll(async () => {
    await locker.end();
    await pool.end();
    await proxy.close();
    await dropTable(tableName);
  });

  it('does not cancel the next statement on that connection', async () => {
    const store = new PostgresIdempotencyStore(pool, tableName, { batching: false });
    const claim = newClaim(400);
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE "${tableName}" IN ACCESS EXCLUSIVE MODE`);
    // The cancel sent at 400 ms reaches the server at about 1,400 ms.
    proxy.delayNew(1_000);
    const failure = await store.claim(claim).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreTimeoutError);
    // The lock goes within the cancel's grace: the claim ends on its own, and is answered.
    await locker.query('COMMIT');
    const late = (failure as IdempotencyStoreTimeoutError).lateClaim!;
    expect(await late.applied).toBe(true);
    // The next caller's statement is running when the cancel arrives.
    const next = await pool
      .query('SELECT pg_sleep(1.5), 1 AS done')
      .then((result) => result.rows[0].done as number)
      .catch((error: { code?: string }) => error.code);
    proxy.delayNew(0);
    expect(next).toBe(1);
  }, 15_000);
});
