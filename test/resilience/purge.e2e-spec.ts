// Issue 3, purge: thousands of records inserted directly with SQL. A sweep deletes exactly
// the expired ones, in batches for as long as they come back full (issue 10.9: no cap of
// rows per sweep, only a time box), and leaves live records and live leases alone; the
// standalone function does the same; two purgers at once delete each row once.
import { DataSource } from 'typeorm';
import {
  IdempotencyPurger,
  idempotencyRecordsDdl,
  purgeExpiredIdempotencyRecords,
} from '../../src/index.js';
import { send } from '../support/http.js';
import { Db, waitFor } from '../support/processes.js';
import { expectReplayOf } from '../support/problem.js';
import { createTestApp, dropTable, uniqueTableName, type TestApp } from '../support/test-app.js';

/** Rows of each kind; only the first two are purgeable. */
const MIX = {
  /** completed, expires_at passed */
  expired_completed: 2_000,
  /** in_progress, expires_at and locked_until both passed (a dead process, long ago) */
  expired_dead_lease: 700,
  /** in_progress, expires_at passed but locked_until still ahead: a live lease */
  live_lease: 300,
  /** completed, expires_at ahead */
  live_completed: 500,
  /** in_progress, both ahead */
  live_in_progress: 200,
} as const;
type Kind = keyof typeof MIX;
const PURGEABLE = MIX.expired_completed + MIX.expired_dead_lease;
const KEPT = MIX.live_lease + MIX.live_completed + MIX.live_in_progress;

const db = new Db();

/** Inserts MIX into `table`; each key starts with its kind. */
async function seed(table: string): Promise<void> {
  const rows: Record<Kind, [state: string, expires: string, lockedUntil: string]> = {
    expired_completed: ['completed', `now() - interval '1 hour' * g`, 'NULL'],
    expired_dead_lease: [
      'in_progress',
      `now() - interval '1 minute' * g`,
      `now() - interval '1 second'`,
    ],
    live_lease: ['in_progress', `now() - interval '1 minute' * g`, `now() + interval '10 minutes'`],
    live_completed: ['completed', `now() + interval '1 hour' * g`, 'NULL'],
    live_in_progress: ['in_progress', `now() + interval '1 hour'`, `now() + interval '10 minutes'`],
  };
  for (const [kind, [state, expires, lockedUntil]] of Object.entries(rows)) {
    const completed = state === 'completed';
    await db.query(
      `INSERT INTO "${table}" (scope, idempotency_key, fingerprint, state, fencing_token,
                               locked_until, expires_at, response_status, response_headers,
                               response_body, completed_at)
       SELECT 'scope-' || (g % 7), $1 || '-' || g, sha256(g::text::bytea), $2,
              (random() * 1e15)::bigint, ${lockedUntil}, ${expires},
              ${completed ? `201, '{"content-type":"application/json"}'::jsonb, '{"ok":true}'::bytea, now() - interval '2 days'` : 'NULL, NULL, NULL, NULL'}
         FROM generate_series(1, $3::int) AS g`,
      [kind, state, MIX[kind as Kind]],
    );
  }
}

/** Rows left per kind. */
async function remaining(table: string): Promise<Partial<Record<Kind, number>>> {
  const { rows } = await db.query<{ kind: Kind; n: string }>(
    `SELECT split_part(idempotency_key, '-', 1) AS kind, count(*) AS n FROM "${table}" GROUP BY 1`,
  );
  return Object.fromEntries(rows.map((row) => [row.kind, Number(row.n)]));
}

const KEPT_ONLY = {
  live_lease: MIX.live_lease,
  live_completed: MIX.live_completed,
  live_in_progress: MIX.live_in_progress,
};

afterAll(async () => {
  await db.end();
});

describe('IdempotencyPurger.runOnce()', () => {
  let t: TestApp;
  beforeAll(async () => {
    // Batches of 20: far more than the old cap of 100 batches per sweep.
    t = await createTestApp('express', { purge: { enabled: false, batchSize: 20 } });
  }, 30_000);
  afterAll(async () => {
    await t?.close();
  }, 30_000);

  it('deletes exactly the expired records, in several batches, and keeps live leases', async () => {
    await seed(t.tableName);
    expect(await remaining(t.tableName)).toEqual(MIX);
    const started = Date.now();
    const deleted = await t.app.get(IdempotencyPurger).runOnce();
    const elapsed = Date.now() - started;
    expect(deleted).toBe(PURGEABLE);
    expect(deleted).toBeGreaterThan(100 * 20); // 135 batches of at most 20
    expect(await remaining(t.tableName)).toEqual(KEPT_ONLY);
    // Nothing left to do: a second sweep deletes nothing.
    expect(await t.app.get(IdempotencyPurger).runOnce()).toBe(0);
    expect(await remaining(t.tableName)).toEqual(KEPT_ONLY);
    console.log(`purger: ${deleted} of ${PURGEABLE + KEPT} rows in ${elapsed} ms`);
  });

  it('never deletes the record of a request in flight, which still answers 423 and completes', async () => {
    // The live lease rows above are in_progress with expires_at passed; a real in-flight
    // request (long lease, slow handler) must survive a sweep as well and store its result.
    const key = 'in-flight-during-purge';
    const body = { product: 'purge', delayMs: 1_500 };
    const inFlight = send(t.url, '/x/partners/p1/bookings', {
      headers: [['x-idempotency-key', key]],
      body,
    });
    await waitFor('the handler to start', () => t.runs.count('book') === 1);
    await db.query(
      `UPDATE "${t.tableName}" SET expires_at = now() - interval '1 second' WHERE idempotency_key = $1`,
      [key],
    );
    expect(await t.app.get(IdempotencyPurger).runOnce()).toBe(0);
    const first = await inFlight;
    expect(first.status).toBe(201);
    expectReplayOf(
      await send(t.url, '/x/partners/p1/bookings', { headers: [['x-idempotency-key', key]], body }),
      first,
    );
    expect(t.runs.count('book')).toBe(1);
  });
});

describe('purgeExpiredIdempotencyRecords()', () => {
  let dataSource: DataSource;
  const table = uniqueTableName('idem_purge');

  beforeAll(async () => {
    dataSource = new DataSource({ type: 'postgres', url: process.env.DATABASE_URL });
    await dataSource.initialize();
    for (const statement of idempotencyRecordsDdl(table).up) await dataSource.query(statement);
  }, 30_000);
  afterAll(async () => {
    await dataSource?.destroy();
    await dropTable(table);
  }, 30_000);
  beforeEach(async () => {
    await db.query(`TRUNCATE "${table}"`);
    await seed(table);
  });

  it('refuses a batchSize that is not a whole number of at least 1', async () => {
    for (const batchSize of [0, -5, 2.5, Number.NaN]) {
      await expect(
        purgeExpiredIdempotencyRecords(dataSource, { tableName: table, batchSize }),
      ).rejects.toThrow(/batchSize must be a whole number of at least 1/);
    }
  });

  it('works on its own and stops after maxBatches', async () => {
    // Bounded: two batches of 300, then it stops even though more are expired.
    expect(
      await purgeExpiredIdempotencyRecords(dataSource, {
        tableName: table,
        batchSize: 300,
        maxBatches: 2,
      }),
    ).toBe(600);
    expect(await remaining(table)).toMatchObject(KEPT_ONLY);
    const left = await remaining(table);
    expect((left.expired_completed ?? 0) + (left.expired_dead_lease ?? 0)).toBe(PURGEABLE - 600);
    // Oldest expiry first: the first 600 deleted rows are the oldest completed ones.
    expect(left.expired_completed).toBe(MIX.expired_completed - 600);

    expect(
      await purgeExpiredIdempotencyRecords(dataSource, { tableName: table, batchSize: 300 }),
    ).toBe(PURGEABLE - 600);
    expect(await remaining(table)).toEqual(KEPT_ONLY);
  });

  it('keeps going while batches come back full: no cap on rows per sweep but its time box', async () => {
    // 135 full batches of 20: the old default cap (100 batches) would have stopped at 2,000.
    expect(
      await purgeExpiredIdempotencyRecords(dataSource, { tableName: table, batchSize: 20 }),
    ).toBe(PURGEABLE);
    expect(await remaining(table)).toEqual(KEPT_ONLY);
  });

  it('stops starting batches once its time box has passed', async () => {
    // Any batch takes longer than 1 ms: the sweep stops after the first one.
    expect(
      await purgeExpiredIdempotencyRecords(dataSource, {
        tableName: table,
        batchSize: 300,
        timeBoxMs: 1,
      }),
    ).toBe(300);
    const left = await remaining(table);
    expect((left.expired_completed ?? 0) + (left.expired_dead_lease ?? 0)).toBe(PURGEABLE - 300);
  });

  it('two purgers at once delete each expired row once in total, without errors', async () => {
    const other = new DataSource({ type: 'postgres', url: process.env.DATABASE_URL });
    await other.initialize();
    try {
      const results = await Promise.allSettled([
        purgeExpiredIdempotencyRecords(dataSource, { tableName: table, batchSize: 200 }),
        purgeExpiredIdempotencyRecords(other, { tableName: table, batchSize: 200 }),
      ]);
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
      const counts = results.map((r) => (r as PromiseFulfilledResult<number>).value);
      expect(counts[0] + counts[1]).toBe(PURGEABLE);
      expect(await remaining(table)).toEqual(KEPT_ONLY);
      console.log(`two purgers at once: ${counts.join(' + ')} = ${PURGEABLE}`);
    } finally {
      await other.destroy();
    }
  });
});
