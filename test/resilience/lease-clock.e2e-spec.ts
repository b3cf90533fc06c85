// How much lease a 423 reports. It was once computed as `locked_until - now()`, and now()
// is the start of the reading statement's transaction. A claim whose statement started a
// moment before the holder's claim, but read the holder's row after it committed, therefore
// sees more lease left than the lease itself: in a 200-request storm with a 20 s lease,
// some 423s said `Retry-After: 21` (seen once in four runs of storm.e2e-spec.ts).
// The claim now measures the lease left against clock_timestamp(). Here the gap is made
// deterministic: the reader runs inside a transaction that began 1 s before the holder's
// claim.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { idempotencyRecordsDdl, PostgresIdempotencyStore } from '../../src/index.js';
import { Db } from '../support/processes.js';
import { dropTable, sleep, uniqueTableName } from '../support/test-app.js';

const db = new Db();
const table = uniqueTableName('idem_clock');
const LEASE_MS = 5_000;

beforeAll(async () => {
  for (const statement of idempotencyRecordsDdl(table).up) await db.query(statement);
});
afterAll(async () => {
  await dropTable(table);
  await db.end();
});

it('a 423 never reports more lease left than the lease', async () => {
  const holder = new PostgresIdempotencyStore(db.pool, table);
  const reader = new pg.Client(process.env.DATABASE_URL);
  await reader.connect();
  try {
    await reader.query('BEGIN');
    await reader.query('SELECT 1'); // now() of this transaction is fixed from here on
    await sleep(1_000);
    const claim = {
      scope: '',
      key: randomUUID(),
      fingerprint: Buffer.alloc(32, 1),
      leaseMs: LEASE_MS,
      retentionMs: 60_000,
    };
    expect((await holder.claim(claim)).outcome).toBe('claimed');
    const seen = await new PostgresIdempotencyStore(reader, table).claim(claim);
    await reader.query('ROLLBACK');
    expect(seen.outcome).toBe('in_progress');
    expect((seen as { leaseLeftMs: number }).leaseLeftMs).toBeLessThanOrEqual(LEASE_MS);
  } finally {
    await reader.end();
  }
});
