// Issue 14, the batched store: concurrent claims and completions share multi-row statements,
// and every pitfall of doing so is handled: a key twice in one batch, one bad row, lock
// order, a batch that fails or times out, plans on a big table with stale statistics, and a
// lone call that must not wait for anything.
import pg from 'pg';
import {
  IdempotencyStoreTimeoutError,
  PostgresIdempotencyStore,
  computeFingerprint,
  idempotencyRecordsDdl,
  idempotencyWaitersDdl,
  type ClaimResult,
  type ClaimedRecord,
} from '../../src/index.js';
import { buildBatchStatements } from '../../src/postgres-batch.statements.js';
import { uniqueTableName } from '../support/test-app.js';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 12 });
const tables: string[] = [];
const fingerprint = computeFingerprint({ method: 'POST', url: '/orders', body: { qty: 1 } });
const otherFingerprint = computeFingerprint({ method: 'POST', url: '/orders', body: { qty: 2 } });
const LEASE = { leaseMs: 30_000, retentionMs: 86_400_000 };
const response = (n: number) => ({
  status: 201,
  headers: { 'content-type': 'application/json' },
  body: Buffer.from(JSON.stringify({ n })),
});

async function freshTable(): Promise<string> {
  const table = uniqueTableName('batch');
  tables.push(table);
  for (const ddl of [idempotencyRecordsDdl, idempotencyWaitersDdl]) {
    for (const statement of ddl(table).up) await pool.query(statement);
  }
  return table;
}

async function freshStore(): Promise<PostgresIdempotencyStore> {
  return new PostgresIdempotencyStore(pool, await freshTable());
}

const claimOf = (store: PostgresIdempotencyStore, key: string, print = fingerprint) =>
  store.claim({ scope: 'POST /orders', key, fingerprint: print, ...LEASE, timeoutMs: 5_000 });

function claimed(result: ClaimResult): ClaimedRecord {
  if (result.outcome !== 'claimed') throw new Error(`expected claimed, got ${result.outcome}`);
  return result.record;
}

afterAll(async () => {
  for (const table of tables) await pool.query(`DROP TABLE IF EXISTS "${table}"`);
  await pool.end();
});

describe('a lone call', () => {
  it('goes out at once as the single statement: no batch, no timer', async () => {
    const store = await freshStore();
    const started = Date.now();
    const record = claimed(await claimOf(store, 'lone'));
    expect(await store.complete(record, response(1), LEASE.retentionMs)).toBe(true);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(store.batchers!.claim.counters).toEqual({
      calls: 1,
      statements: 1,
      batches: 0,
      retriedRows: 0,
    });
    expect(store.batchers!.completeNotifying.counters.statements).toBe(1);
    expect(store.batchers!.completeNotifying.counters.batches).toBe(0);
  });
});

describe('concurrent calls of distinct keys', () => {
  it('share statements, and each caller gets its own outcome', async () => {
    const store = await freshStore();
    const keys = Array.from({ length: 40 }, (_, i) => `k-${String(i).padStart(2, '0')}`);
    const records = (await Promise.all(keys.map((key) => claimOf(store, key)))).map(claimed);
    expect(records.map((r) => r.key)).toEqual(keys);
    expect(new Set(records.map((r) => r.token)).size).toBe(keys.length);
    const claims = store.batchers!.claim.counters;
    expect(claims.calls).toBe(40);
    expect(claims.batches).toBeGreaterThan(0);
    expect(claims.statements).toBeLessThan(40);

    const stored = await Promise.all(
      records.map((record, i) => store.complete(record, response(i), LEASE.retentionMs)),
    );
    expect(stored).toEqual(keys.map(() => true));
    const completes = store.batchers!.completeNotifying.counters;
    expect(completes.batches).toBeGreaterThan(0);
    expect(completes.statements).toBeLessThan(40);
    expect(completes.retriedRows).toBe(0);

    // Replays batch too, and each gets its own stored response.
    const replays = await Promise.all(keys.map((key) => claimOf(store, key)));
    replays.forEach((replay, i) => {
      expect(replay).toEqual({ outcome: 'completed', response: response(i) });
    });
    expect(store.batchers!.claim.counters.statements).toBeLessThan(80);
  });

  it('answer 423 and 422 in a batch as the single statement does', async () => {
    const store = await freshStore();
    const held = claimed(await claimOf(store, 'held'));
    await claimOf(store, 'other');
    const [inFlight, mismatch, fresh] = await Promise.all([
      claimOf(store, 'held'),
      claimOf(store, 'other', otherFingerprint),
      claimOf(store, 'fresh'),
    ]);
    expect(inFlight.outcome).toBe('in_progress');
    expect((inFlight as { leaseLeftMs: number }).leaseLeftMs).toBeGreaterThan(20_000);
    expect(mismatch).toEqual({ outcome: 'mismatch' });
    expect(fresh.outcome).toBe('claimed');
    expect(held.token).toBeDefined();
  });

  it('take over an expired record with the single statement after the batch', async () => {
    const store = await freshStore();
    const table = tables[tables.length - 1];
    const stale = claimed(await claimOf(store, 'stale'));
    await pool.query(`UPDATE "${table}" SET locked_until = now() - interval '1 second'`);
    const [again, other] = await Promise.all([claimOf(store, 'stale'), claimOf(store, 'x')]);
    expect(claimed(again).token).not.toBe(stale.token);
    expect(other.outcome).toBe('claimed');
    expect(await store.complete(stale, response(0), LEASE.retentionMs)).toBe(false);
  });
});

describe('a completion the batch cannot apply', () => {
  it('is confirmed by the single statement: false only when the lease is really lost', async () => {
    const store = await freshStore();
    const records = (await Promise.all(['c1', 'c2', 'c3'].map((key) => claimOf(store, key)))).map(
      claimed,
    );
    const lost = { ...records[1], token: '12345' }; // as if taken over meanwhile
    const stored = await Promise.all([
      store.complete(records[0], response(0), LEASE.retentionMs),
      store.complete(lost, response(1), LEASE.retentionMs),
      store.complete(records[2], response(2), LEASE.retentionMs),
    ]);
    expect(stored).toEqual([true, false, true]);
    const counters = store.batchers!.completeNotifying.counters;
    expect(counters.batches).toBe(1);
    expect(counters.retriedRows).toBe(1);
    expect((await claimOf(store, 'c2')).outcome).toBe('in_progress');
  });
});

describe('a key twice among concurrent calls', () => {
  it('goes to the next batch: one claim wins, the other sees it in flight', async () => {
    const store = await freshStore();
    // The first call goes alone; the rest queue behind it and leave as batches.
    const calls = [claimOf(store, 'warm')];
    for (const key of ['a', 'b', 'a', 'c', 'a']) calls.push(claimOf(store, key));
    const [, a1, b, a2, c, a3] = await Promise.all(calls);
    expect([a1, a2, a3].filter((r) => r.outcome === 'claimed')).toHaveLength(1);
    expect([a1, a2, a3].filter((r) => r.outcome === 'in_progress')).toHaveLength(2);
    expect(b.outcome).toBe('claimed');
    expect(c.outcome).toBe('claimed');
    expect(store.batchers!.claim.counters.retriedRows).toBe(0);
  });
});

describe('one bad row among good ones', () => {
  it('fails only its own caller: the batch runs again row by row', async () => {
    const store = await freshStore();
    const records = (
      await Promise.all(['g1', 'g2', 'bad', 'g3'].map((key) => claimOf(store, key)))
    ).map(claimed);
    // jsonb rejects \u0000, so this row alone makes the whole statement fail.
    const badResponse = { ...response(9), headers: { 'x-bad': 'nul\u0000byte' } };
    const first = store.complete(records[0], response(0), LEASE.retentionMs);
    const settled = await Promise.allSettled([
      first,
      store.complete(records[1], response(1), LEASE.retentionMs),
      store.complete(records[2], badResponse, LEASE.retentionMs),
      store.complete(records[3], response(3), LEASE.retentionMs),
    ]);
    expect(settled.map((s) => s.status)).toEqual([
      'fulfilled',
      'fulfilled',
      'rejected',
      'fulfilled',
    ]);
    expect(settled.filter((s) => s.status === 'fulfilled').map((s) => s.value)).toEqual([
      true,
      true,
      true,
    ]);
    expect(store.batchers!.completeNotifying.counters.batches).toBeGreaterThan(0);
    expect(store.batchers!.completeNotifying.counters.retriedRows).toBeGreaterThan(0);
    // The bad row's record is still in flight, and its owner can release it.
    expect((await claimOf(store, 'bad')).outcome).toBe('in_progress');
    expect(await store.release(records[2])).toBe(true);
    expect((await claimOf(store, 'g3')).outcome).toBe('completed');
  });
});

describe('lock order', () => {
  it('two batches of overlapping keys sent in opposite orders never deadlock', async () => {
    const table = await freshTable();
    const one = new PostgresIdempotencyStore(pool, table);
    const two = new PostgresIdempotencyStore(pool, table);
    const keys = Array.from({ length: 30 }, (_, i) => `k-${String(i).padStart(2, '0')}`);
    // An uncommitted insert of the middle key holds both batches halfway through their
    // inserts: unsorted, one would then hold the keys below it and the other those above,
    // and each would wait for the other's.
    const blocker = await pool.connect();
    await blocker.query('BEGIN');
    await blocker.query(
      `INSERT INTO "${table}" (scope, idempotency_key, fingerprint, state, fencing_token,
                               locked_until, expires_at)
       VALUES ('POST /orders', 'k-15', $1, 'in_progress', 1, now(), now())`,
      [fingerprint],
    );
    let results: Promise<ClaimResult[]>;
    try {
      // Each store's first call goes alone; the 30 after it leave as one batch.
      results = Promise.all([
        claimOf(one, 'warm-1'),
        ...keys.map((key) => claimOf(one, key)),
        claimOf(two, 'warm-2'),
        ...[...keys].reverse().map((key) => claimOf(two, key)),
      ]);
      let waiting = 0;
      for (let i = 0; i < 100 && waiting < 2; i++) {
        const { rows } = await pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE query LIKE '%unnest%' AND query LIKE $1 AND wait_event_type = 'Lock'`,
          [`%${table}%`],
        );
        waiting = rows[0].n;
        if (waiting < 2) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(waiting).toBe(2);
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    const outcomes = (await results).filter((_, i) => i !== 0 && i !== keys.length + 1);
    expect(outcomes.filter((r) => r.outcome === 'claimed')).toHaveLength(keys.length);
    expect(outcomes.filter((r) => r.outcome === 'in_progress')).toHaveLength(keys.length);
    // A deadlock would have failed a batch, and its rows would have run again one by one.
    expect(one.batchers!.claim.counters.retriedRows).toBe(0);
    expect(two.batchers!.claim.counters.retriedRows).toBe(0);
    expect(one.batchers!.claim.counters.batches).toBe(1);
    expect(two.batchers!.claim.counters.batches).toBe(1);
  });
});

describe('a batch that outlives its callers', () => {
  it('answers each caller within its own timeout, and reports the late claim', async () => {
    const store = await freshStore();
    const table = tables[tables.length - 1];
    // An uncommitted insert of key "locked" makes any claim of it wait on the row.
    const blocker = await pool.connect();
    await blocker.query('BEGIN');
    await blocker.query(
      `INSERT INTO "${table}" (scope, idempotency_key, fingerprint, state, fencing_token,
                               locked_until, expires_at)
       VALUES ('POST /orders', 'locked', $1, 'in_progress', 1, now() + interval '1 minute',
               now() + interval '1 day')`,
      [fingerprint],
    );
    try {
      const claim = (key: string, timeoutMs: number) =>
        store.claim({ scope: 'POST /orders', key, fingerprint, ...LEASE, timeoutMs });
      const lone = claim('first', 5_000); // goes alone; the next two share a batch
      const started = Date.now();
      const results = await Promise.allSettled([claim('locked', 300), claim('free', 600)]);
      const elapsed = Date.now() - started;
      expect((await lone).outcome).toBe('claimed');
      expect(elapsed).toBeLessThan(3_000);
      for (const result of results) {
        expect(result.status).toBe('rejected');
        const error = (result as PromiseRejectedResult).reason as IdempotencyStoreTimeoutError;
        expect(error).toBeInstanceOf(IdempotencyStoreTimeoutError);
        expect(error.lateClaim).toBeDefined();
        // The statement was cancelled on the server: neither row took effect.
        await expect(error.lateClaim!.applied).resolves.toBe(false);
      }
      // Each within its own bound (the claim's attempts share it, so a millisecond may be gone).
      results.forEach((result, i) => {
        const { timeoutMs } = (result as PromiseRejectedResult).reason as { timeoutMs: number };
        expect(timeoutMs).toBeLessThanOrEqual([300, 600][i]);
        expect(timeoutMs).toBeGreaterThan([300, 600][i] - 100);
      });
      expect(store.batchers!.claim.counters.batches).toBe(1);
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    // Nothing is lost: both keys can be claimed now.
    expect((await claimOf(store, 'locked')).outcome).toBe('claimed');
    expect((await claimOf(store, 'free')).outcome).toBe('claimed');
  });

  it('answers a caller still queued behind a busy batch within its timeout', async () => {
    const table = await freshTable();
    // A pool of 4: two statements of a kind out at once.
    const store = new PostgresIdempotencyStore(pool, table, { poolSize: 4 });
    const blocker = await pool.connect();
    await blocker.query('BEGIN');
    await blocker.query(`LOCK TABLE "${table}" IN EXCLUSIVE MODE`);
    try {
      const claim = (key: string, timeoutMs: number) =>
        store.claim({ scope: 'POST /orders', key, fingerprint, ...LEASE, timeoutMs });
      // Two statements out (the limit), both waiting on the lock; the third call queues.
      const first = claim('q1', 1_500);
      await new Promise((resolve) => setImmediate(resolve));
      const second = claim('q2', 1_500);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const third = claim('q3', 200);
      const [, , queued] = await Promise.allSettled([first, second, third]);
      const error = (queued as PromiseRejectedResult).reason as IdempotencyStoreTimeoutError;
      expect(error).toBeInstanceOf(IdempotencyStoreTimeoutError);
      // Its own bound, not the batch's 1.5 s (a millisecond may be gone before the claim
      // reaches the batcher, as in the test above).
      expect(error.timeoutMs).toBeLessThanOrEqual(200);
      expect(error.timeoutMs).toBeGreaterThan(100);
      await expect(error.lateClaim!.applied).resolves.toBe(false);
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    // It never reached Postgres.
    const { rows } = await pool.query(
      `SELECT count(*)::int AS n FROM "${table}" WHERE idempotency_key = 'q3'`,
    );
    expect(rows[0].n).toBe(0);
  });
});

describe('a failed batch', () => {
  it('whose connection dies fails every caller in it, and leaves nothing behind', async () => {
    const store = await freshStore();
    const table = tables[tables.length - 1];
    const blocker = await pool.connect();
    await blocker.query('BEGIN');
    await blocker.query(`LOCK TABLE "${table}" IN EXCLUSIVE MODE`);
    let lone: Promise<ClaimResult>;
    try {
      lone = claimOf(store, 'lone'); // alone, waiting on the lock
      const results = Promise.allSettled(['x', 'y', 'z'].map((key) => claimOf(store, key)));
      // The batch of x, y and z waits on the lock too; its backend is then terminated.
      let pid: number | undefined;
      for (let i = 0; i < 100 && pid === undefined; i++) {
        const { rows } = await pool.query(
          `SELECT pid FROM pg_stat_activity
            WHERE query LIKE '%unnest%' AND query LIKE $1 AND wait_event_type = 'Lock'
              AND pid <> pg_backend_pid()`,
          [`%${table}%`],
        );
        pid = rows[0]?.pid;
        if (pid === undefined) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(pid).toBeDefined();
      await pool.query('SELECT pg_terminate_backend($1)', [pid]);
      const settled = await results;
      expect(settled.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
      for (const result of settled) {
        expect((result as PromiseRejectedResult).reason).not.toBeInstanceOf(
          IdempotencyStoreTimeoutError,
        );
      }
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    expect((await lone).outcome).toBe('claimed');
    // The terminated statement never committed: the keys are free.
    const again = await Promise.all(['x', 'y', 'z'].map((key) => claimOf(store, key)));
    expect(again.map((r) => r.outcome)).toEqual(['claimed', 'claimed', 'claimed']);
    expect(store.batchers!.claim.counters.retriedRows).toBe(0);
  });
});

describe('how many statements of a kind may be out at once', () => {
  it('half the pool each for claims and completions: 6 of a pg Pool of 12', async () => {
    const store = await freshStore();
    expect(store.batchers!.claim.limits.maxInFlight).toBe(6);
    expect(store.batchers!.complete.limits.maxInFlight).toBe(6);
    // At the limit calls queue into batches, and a burst still ends with every key claimed.
    const burst = await Promise.all(
      Array.from({ length: 60 }, (_, i) => claimOf(store, `burst-${i}`)),
    );
    expect(burst.every((r) => r.outcome === 'claimed')).toBe(true);
    expect(store.batchers!.claim.counters.statements).toBeLessThan(60);
  });

  it.each([
    [{ poolSize: 4 }, 2],
    [{ extra: { max: 20 } }, 10],
    [{}, 5], // pg's default pool of 10
  ])('reads the pool size of a DataSource it is built from (%j: %i)', async (pool, expected) => {
    const { DataSource } = await import('typeorm');
    const dataSource = new DataSource({ type: 'postgres', url: process.env.DATABASE_URL, ...pool });
    const store = PostgresIdempotencyStore.fromDataSource(dataSource, 'unused');
    expect(store.batchers!.claim.limits.maxInFlight).toBe(expected);
  });
});

describe('a store inside a transaction', () => {
  it('keeps its statements single, on the transaction connection', async () => {
    const store = await freshStore();
    expect(store.batchers).toBeDefined();
    expect(store.withExecutor(pool).batchers).toBeUndefined();
    expect(new PostgresIdempotencyStore(pool, undefined, { batching: false }).batchers).toBe(
      undefined,
    );
  });
});

describe('batch plans on a big table with stale statistics', () => {
  it('probe the unique index per row, never scan the table', async () => {
    const table = await freshTable();
    const client = await pool.connect();
    try {
      // Statistics of an empty table, then 200k rows that no ANALYZE has seen.
      await client.query(`ALTER TABLE "${table}" SET (autovacuum_enabled = false)`);
      await client.query(`ANALYZE "${table}"`);
      await client.query(
        `INSERT INTO "${table}" (scope, idempotency_key, fingerprint, state, fencing_token,
                                 expires_at, response_status, response_headers, response_body,
                                 completed_at)
         SELECT 'POST /orders', 'fill-' || g, $1, 'completed', g, now() + interval '1 day', 201,
                '{}'::jsonb, '\\x7b7d'::bytea, now()
           FROM generate_series(1, 200000) AS g`,
        [fingerprint],
      );
      const sql = buildBatchStatements(`"${table}"`, 'unused');
      const keys = ['fill-7', 'fill-70000', 'new-1'];
      // An array literal, as pg sends it for a parameter (bytea elements in hex).
      const element = (v: unknown) =>
        Buffer.isBuffer(v) ? `"\\\\x${v.toString('hex')}"` : `"${String(v)}"`;
      const literal = (values: unknown[]) =>
        client.escapeLiteral(`{${values.map(element).join(',')}}`);
      const plan = async (text: string, columns: unknown[][], types: string[]) => {
        const args = columns.map((column, i) => `${literal(column)}::${types[i]}`);
        let bound = text;
        for (let i = args.length; i >= 1; i--) {
          bound = bound.replaceAll(new RegExp(`\\$${i}::[a-z0-9]+\\[\\]`, 'g'), args[i - 1]);
        }
        await client.query('BEGIN');
        try {
          const { rows } = await client.query(`EXPLAIN (ANALYZE, COSTS OFF) ${bound}`);
          return rows.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n');
        } finally {
          await client.query('ROLLBACK');
        }
      };
      const claimPlan = await plan(
        sql.claim.text,
        [
          keys.map(() => 'POST /orders'),
          keys,
          keys.map(() => fingerprint),
          keys.map(() => 30_000),
          keys.map(() => 60_000),
          keys.map((_, i) => 9_000_000 + i),
        ],
        ['text[]', 'text[]', 'bytea[]', 'float8[]', 'float8[]', 'bigint[]'],
      );
      expect(claimPlan).not.toMatch(/Seq Scan/);
      expect(claimPlan).toMatch(/Index Scan|Bitmap Index Scan/);
      const completePlan = await plan(
        sql.completeNotifying.text,
        [
          keys.map(() => 'POST /orders'),
          keys,
          keys.map((_, i) => 7 + i),
          keys.map(() => 201),
          keys.map(() => '{}'),
          keys.map(() => Buffer.from('x')),
          keys.map(() => 60_000),
        ],
        ['text[]', 'text[]', 'bigint[]', 'smallint[]', 'text[]', 'bytea[]', 'float8[]'],
      );
      expect(completePlan).not.toMatch(/Seq Scan/);
      expect(completePlan).toMatch(/Tid Scan/);
    } finally {
      client.release();
    }
  }, 60_000);
});
