// The README: "On application shutdown the sweep stops". A sweep with a backlog goes on for
// up to its time box (20 s by default), so shutdown must not wait for the rest of it: it waits
// for the batch in flight and starts no other.
import { IdempotencyPurger } from '../../src/index.js';
import { Db, waitFor } from '../support/processes.js';
import { createTestApp, dropTable, type TestApp } from '../support/test-app.js';

const db = new Db();
const EXPIRED = 60_000;

describe('shutdown during a long sweep', () => {
  let t: TestApp;
  beforeAll(async () => {
    // Small batches and a long time box: the sweep would run for seconds.
    t = await createTestApp('express', {
      purge: { enabled: false, batchSize: 5, timeBoxMs: 60_000 },
    });
    await db.query(
      `INSERT INTO "${t.tableName}" (scope, idempotency_key, fingerprint, state, fencing_token,
                                     expires_at, response_status, response_headers, response_body,
                                     completed_at)
       SELECT '', 'k-' || g, sha256(g::text::bytea), 'completed', g, now() - interval '1 hour',
              201, '{}'::jsonb, '{}'::bytea, now() - interval '2 hours'
         FROM generate_series(1, $1::int) AS g`,
      [EXPIRED],
    );
  }, 60_000);
  afterAll(async () => {
    await dropTable(t.tableName);
    await db.end();
  }, 30_000);

  it('stops starting batches: close() returns promptly, and the rest is left for later', async () => {
    const sweep = t.app.get(IdempotencyPurger).runOnce();
    const left = async () =>
      Number((await db.query(`SELECT count(*) AS n FROM "${t.tableName}"`)).rows[0].n);
    await waitFor('the sweep to have deleted some rows', async () => (await left()) < EXPIRED);
    const closing = performance.now();
    await t.app.close();
    const closeMs = performance.now() - closing;
    await sweep;
    expect({ closeMs: closeMs < 1_000, leftSome: (await left()) > 0 }).toEqual({
      closeMs: true,
      leftSome: true,
    });
  }, 60_000);
});
