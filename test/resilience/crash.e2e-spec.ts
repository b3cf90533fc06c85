// Issue 3, crashes and leases, with real processes on one Postgres and one table:
// - a process SIGKILLed mid-request holds its key until the lease passes (423 with a
//   Retry-After within the lease), then the key is taken over and runs once more;
// - a handler that outlives its lease loses it: its client gets 503 idempotency_lease_lost
//   and only the process that took over has its response replayed.
import { randomUUID } from 'node:crypto';
import { idempotencyKeyHash } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import {
  CHILD_START_MS,
  Db,
  startAppProcess,
  stopAll,
  waitFor,
  type AppProcess,
} from '../support/processes.js';
import { expectProblem, expectReplayOf, expectRetryable } from '../support/problem.js';
import { LEASE_MS } from '../support/resilience-constants.js';
import { dropTable, uniqueTableName } from '../support/test-app.js';

const db = new Db();
const idemTable = uniqueTableName('idem_crash');
const runsTable = uniqueTableName('runs_crash');
/** `victim` is killed in the kill -9 test; `b` (Fastify) and `c` (Express) stay up. */
let victim: AppProcess, b: AppProcess, c: AppProcess;

const post = (app: AppProcess, path: string, key: string, delayMs: number) =>
  send(app.url, path, {
    headers: [
      ['x-idempotency-key', key],
      ['x-delay-ms', String(delayMs)],
    ],
    body: { product: 'crash-test' },
  });

/** The record as Postgres sees it now. */
async function record(key: string) {
  const { rows } = await db.query<{ state: string; left_ms: number | null }>(
    `SELECT state, EXTRACT(EPOCH FROM (locked_until - now())) * 1000 AS left_ms
       FROM "${idemTable}" WHERE idempotency_key = $1`,
    [key],
  );
  return rows[0] ? { state: rows[0].state, leftMs: Number(rows[0].left_ms) } : undefined;
}

const leasePassed = async (key: string) => ((await record(key))?.leftMs ?? 1) <= 0;

beforeAll(async () => {
  await db.createRunsTable(runsTable);
  [victim, b, c] = await Promise.all(
    (['express', 'fastify', 'express'] as const).map((adapter) =>
      startAppProcess({ idemTable, runsTable, adapter }),
    ),
  );
  console.log(`3 app processes ready in ${[victim, b, c].map((a) => a.startupMs).join(', ')} ms`);
}, CHILD_START_MS + 30_000);

afterAll(async () => {
  await Promise.all([victim, b, c].filter(Boolean).map((app) => app.stop()));
  await stopAll();
  await dropTable(idemTable);
  await db.dropTables(runsTable);
  await db.end();
}, 30_000);

it('kill -9 mid-request: 423 within the lease, then one takeover run, then replays of it', async () => {
  const key = randomUUID();
  // The victim's handler would take 10 s; it is killed as soon as it has started.
  const doomed = post(victim, '/mid-lease', key, 10_000).then(
    (response) => response,
    (error: Error) => error,
  );
  await waitFor(
    'the victim to run the handler',
    async () => (await db.runs(runsTable, key)).length === 1,
  );
  await victim.kill9();
  const lost = await doomed;
  // No answer: the connection died with the process (an Error from another realm, so no
  // instanceof).
  expect(lost).not.toHaveProperty('status');
  expect((lost as Error).message).toMatch(/socket hang up|ECONNRESET/);

  // Before the lease passes, another process answers 423 and advises waiting no longer
  // than the lease has left (rounded up); retryAfterSeconds (30) is larger than the lease.
  const before = await record(key);
  expect(before?.state).toBe('in_progress');
  expect(before!.leftMs).toBeGreaterThan(0);
  expect(before!.leftMs).toBeLessThanOrEqual(LEASE_MS.mid);
  const locked = await post(b, '/mid-lease', key, 0);
  const retryAfter = expectRetryable(locked, 423, 'idempotency_request_in_flight');
  expect(retryAfter).toBeLessThanOrEqual(Math.max(1, Math.ceil(before!.leftMs / 1000)));
  expect(await db.runs(runsTable, key)).toHaveLength(1);

  // Once the lease has passed, the next retry takes the key over and runs exactly once.
  await waitFor('the lease to pass', () => leasePassed(key), LEASE_MS.mid + 5_000);
  const retried = await post(c, '/mid-lease', key, 0);
  expect({ status: retried.status, body: retried.text }).toMatchObject({ status: 201 });
  expect(retried.json).toMatchObject({ key, pid: c.pid });
  const runs = await db.runs(runsTable, key);
  expect(runs.map((run) => run.pid)).toEqual([victim.pid, c.pid]);

  // From then on every process replays the takeover's response, byte for byte.
  for (const app of [b, c, b]) expectReplayOf(await post(app, '/mid-lease', key, 0), retried);
  expect(await db.runs(runsTable, key)).toHaveLength(2);
  expect((await record(key))?.state).toBe('completed');
}, 30_000);

it('late finisher: a handler that outlives its lease gets 503 lease_lost; only the takeover is replayed', async () => {
  const key = randomUUID();
  const handlerMs = 2.5 * LEASE_MS.short;
  // Process A (c) starts a handler that runs 2.5x its lease.
  const late = post(c, '/short-lease', key, handlerMs);
  await waitFor('A to run the handler', async () => (await db.runs(runsTable, key)).length === 1);
  // While A's lease holds, B gets 423.
  expectRetryable(await post(b, '/short-lease', key, 0), 423, 'idempotency_request_in_flight');
  // After A's lease, B takes the key over and completes quickly.
  await waitFor('the lease to pass', () => leasePassed(key), LEASE_MS.short + 5_000);
  const takeover = await post(b, '/short-lease', key, 0);
  expect({ status: takeover.status, body: takeover.text }).toMatchObject({ status: 201 });
  expect(takeover.json).toMatchObject({ key, pid: b.pid });

  // A finishes later: its result cannot be stored (fencing token), its client gets 503.
  const lateAnswer: TestResponse = await late;
  expectProblem(lateAnswer, 503, 'idempotency_lease_lost');
  expect(lateAnswer.headers['retry-after']).toMatch(/^\d+$/);
  expect(lateAnswer.text).not.toContain(String(c.pid));
  await waitFor('A to log the lost lease', () => c.output().includes('Lease lost for key'), 5_000);
  // Named by its hash (no scope here: no auth guard), never by the key itself.
  expect(c.output()).toContain(`Lease lost for key ${idempotencyKeyHash('', key)}`);
  expect(c.output()).not.toContain(key);

  // Only B's response is ever replayed, by both processes; the record holds B's result.
  for (const app of [c, b, c]) expectReplayOf(await post(app, '/short-lease', key, 0), takeover);
  // Two runs: the documented cost of a lease shorter than the handler.
  const runs = await db.runs(runsTable, key);
  expect(runs.map((run) => run.pid)).toEqual([c.pid, b.pid]);
  expect((await record(key))?.state).toBe('completed');
}, 30_000);
