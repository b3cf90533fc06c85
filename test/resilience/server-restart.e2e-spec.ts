// Chaos: the database server itself restarts (a throwaway cluster, fast shutdown: every
// backend terminated, then nothing listening for a while, then a fresh postmaster on the same
// port) under concurrent load from two real app processes with batching on. The processes
// must stay up with no unhandled error, every request must be answered with a contract
// outcome (503 with its code while the store is down), and once the server is back every key
// must settle (run once, replay) well before its lease: nothing is left claimed for good.
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pg from 'pg';
import {
  freePort,
  startEmbeddedPostgres,
  type RunningDatabase,
} from '../../scripts/embedded-postgres.js';
import { send, type TestResponse } from '../support/http.js';
import { statusCounts } from '../support/problem.js';
import { CHILD_START_MS, startAppProcess, stopAll, type AppProcess } from '../support/processes.js';
import { LEASE_MS } from '../support/resilience-constants.js';
import { sleep, uniqueTableName } from '../support/test-app.js';

const CONCURRENCY = 24;
const STORM_MS = 6_000;
const DOWN_MS = 1_500;
const HANDLER_MS = 150;
/** Far less than the /work lease (20 s): a key still held after this is stuck. */
const SETTLE_MS = 10_000;

const idemTable = uniqueTableName('idem_restart');
const runsTable = uniqueTableName('runs_restart');
const dataDir = join(tmpdir(), 'nest-idempotency-pg', `restart-${process.pid}-${Date.now()}`);
let port: number;
let database: RunningDatabase | undefined;
let url: string;
let apps: AppProcess[] = [];

const start = async () => {
  database = await startEmbeddedPostgres({ dataDir, port, persistent: true });
  url = database.url;
};

beforeAll(async () => {
  port = await freePort();
  await start();
  const client = new pg.Client(url);
  await client.connect();
  await client.query(
    `CREATE TABLE ${runsTable} (key text NOT NULL, pid int NOT NULL, route text NOT NULL,
                               at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  );
  await client.end();
  apps = await Promise.all(
    (['express', 'fastify'] as const).map((adapter) =>
      startAppProcess({
        idemTable,
        runsTable,
        adapter,
        retryAfterSeconds: 1,
        waitInFlightMs: 2_000,
        env: { DATABASE_URL: url },
      }),
    ),
  );
}, CHILD_START_MS + 60_000);

afterAll(async () => {
  await Promise.all(apps.map((app) => app.stop()));
  await stopAll();
  if (!database) await start().catch(() => undefined);
  await database?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

const alive = (app: AppProcess) => {
  try {
    process.kill(app.pid, 0);
    return true;
  } catch {
    return false;
  }
};

it('a server restart under load: processes stay up, every answer is a contract one, no key stuck', async () => {
  const post = (app: AppProcess, path: string, key: string, delayMs = HANDLER_MS) =>
    send(app.url, path, {
      headers: [
        ['x-idempotency-key', key],
        ['x-delay-ms', String(delayMs)],
      ],
      body: { product: 'restart' },
    });
  const answers = new Map<string, TestResponse[]>();
  const failures: string[] = [];
  let restarted = false;
  const restarter = (async () => {
    await sleep(STORM_MS / 3);
    await database!.stop();
    database = undefined;
    await sleep(DOWN_MS);
    await start();
    restarted = true;
  })();
  const deadline = Date.now() + STORM_MS;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, worker) => {
      while (Date.now() < deadline) {
        const key = randomUUID();
        // Half the workers send each key twice at once to /wait (waiters on LISTEN/NOTIFY),
        // the others once to /work.
        const path = worker % 2 ? '/wait' : '/work';
        const copies = worker % 2 ? 2 : 1;
        try {
          const got = await Promise.all(
            Array.from({ length: copies }, (_, i) => post(apps[(worker + i) % 2], path, key)),
          );
          answers.set(`${path} ${key}`, got);
        } catch (error) {
          failures.push(String(error));
          await sleep(100);
        }
      }
    }),
  );
  await restarter;
  expect(restarted).toBe(true);
  const all = [...answers.values()].flat();
  console.log(
    `restart storm: ${answers.size} keys, answers ${JSON.stringify(statusCounts(all))}, ${failures.length} transport failures`,
  );
  // A process that died says why: its first error, not the whole log.
  const deaths = apps
    .filter((app) => !alive(app))
    .map((app) => /^.*(Unhandled|Error).*$(\n.*){0,12}/m.exec(app.output())?.[0]);
  expect(deaths).toEqual([]);
  expect(apps.map(alive)).toEqual([true, true]);
  expect(failures.slice(0, 3)).toEqual([]);
  for (const answer of all) {
    expect([201, 409, 423, 500, 503]).toContain(answer.status);
    if (answer.status === 503) {
      expect(answer.json?.code).toMatch(/^idempotency_(store_unavailable|lease_lost)$/);
    }
    if (answer.status === 500) {
      // Only the handler's own failure (its run insert met the restart), never the module's.
      expect(answer.json?.code).toBeUndefined();
    }
  }

  // Every key not answered 201/409 settles: retried every 300 ms, it runs or replays.
  const settleBy = Date.now() + SETTLE_MS;
  let unsettled = [...answers]
    .filter(([, got]) => !got.some((r) => r.status === 201))
    .map(([id]) => id);
  const history = new Map<string, number[]>();
  while (unsettled.length > 0 && Date.now() < settleBy) {
    const round = unsettled;
    unsettled = [];
    for (let i = 0; i < round.length; i += CONCURRENCY) {
      await Promise.all(
        round.slice(i, i + CONCURRENCY).map(async (id, j) => {
          const [path, key] = id.split(' ');
          const retry = await post(apps[j % 2], path, key, 0);
          history.set(id, [...(history.get(id) ?? []), retry.status]);
          if (retry.status !== 201 && retry.status !== 409) unsettled.push(id);
        }),
      );
    }
    if (unsettled.length > 0) await sleep(300);
  }
  expect(unsettled.map((id) => [id, history.get(id)])).toEqual([]);
  expect(Date.now()).toBeLessThan(settleBy + LEASE_MS.work);

  // No key ran twice.
  const client = new pg.Client(url);
  await client.connect();
  const { rows } = await client.query(
    `SELECT route, key, count(*)::int AS n FROM ${runsTable} GROUP BY route, key HAVING count(*) > 1`,
  );
  await client.end();
  expect(rows).toEqual([]);
  for (const app of apps) expect(app.output()).not.toMatch(/Unhandled|uncaught|ERR_UNHANDLED/i);
}, 90_000);
