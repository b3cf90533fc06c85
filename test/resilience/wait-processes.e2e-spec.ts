// waitInFlightMs across real processes (one Express, one Fastify) on one Postgres and one
// table: duplicates waiting on one instance are answered when the other completes the
// record (woken by its notification); with the waiting instance's listening connection
// killed they still end within the poll bound; the wait never exceeds its limit; a first
// request that fails on one instance frees the key for exactly one waiter on the other.
import { randomUUID } from 'node:crypto';
import { WAIT_POLL_MS } from '../../src/idempotency.constants.js';
import { PostgresIdempotencyStore } from '../../src/index.js';
import { settledPayload } from '../../src/postgres-idempotency.store.js';
import { parallel, send, type TestResponse } from '../support/http.js';
import {
  CHILD_START_MS,
  Db,
  startAppProcess,
  stopAll,
  waitFor,
  type AppProcess,
} from '../support/processes.js';
import { expectReplayOf, expectRetryable, statusCounts } from '../support/problem.js';
import { dropTable, uniqueTableName } from '../support/test-app.js';

const WAIT_MS = 2_500;
/** Room for a loaded 2-core machine on top of the bounds the code promises. */
const SLACK_MS = 1_500;
const db = new Db();
const idemTable = uniqueTableName('idem_waitp');
const runsTable = uniqueTableName('runs_waitp');
let express: AppProcess, fastify: AppProcess;

interface Timed {
  response: TestResponse;
  at: number;
}

const post = (app: AppProcess, key: string, delayMs: number, fail = false): Promise<Timed> =>
  send(app.url, '/wait', {
    headers: [
      ['x-idempotency-key', key],
      ['x-delay-ms', String(delayMs)],
      ...(fail ? ([['x-fail', '1']] as Array<[string, string]>) : []),
    ],
    body: { product: 'wait', seats: 1 },
  }).then((response) => ({ response, at: Date.now() }));

const listenerName = (app: AppProcess) => `nest-idempotency:listen:${app.pid}`;

async function listenerBackend(app: AppProcess): Promise<number | undefined> {
  const { rows } = await db.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE application_name = $1`,
    [listenerName(app)],
  );
  return rows[0]?.pid;
}

/** Sends the first request to `app`; resolves once its handler runs, with its answer to come. */
async function first(app: AppProcess, key: string, delayMs: number, fail = false) {
  const answer = post(app, key, delayMs, fail);
  await waitFor('the first handler to run', async () => (await db.runs(runsTable, key)).length > 0);
  return { answer };
}

beforeAll(async () => {
  await db.createRunsTable(runsTable);
  [express, fastify] = await Promise.all(
    (['express', 'fastify'] as const).map((adapter) =>
      startAppProcess({
        idemTable,
        runsTable,
        adapter,
        waitInFlightMs: WAIT_MS,
        retryAfterSeconds: 1,
      }),
    ),
  );
}, CHILD_START_MS + 30_000);

afterAll(async () => {
  await Promise.all([express, fastify].filter(Boolean).map((app) => app.stop()));
  await stopAll();
  await dropTable(idemTable);
  await db.dropTables(runsTable);
  await db.end();
}, 30_000);

describe.each([
  ['Express', 'Fastify'],
  ['Fastify', 'Express'],
])('waiters on %s, first request on %s', (waiterName, firstName) => {
  const apps = () =>
    waiterName === 'Express'
      ? { waiter: express, other: fastify }
      : { waiter: fastify, other: express };

  it('are answered with the replay when the other instance completes the record', async () => {
    const { waiter, other } = apps();
    const channel = new PostgresIdempotencyStore(db.pool, idemTable).notificationChannel;
    const heard: string[] = [];
    const listening = await db.pool.connect();
    listening.on('notification', (message) => heard.push(message.payload ?? ''));
    await listening.query(`LISTEN "${channel}"`);
    try {
      const key = randomUUID();
      const { answer } = await first(other, key, 1_200);
      const duplicates = await parallel(3, () => post(waiter, key, 0));
      const original = await answer;
      expect(original.response.status).toBe(201);
      for (const { response } of duplicates) expectReplayOf(response, original.response);
      expect(await db.runs(runsTable, key)).toHaveLength(1);
      // The completing instance notified, once, for this record; the waiting one listens.
      await waitFor('the notification', () => heard.length > 0);
      expect(heard).toEqual([settledPayload('', key)]);
      expect(await listenerBackend(waiter)).toEqual(expect.any(Number));
      const latencies = duplicates.map(({ at }) => at - original.at);
      for (const latency of latencies) expect(latency).toBeLessThan(WAIT_POLL_MS + SLACK_MS);
      console.log(
        `waiters on ${waiterName} answered ${latencies.join(', ')} ms after ${firstName} completed`,
      );
    } finally {
      await listening.query(`UNLISTEN *`);
      listening.release();
    }
  }, 30_000);

  it('with their listening connection killed, still end within the poll bound', async () => {
    const { waiter, other } = apps();
    const key = randomUUID();
    const { answer } = await first(other, key, 2_000);
    const waiting = parallel(2, () => post(waiter, key, 0));
    // Kill only this process's listener (found by its application_name), once it listens.
    await waitFor(
      'the listener to connect',
      async () => (await listenerBackend(waiter)) !== undefined,
    );
    const killed = (await listenerBackend(waiter))!;
    const { rows } = await db.query(`SELECT pg_terminate_backend($1) AS done`, [killed]);
    expect(rows[0].done).toBe(true);
    const original = await answer;
    const duplicates = await waiting;
    expect(original.response.status).toBe(201);
    for (const { response, at } of duplicates) {
      expectReplayOf(response, original.response);
      expect(at - original.at).toBeLessThan(WAIT_POLL_MS + SLACK_MS);
    }
    expect(await db.runs(runsTable, key)).toHaveLength(1);
    // The waiters woke when the connection died, claimed again, and listened anew.
    await waitFor('a new listening connection', async () => {
      const pid = await listenerBackend(waiter);
      return pid !== undefined && pid !== killed;
    });
    expect(waiter.output()).toContain('The idempotency listener lost its connection');
  }, 30_000);

  it('the wait never exceeds its limit: 423 with Retry-After while the first still runs', async () => {
    const { waiter, other } = apps();
    const key = randomUUID();
    const { answer } = await first(other, key, WAIT_MS + 2_500);
    const sent = Date.now();
    const duplicates = await parallel(2, () => post(waiter, key, 0));
    const original = await answer;
    for (const { response, at } of duplicates) {
      expectRetryable(response, 423, 'idempotency_request_in_flight');
      expect(at - sent).toBeGreaterThanOrEqual(WAIT_MS - 10);
      expect(at - sent).toBeLessThan(WAIT_MS + SLACK_MS);
      expect(at).toBeLessThan(original.at);
    }
    expect(original.response.status).toBe(201);
    expect(await db.runs(runsTable, key)).toHaveLength(1);
  }, 30_000);

  it('a first request that fails frees the key: one waiter runs it, the others replay that run', async () => {
    const { waiter, other } = apps();
    const key = randomUUID();
    const { answer } = await first(other, key, 1_000, true);
    const duplicates = await parallel(3, () => post(waiter, key, 300));
    expect((await answer).response.status).toBe(500);
    const responses = duplicates.map((d) => d.response);
    expect(statusCounts(responses)).toEqual({ 201: 1, 409: 2 });
    const winner = responses.find((r) => r.status === 201)!;
    expect(winner.json).toMatchObject({ key, pid: waiter.pid });
    for (const response of responses) if (response.status === 409) expectReplayOf(response, winner);
    const runs = await db.runs(runsTable, key);
    expect(runs.map((run) => run.pid)).toEqual([other.pid, waiter.pid]);
  }, 30_000);
});
