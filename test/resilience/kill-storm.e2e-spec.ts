// Chaos: three real application processes on one table, a storm of concurrent duplicates
// (batching on, as by default), and one process SIGKILLed while handlers run in all of them.
// Afterwards clients retry every key with the same key: each key must end replayable (409
// of one stored run) within its lease and a little more, the surviving processes must run
// each key at most once, and only keys whose run died with the killed process may run twice
// (its lease passed, as documented). No survivor logs an unhandled error.
import { randomUUID } from 'node:crypto';
import { send, type TestResponse } from '../support/http.js';
import {
  CHILD_START_MS,
  Db,
  startAppProcess,
  stopAll,
  waitFor,
  type AppProcess,
} from '../support/processes.js';
import { statusCounts } from '../support/problem.js';
import { LEASE_MS } from '../support/resilience-constants.js';
import { dropTable, sleep, uniqueTableName } from '../support/test-app.js';

const KEYS = 36;
/** Each key is sent this many times at once, one copy to each process. */
const COPIES = 3;
const db = new Db();
const idemTable = uniqueTableName('idem_killstorm');
const runsTable = uniqueTableName('runs_killstorm');
let apps: AppProcess[] = [];

const post = (app: AppProcess, key: string, delayMs: number): Promise<TestResponse | Error> =>
  send(app.url, '/mid-lease', {
    headers: [
      ['x-idempotency-key', key],
      ['x-delay-ms', String(delayMs)],
    ],
  }).catch((error: Error) => error);

beforeAll(async () => {
  await db.createRunsTable(runsTable);
  apps = await Promise.all(
    (['express', 'fastify', 'express'] as const).map((adapter) =>
      startAppProcess({
        idemTable,
        runsTable,
        adapter,
        retryAfterSeconds: 1,
      }),
    ),
  );
}, CHILD_START_MS + 30_000);

afterAll(async () => {
  await Promise.all(apps.map((app) => app.stop()));
  await stopAll();
  await dropTable(idemTable);
  await db.dropTables(runsTable);
  await db.end();
}, 30_000);

it('SIGKILL of one process mid-storm: every key ends replayable, survivors run each at most once', async () => {
  const keys = Array.from({ length: KEYS }, () => randomUUID());
  // Requests go out in waves so that some are claimed, some run and some complete when the
  // victim dies; handler times vary from 100 to 700 ms.
  const storm = keys.flatMap((key, k) =>
    Array.from({ length: COPIES }, (_, copy) =>
      sleep((k % 6) * 60).then(() =>
        post(apps[(k + copy) % apps.length], key, 100 + ((k * 97) % 600)),
      ),
    ),
  );
  // The victim is the first process seen running three handlers (runs are recorded as they
  // start), killed at once. It is not chosen beforehand: which process wins the claims of a
  // storm is a race, and on a loaded machine one process can win nearly all of them, so a
  // victim picked in advance may have nothing in flight to lose.
  let chosen: AppProcess | undefined;
  await waitFor(
    'a process to run handlers',
    async () => {
      const { rows } = await db.query<{ pid: number }>(
        `SELECT pid FROM ${runsTable} GROUP BY pid HAVING count(*) >= 3 ORDER BY count(*) DESC`,
      );
      chosen = rows.length > 0 ? apps.find((app) => app.pid === rows[0].pid) : undefined;
      return chosen !== undefined;
    },
    10_000,
  );
  const victim = chosen!;
  const survivors = apps.filter((app) => app !== victim);
  await victim.kill9();
  const first = await Promise.all(storm);
  const answered = first.filter((r): r is TestResponse => 'status' in r);
  const firstCounts = statusCounts(answered);
  const lost = first.length - answered.length;

  // Clients retry every key (Retry-After is 1 s) on the survivors until it is replayed.
  const settleBy = Date.now() + LEASE_MS.mid + 8_000;
  const final = new Map<string, TestResponse>();
  const retries = new Map<string, number[]>();
  let pending = [...keys];
  while (pending.length > 0 && Date.now() < settleBy) {
    const round = pending;
    pending = [];
    await Promise.all(
      round.map(async (key, i) => {
        const answer = await post(survivors[i % survivors.length], key, 0);
        const status = 'status' in answer ? answer.status : 0;
        retries.set(key, [...(retries.get(key) ?? []), status]);
        if (status === 409 || status === 201) {
          if (status === 409) final.set(key, answer as TestResponse);
          else pending.push(key); // its replay is checked next round
        } else {
          pending.push(key);
        }
      }),
    );
    if (pending.length > 0) await sleep(300);
  }
  console.log(
    `kill storm: ${KEYS} keys x ${COPIES}, first answers ${JSON.stringify(firstCounts)}, ${lost} lost with the victim (${victim.adapter}); unsettled ${pending.length}`,
  );
  expect(pending.map((key) => [key, retries.get(key)])).toEqual([]);

  const runs = await db.query<{ key: string; pid: number }>(`SELECT key, pid FROM ${runsTable}`);
  const byKey = new Map<string, number[]>(keys.map((key) => [key, []]));
  for (const run of runs.rows) byKey.get(run.key)?.push(run.pid);
  let twice = 0;
  for (const key of keys) {
    const pids = byKey.get(key)!;
    const bySurvivors = pids.filter((pid) => pid !== victim.pid);
    // Survivors never run a key twice, nor after a victim's run that completed.
    expect({ key, bySurvivors: bySurvivors.length <= 1 }).toEqual({ key, bySurvivors: true });
    expect(pids.length).toBeGreaterThanOrEqual(1);
    if (pids.length === 2) twice++;
    // The replay is of a run that happened, by the process that ran last.
    const replayed = final.get(key)!.json as { pid: number; key: string };
    expect(replayed.key).toBe(key);
    expect(pids).toContain(replayed.pid);
    if (replayed.pid === victim.pid) expect(bySurvivors).toEqual([]);
  }
  console.log(`kill storm: ${twice} keys ran twice (first run died with the victim)`);
  for (const app of survivors) {
    expect(app.output()).not.toMatch(/Unhandled|uncaught/i);
  }
}, 60_000);
