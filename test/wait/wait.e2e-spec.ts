// waitInFlightMs, in one process under Express and Fastify, with real parallel requests on
// the real Postgres: a duplicate of a request still running waits for it and gets its
// replay (409, same bytes), or 423 with Retry-After once the wait ends; the wait is capped,
// ends on shutdown, holds no pool connection, and never delays a 422. A failed first
// request frees the key for exactly one of its waiters. (Across processes, and with the
// notification lost: test/resilience/wait-processes.e2e-spec.ts.)
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  IdempotencyStore,
  PostgresIdempotencyListener,
  PostgresIdempotencyStore,
  listenerApplicationName,
  type SqlExecutor,
} from '../../src/index.js';
import { settledPayload } from '../../src/postgres-idempotency.store.js';
import { IdempotencyWaiters } from '../../src/idempotency.waiters.js';
import { WAIT_POLL_MS } from '../../src/idempotency.constants.js';
import { parallel, send, type TestResponse } from '../support/http.js';
import {
  expectProblem,
  expectReplayOf,
  expectRetryable,
  statusCounts,
} from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { ADAPTERS, waitForRecord, type AdapterName } from '../support/test-app.js';
import { SHORT_WAIT_MS, startWaitApp, type SlowBody, type WaitApp } from './wait-app.js';

/** The module's wait in these tests: far longer than any handler below, unless said. */
const WAIT_MS = 8_000;
const MAX_WAITERS = 3;

interface Timed {
  response: TestResponse;
  /** When the answer arrived (Date.now()). */
  at: number;
}

function post(
  app: WaitApp,
  path: string,
  key: string,
  body: SlowBody,
  extra: Array<[string, string]> = [],
): Promise<Timed> {
  return send(app.url, path, { headers: [['x-idempotency-key', key], ...extra], body }).then(
    (response) => ({ response, at: Date.now() }),
  );
}

describe.each(ADAPTERS)('waitInFlightMs under %s', (adapter: AdapterName) => {
  let app: WaitApp;

  beforeAll(async () => {
    app = await startWaitApp(adapter, {
      waitInFlightMs: WAIT_MS,
      maxInFlightWaiters: MAX_WAITERS,
    });
  });
  afterAll(async () => {
    await app?.close();
  });

  /**
   * Sends the first request; resolves once its claim is in the table, with its answer to
   * come (wrapped: awaiting a returned promise would wait for the answer itself).
   */
  async function first(
    path: string,
    key: string,
    body: SlowBody,
    extra?: Array<[string, string]>,
  ): Promise<{ answer: Promise<Timed> }> {
    const answer = post(app, path, key, body, extra);
    await waitForRecord(app.tableName, key, 'in_progress');
    return { answer };
  }

  it('duplicates wait and get the replay, same bytes, once the first completes', async () => {
    const key = randomUUID();
    const body = { delayMs: 1_000, seats: 2 };
    const { answer: running } = await first('/slow', key, body);
    const sent = Date.now();
    const duplicates = await parallel(MAX_WAITERS, () => post(app, '/slow', key, body));
    const original = await running;
    expect({ status: original.response.status, body: original.response.text }).toMatchObject({
      status: 201,
    });
    // Sent while the first was in flight, and answered with its result: they waited.
    for (const { response } of duplicates) expectReplayOf(response, original.response);
    expect(app.runs.of(key)).toBe(1);
    const latencies = duplicates.map(({ at }) => at - original.at);
    console.log(
      `${adapter}: ${MAX_WAITERS} waiters answered ${latencies.join(', ')} ms after the first (sent ${original.at - sent} ms before it completed)`,
    );
  });

  it('the wait never exceeds its limit: 423 with Retry-After while the first still runs', async () => {
    const key = randomUUID();
    const body = { delayMs: SHORT_WAIT_MS + 2_000 };
    const { answer: running } = await first('/short-wait', key, body);
    const sent = Date.now();
    const { response, at } = await post(app, '/short-wait', key, body);
    expectRetryable(response, 423, 'idempotency_request_in_flight');
    expect(Number(response.headers['retry-after'])).toBe(2);
    // It waited its SHORT_WAIT_MS (the route's, over the module's 8 s), and answered
    // while the first was still running.
    expect(at - sent).toBeGreaterThanOrEqual(SHORT_WAIT_MS - 10);
    // ...and no longer: one more claim after the deadline, with room for a loaded machine.
    expect(at - sent).toBeLessThan(SHORT_WAIT_MS + 1_500);
    const original = await running;
    expect(original.at).toBeGreaterThan(at);
    expect(original.response.status).toBe(201);
    expect(app.runs.of(key)).toBe(1);
  });

  it('a route with waitInFlightMs: 0 answers 423 at once, as published', async () => {
    const key = randomUUID();
    const body = { delayMs: 1_500 };
    const { answer: running } = await first('/no-wait', key, body);
    const { response, at } = await post(app, '/no-wait', key, body);
    expectRetryable(response, 423, 'idempotency_request_in_flight');
    const original = await running;
    expect(original.at).toBeGreaterThan(at);
    expect(app.runs.of(key)).toBe(1);
  });

  it('a different body under the key gets 422 at once, without waiting', async () => {
    const key = randomUUID();
    const { answer: running } = await first('/slow', key, { delayMs: 1_500 });
    const { response, at } = await post(app, '/slow', key, { delayMs: 1_500, other: true });
    expectProblem(response, 422, 'idempotency_key_reused');
    const original = await running;
    expect(original.at).toBeGreaterThan(at);
    expect(app.runs.of(key)).toBe(1);
  });

  it(`beyond ${MAX_WAITERS} waiters, a duplicate answers 423 at once`, async () => {
    const key = randomUUID();
    const body = { delayMs: 1_500 };
    const { answer: running } = await first('/slow', key, body);
    const duplicates = await parallel(MAX_WAITERS + 3, () => post(app, '/slow', key, body));
    const original = await running;
    const counts = statusCounts(duplicates.map((d) => d.response));
    expect(counts).toEqual({ 409: MAX_WAITERS, 423: 3 });
    for (const { response, at } of duplicates) {
      if (response.status === 409) expectReplayOf(response, original.response);
      else {
        expectRetryable(response, 423, 'idempotency_request_in_flight');
        // Refused while the first was still running, not after a wait.
        expect(at).toBeLessThan(original.at);
      }
    }
    expect(app.runs.of(key)).toBe(1);
  });

  it('a first request that fails frees the key: one waiter runs it, the others replay that run', async () => {
    const key = randomUUID();
    const body = { delayMs: 800 };
    const { answer: failing } = await first('/slow', key, body, [['x-fail', '1']]);
    const duplicates = await parallel(MAX_WAITERS, () => post(app, '/slow', key, body));
    const failed = await failing;
    expect(failed.response.status).toBe(500);
    const responses = duplicates.map((d) => d.response);
    expect(statusCounts(responses)).toEqual({ 201: 1, 409: MAX_WAITERS - 1 });
    const winner = responses.find((r) => r.status === 201)!;
    expect(winner.json).toMatchObject({ key, run: 2 });
    for (const response of responses) if (response.status === 409) expectReplayOf(response, winner);
    expect(app.runs.of(key)).toBe(2);
  });

  it('a transactional first request: waiters get the replay once it commits', async () => {
    const key = randomUUID();
    const body = { delayMs: 700 };
    const { answer: running } = await first('/tx', key, body);
    const duplicates = await parallel(2, () => post(app, '/tx', key, body));
    const original = await running;
    expect(original.response.status).toBe(200);
    for (const { response } of duplicates) expectReplayOf(response, original.response);
    expect(app.runs.of(key)).toBe(1);
  });
});

describe.each(ADAPTERS)(
  'waiting costs no pool connection, and ends on shutdown (%s)',
  (adapter) => {
    it('3 waiters on a pool of 2: other keys still run, and the waiters get their replay', async () => {
      const applicationName = `wait-pool-${randomUUID().slice(0, 8)}`;
      const app = await startWaitApp(adapter, {
        connection: {
          type: 'postgres',
          url: process.env.DATABASE_URL,
          poolSize: 2,
          applicationName,
        },
        waitInFlightMs: WAIT_MS,
      });
      const db = new pg.Client(process.env.DATABASE_URL);
      await db.connect();
      try {
        const key = randomUUID();
        // Long enough for the four other keys below to run through the pool of 2 before it
        // ends, also on a loaded machine (1.5 s was not, once).
        const body = { delayMs: 4_000 };
        const running = post(app, '/slow', key, body);
        await waitForRecord(app.tableName, key, 'in_progress');
        const waiting = parallel(3, () => post(app, '/slow', key, body));
        // The three are waiting (each holds a place among the waiters) before the others go.
        const waiters = app.app.get(IdempotencyWaiters);
        await waitFor('the three duplicates to wait', () => waiters.count === 3);
        // While they wait (the first still runs), new keys go through the pool of 2.
        const others = await parallel(4, () => post(app, '/slow', randomUUID(), {}));
        const answeredAt = Math.max(...others.map((o) => o.at));
        expect(others.map((o) => o.response.status)).toEqual([201, 201, 201, 201]);
        // Postgres sees the pool (at most 2) and one listening connection of this process.
        // The first wait opens that connection; on a loaded machine it may still be
        // connecting once the four others are done, so it is waited for, then counted.
        const listener = `${applicationName}:listen:${process.pid}`;
        let names: string[] = [];
        await waitFor('the listening connection', async () => {
          const { rows } = await db.query<{ application_name: string }>(
            `SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1`,
            [`${applicationName}%`],
          );
          names = rows.map((r) => r.application_name);
          return names.includes(listener);
        });
        expect(names.filter((n) => n === applicationName).length).toBeLessThanOrEqual(2);
        expect(names.filter((n) => n === listener)).toHaveLength(1);
        const original = await running;
        expect(original.at).toBeGreaterThan(answeredAt);
        for (const { response } of await waiting) expectReplayOf(response, original.response);
        expect(app.runs.of(key)).toBe(1);
        await app.stop();
        // On shutdown the listening connection goes with the pool (backends exit a moment
        // after their client hangs up).
        await waitFor("the app's connections to close", async () => {
          const after = await db.query(
            `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE $1`,
            [`${applicationName}%`],
          );
          return after.rows.length === 0;
        });
      } finally {
        await db.end();
        await app.close();
      }
    });

    it('on shutdown, waiters answer 423 at once instead of holding the server open', async () => {
      const app = await startWaitApp(adapter, { waitInFlightMs: 30_000 });
      try {
        const key = randomUUID();
        const body = { delayMs: 2_000 };
        const running = post(app, '/slow', key, body);
        await waitForRecord(app.tableName, key, 'in_progress');
        const waiting = parallel(2, () => post(app, '/slow', key, body));
        const waiters = app.app.get(IdempotencyWaiters);
        await waitFor('both duplicates to wait', () => waiters.count === 2);
        const stopping = app.stop();
        const answers = await waiting;
        const original = await running;
        await stopping;
        for (const { response, at } of answers) {
          expectRetryable(response, 423, 'idempotency_request_in_flight');
          expect(at).toBeLessThan(original.at);
        }
        // The first request still finished and was answered (the server waits for it).
        expect(original.response.status).toBe(201);
        expect(app.runs.of(key)).toBe(1);
      } finally {
        await app.close();
      }
    });
  },
);

describe('notifications', () => {
  it('a completion notifies only when someone waits for it: never for new keys, once for a waited key', async () => {
    const app = await startWaitApp('express', { waitInFlightMs: WAIT_MS });
    const listener = new pg.Client(process.env.DATABASE_URL);
    await listener.connect();
    try {
      const store = app.app.get(IdempotencyStore) as PostgresIdempotencyStore;
      const heard: string[] = [];
      listener.on('notification', (message) => heard.push(message.payload ?? ''));
      await listener.query(`LISTEN "${store.notificationChannel}"`);

      // Nobody waits: new keys, a replay, a 423 on a route that does not wait, a failure.
      const keys = Array.from({ length: 5 }, () => randomUUID());
      for (const key of keys) expect((await post(app, '/slow', key, {})).response.status).toBe(201);
      expect((await post(app, '/slow', keys[0], {})).response.status).toBe(409);
      const held = randomUUID();
      const running = post(app, '/no-wait', held, { delayMs: 500 });
      await waitForRecord(app.tableName, held, 'in_progress');
      expect((await post(app, '/no-wait', held, { delayMs: 500 })).response.status).toBe(423);
      expect((await running).response.status).toBe(201);
      expect((await post(app, '/slow', randomUUID(), {}, [['x-fail', '1']])).response.status).toBe(
        500,
      );

      // One key waited for by two duplicates: one notification, for that record.
      const waited = randomUUID();
      const first = post(app, '/slow', waited, { delayMs: 800 });
      await waitForRecord(app.tableName, waited, 'in_progress');
      const duplicates = await parallel(2, () => post(app, '/slow', waited, { delayMs: 800 }));
      const original = await first;
      for (const { response } of duplicates) expectReplayOf(response, original.response);
      // Delivered asynchronously: give it a moment to arrive before counting.
      await waitFor('the notification', () => heard.length > 0);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(heard).toEqual([settledPayload('', waited)]);
    } finally {
      await listener.end();
      await app.close();
    }
  });
});

describe('a notification lost on the way', () => {
  it.each(ADAPTERS)(
    '%s: the waiter still gets its replay within the poll bound',
    async (adapter) => {
      // The app reaches Postgres through a proxy that, once the listener listens, drops
      // everything sent to it: a network losing packets, not a closed connection, so the
      // listener never learns; only the poll bound ends the wait.
      const proxy = TcpProxy.forUrl(process.env.DATABASE_URL!);
      await proxy.open();
      const applicationName = `wait-lost-${randomUUID().slice(0, 8)}`;
      const app = await startWaitApp(adapter, {
        connection: {
          type: 'postgres',
          url: proxy.url(process.env.DATABASE_URL!),
          applicationName,
        },
        waitInFlightMs: WAIT_MS,
      });
      try {
        const key = randomUUID();
        const body = { delayMs: 1_200 };
        const running = post(app, '/slow', key, body);
        await waitForRecord(app.tableName, key, 'in_progress');
        const waiting = post(app, '/slow', key, body);
        // Once the waiter has marked the record it listens, so muting loses what comes next.
        await waitForMark(app.tableName, key);
        expect(proxy.mute(`${applicationName}:listen:`)).toBe(1);
        const original = await running;
        const duplicate = await waiting;
        expectReplayOf(duplicate.response, original.response);
        expect(duplicate.at - original.at).toBeLessThan(WAIT_POLL_MS + 1_500);
        expect(app.runs.of(key)).toBe(1);
        console.log(
          `${adapter}: with its notification lost, the waiter was answered ${duplicate.at - original.at} ms after the first (poll bound ${WAIT_POLL_MS} ms)`,
        );
      } finally {
        await proxy.close();
        await app.close();
      }
    },
  );
});

describe('a listening connection that never answers', () => {
  it('waits end within the poll bound: the waiter still gets its replay', async () => {
    const proxy = TcpProxy.forUrl(process.env.DATABASE_URL!);
    await proxy.open();
    const applicationName = `wait-stall-${randomUUID().slice(0, 8)}`;
    // Muted before it ever connects: connecting never completes, LISTEN never happens.
    proxy.mute(`${applicationName}:listen:`);
    const app = await startWaitApp('express', {
      connection: { type: 'postgres', url: proxy.url(process.env.DATABASE_URL!), applicationName },
      waitInFlightMs: WAIT_MS,
    });
    try {
      const key = randomUUID();
      const body = { delayMs: 1_200 };
      const running = post(app, '/slow', key, body);
      await waitForRecord(app.tableName, key, 'in_progress');
      const duplicate = await post(app, '/slow', key, body);
      const original = await running;
      expectReplayOf(duplicate.response, original.response);
      expect(duplicate.at - original.at).toBeLessThan(WAIT_POLL_MS + 1_500);
      expect(app.runs.of(key)).toBe(1);
    } finally {
      await app.stop();
      await proxy.close();
      await app.close();
    }
  });
});

describe('waiters of one record in one process', () => {
  it('share one mark and wake to one shared claim, not one each', async () => {
    const seed = await startWaitApp('express', { waitInFlightMs: 0 });
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
    const statements = new Map<string, number>();
    const counting: SqlExecutor = {
      query: (statement) => {
        // Both forms of the claim (the one that clears has_waiters on a takeover) count as one.
        const kind = statement.name.replace(/^idem_[0-9a-f]+_/, '').replace(/_reset_waiters$/, '');
        statements.set(kind, (statements.get(kind) ?? 0) + 1);
        return pool.query(statement);
      },
    };
    const listener = new PostgresIdempotencyListener(
      () =>
        new pg.Client({
          connectionString: process.env.DATABASE_URL,
          application_name: listenerApplicationName('wait-share'),
        }),
    );
    const app = await startWaitApp('express', {
      connection: undefined,
      store: new PostgresIdempotencyStore(counting, seed.tableName, { listener }),
      runMigrations: false,
      tableName: seed.tableName,
      waitInFlightMs: WAIT_MS,
      maxInFlightWaiters: 20,
    });
    try {
      const key = randomUUID();
      const body = {};
      const running = post(app, '/gated', key, body);
      await waitForRecord(app.tableName, key, 'in_progress');
      statements.clear();
      const waiters = app.app.get(IdempotencyWaiters);
      const waiting = parallel(10, () => post(app, '/gated', key, body));
      await waitFor('the duplicates to wait', () => waiters.count === 10, 30_000);
      app.runs.open(key);
      const original = await running;
      for (const { response } of await waiting) expectReplayOf(response, original.response);
      expect(app.runs.of(key)).toBe(1);
      // 10 first claims, one mark, one completion; after the wake-up one claim for all ten.
      // (A waiter that has waited the poll bound before the gate opens claims again and
      // may mark again: a loaded machine can add a cycle, never one per duplicate.)
      console.log(`statements for 10 waiters: ${JSON.stringify(Object.fromEntries(statements))}`);
      expect(statements.get('complete_notifying')).toBe(1);
      expect(statements.get('mark_waited')).toBeLessThanOrEqual(2);
      expect(statements.get('claim')).toBeGreaterThanOrEqual(11);
      expect(statements.get('claim')).toBeLessThanOrEqual(13);
    } finally {
      await app.close();
      await listener.close();
      await pool.end();
      await seed.close();
    }
  });
});

describe('a store that cannot notify', () => {
  it('waits by polling: the duplicate still gets its replay', async () => {
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 3 });
    // The Postgres store without a listener: no notifications, so waits poll.
    const seed = await startWaitApp('express', { waitInFlightMs: 0 });
    const app = await startWaitApp('express', {
      connection: undefined,
      store: new PostgresIdempotencyStore(pool, seed.tableName),
      runMigrations: false,
      tableName: seed.tableName,
      waitInFlightMs: WAIT_MS,
    });
    try {
      const key = randomUUID();
      const body = { delayMs: 800 };
      const running = post(app, '/slow', key, body);
      await waitForRecord(app.tableName, key, 'in_progress');
      const duplicate = await post(app, '/slow', key, body);
      const original = await running;
      expectReplayOf(duplicate.response, original.response);
      expect(app.runs.of(key)).toBe(1);
    } finally {
      await app.close();
      await seed.close();
      await pool.end();
    }
  });
});

/** Waits until a waiter has marked the record (and so is listening for it). */
async function waitForMark(tableName: string, key: string): Promise<void> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    await waitFor(`a waiter to mark ${key}`, async () => {
      const { rows } = await client.query(
        `SELECT 1 FROM "${tableName}" WHERE idempotency_key = $1 AND has_waiters`,
        [key],
      );
      return rows.length > 0;
    });
  } finally {
    await client.end();
  }
}
