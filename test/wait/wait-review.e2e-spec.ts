// waitInFlightMs, the edges: waiters whose clients leave, many keys waited on at once with
// the listening connection lost meanwhile, and nothing left behind once every wait is over.
import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import pg from 'pg';
import {
  IdempotencyStore,
  PostgresIdempotencyListener,
  idempotencyKeyHash,
} from '../../src/index.js';
import { EventLog } from '../support/events.js';
import { IdempotencyWaiters } from '../../src/idempotency.waiters.js';
import { parallel, send } from '../support/http.js';
import { expectReplayOf, expectRetryable, statusCounts } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { ADAPTERS, waitForRecord } from '../support/test-app.js';
import { startWaitApp, type WaitApp } from './wait-app.js';

const WAIT_MS = 8_000;

function post(app: WaitApp, path: string, key: string, body: object) {
  return send(app.url, path, { headers: [['x-idempotency-key', key]], body });
}

/** Sends a request and returns a function that drops its connection, unanswered. */
function postThenLeave(app: WaitApp, path: string, key: string, body: object): () => void {
  const url = new URL(path, app.url);
  const payload = JSON.stringify(body);
  const req = request({
    host: url.hostname,
    port: url.port,
    path: url.pathname,
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(payload)),
      'x-idempotency-key': key,
    },
  });
  req.on('error', () => undefined);
  req.end(payload);
  return () => req.destroy();
}

describe.each(ADAPTERS)('waiters whose clients leave (%s)', (adapter) => {
  let app: WaitApp;
  beforeAll(async () => {
    app = await startWaitApp(adapter, { waitInFlightMs: WAIT_MS, maxInFlightWaiters: 2 });
  });
  afterAll(() => app?.close());

  it('give their place back: a later duplicate waits and gets the replay, not 423 at once', async () => {
    const key = randomUUID();
    const running = post(app, '/gated', key, {});
    await waitForRecord(app.tableName, key, 'in_progress');
    const waiters = app.app.get(IdempotencyWaiters);
    const leave = [postThenLeave(app, '/gated', key, {}), postThenLeave(app, '/gated', key, {})];
    await waitFor('both duplicates to wait', () => waiters.count === 2);
    for (const drop of leave) drop();
    await waitFor(
      'the waiters whose clients left to stop waiting',
      () => waiters.count === 0,
      3_000,
    );
    const duplicate = post(app, '/gated', key, {});
    await waitFor('the new duplicate to wait', () => waiters.count === 1);
    app.runs.open(key);
    expectReplayOf(await duplicate, await running);
  });
});

describe.each(ADAPTERS)('waiters whose route times out (%s)', (adapter) => {
  it('stop waiting once the timeout has answered, giving their place back', async () => {
    const app = await startWaitApp(adapter, { waitInFlightMs: WAIT_MS, maxInFlightWaiters: 2 });
    const key = randomUUID();
    try {
      const running = post(app, '/timed/gated', key, {});
      await waitForRecord(app.tableName, key, 'in_progress');
      const waiters = app.app.get(IdempotencyWaiters);
      const duplicates = parallel(2, () => post(app, '/timed/gated', key, {}));
      await waitFor('both duplicates to wait', () => waiters.count === 2);
      for (const response of await duplicates) expect(response.status).toBe(408);
      expect((await running).status).toBe(408);
      await waitFor('the timed-out waiters to stop waiting', () => waiters.count === 0, 2_000);
    } finally {
      app.runs.open(key);
      await app.close();
    }
  });
});

describe('many keys waited on at once, the listening connection lost meanwhile', () => {
  it('every waiter gets its replay, and nothing is left subscribed or waiting', async () => {
    const app = await startWaitApp('express', { waitInFlightMs: WAIT_MS, maxInFlightWaiters: 100 });
    const db = new pg.Client(process.env.DATABASE_URL);
    await db.connect();
    try {
      const keys = Array.from({ length: 8 }, () => randomUUID());
      const firsts = keys.map((key) => post(app, '/gated', key, {}));
      for (const key of keys) await waitForRecord(app.tableName, key, 'in_progress');
      const waiters = app.app.get(IdempotencyWaiters);
      const duplicates = keys.map((key) => parallel(3, () => post(app, '/gated', key, {})));
      await waitFor('every duplicate to wait', () => waiters.count === 24);
      // Kill the listening connection while they wait.
      await waitFor('the listener to connect', async () => {
        const { rows } = await db.query(
          `SELECT pid FROM pg_stat_activity WHERE application_name LIKE '%:listen:' || $1`,
          [String(process.pid)],
        );
        return rows.length > 0;
      });
      await db.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '%:listen:' || $1`,
        [String(process.pid)],
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      for (const key of keys) app.runs.open(key);
      const originals = await Promise.all(firsts);
      const answers = await Promise.all(duplicates);
      answers.forEach((group, i) => {
        for (const response of group) expectReplayOf(response, originals[i]);
      });
      for (const key of keys) expect(app.runs.of(key)).toBe(1);
      // Nothing left behind.
      expect(waiters.count).toBe(0);
      expect((waiters as any).claims.size).toBe(0);
      const store = app.app.get(IdempotencyStore) as any;
      expect(store.watches.watches.size).toBe(0);
      const listener = app.app.get(PostgresIdempotencyListener) as any;
      expect(listener.subscribers.size).toBe(0);
    } finally {
      await db.end();
      await app.close();
    }
  });
});

describe('a first request whose lease passes while duplicates wait', () => {
  it('one waiter takes it over and runs; the others replay that run; the first gets 503', async () => {
    const log = new EventLog();
    const app = await startWaitApp('express', {
      waitInFlightMs: WAIT_MS,
      leaseMs: 1_500,
      logger: false,
    });
    try {
      const key = randomUUID();
      const hash = idempotencyKeyHash('', key);
      const running = post(app, '/gated', key, {});
      await waitForRecord(app.tableName, key, 'in_progress');
      const waiters = app.app.get(IdempotencyWaiters);
      const duplicates = parallel(3, () => post(app, '/gated', key, {}));
      await waitFor('the duplicates to wait', () => waiters.count === 3);
      await waitFor('a waiter to take the key over', () => app.runs.of(key) === 2, 5_000);
      app.runs.open(key);
      const first = await running;
      expectRetryable(first, 503, 'idempotency_lease_lost');
      const answers = await duplicates;
      expect(statusCounts(answers)).toEqual({ 201: 1, 409: 2 });
      const winner = answers.find((r) => r.status === 201)!;
      for (const r of answers) if (r.status === 409) expectReplayOf(r, winner);
      expect(app.runs.of(key)).toBe(2);
      await log.wait('completed', hash);
      await log.wait('lease-lost', hash);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const types = log.typesFor(hash);
      const count = (type: string) => types.filter((t) => t === type).length;
      expect([
        count('claimed'),
        count('lease-taken-over'),
        count('lease-lost'),
        count('completed'),
        count('replayed'),
        count('in-flight'),
      ]).toEqual([2, 1, 1, 1, 2, 0]);
      expect(types.indexOf('lease-taken-over')).toBe(types.lastIndexOf('claimed') - 1);
      expect(log.of('lease-lost', hash)[0].phase).toBe('complete');
      expect(waiters.count).toBe(0);
    } finally {
      log.close();
      await app.close();
    }
  });
});
