// A transactional handler still running when an outer timeout interceptor answers 408: the
// module rolls its transaction back and frees the key, but the handler goes on. Its next
// query must not run on that connection after the rollback, outside any transaction, where
// it would commit on its own while a retry runs the handler again.
import { Body, Controller, Post, UseInterceptors } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { Idempotent, IdempotencyTransaction } from '../../src/index.js';
import { send } from '../support/http.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ShortTimeout } from '../support/short-timeout.js';
import { ADAPTERS, RunCounter, sleep, uniqueTableName } from '../support/test-app.js';

const transfers = uniqueTableName('idem_tx_transfers');

@Controller('transfers')
@UseInterceptors(ShortTimeout)
class TransfersController {
  constructor(
    private readonly tx: IdempotencyTransaction,
    private readonly runs: RunCounter,
  ) {}

  /** A slow first statement (a lock wait, say), still in flight at the 408; then a write. */
  @Post()
  @Idempotent({ transactional: true })
  async transfer(@Body() body: { ref: string }) {
    this.runs.hit('transfer');
    await this.tx.manager.query('SELECT pg_sleep(0.6)');
    await this.tx.manager.query(`INSERT INTO "${transfers}" (ref) VALUES ($1)`, [body.ref]);
    return { ref: body.ref };
  }

  /** A write, then a statement that would run for 30 s (a lock wait that never ends, say). */
  @Post('stuck')
  @Idempotent({ transactional: true })
  async stuck(@Body() body: { ref: string }) {
    this.runs.hit('stuck');
    await this.tx.manager.query(`INSERT INTO "${transfers}" (ref) VALUES ($1)`, [body.ref]);
    await this.tx.manager.query(`SELECT pg_sleep(30), $1::text AS ref`, [body.ref]);
    return { ref: body.ref };
  }
}

let db: pg.Client;
beforeAll(async () => {
  db = new pg.Client(process.env.DATABASE_URL);
  await db.connect();
  await db.query(`CREATE TABLE "${transfers}" (id bigserial PRIMARY KEY, ref text NOT NULL)`);
});
afterAll(async () => {
  await db?.query(`DROP TABLE IF EXISTS "${transfers}"`);
  await db?.end();
});

const written = async (ref: string): Promise<number> =>
  (await db.query(`SELECT count(*)::int AS n FROM "${transfers}" WHERE ref = $1`, [ref])).rows[0].n;

describe.each(ADAPTERS)('a transactional handler outlived by a timeout (%s)', (adapter) => {
  let t: RouteApp;
  beforeAll(async () => {
    t = await createRouteApp(adapter, { controllers: [TransfersController] });
  });
  afterAll(async () => {
    await t?.close();
  });

  const post = (key: string, ref: string, shortTimeout: boolean, path = '/transfers') =>
    send(t.url, path, {
      headers: [
        ['x-idempotency-key', key],
        ...(shortTimeout ? [['x-short-timeout', '1'] as [string, string]] : []),
      ],
      body: { ref },
    });

  it('commits none of the first run once its transaction was rolled back', async () => {
    const key = randomUUID();
    const ref = randomUUID();
    expect((await post(key, ref, true)).status).toBe(408);
    // The handler's sleep ends at 600 ms and it tries its write.
    await sleep(1_000);
    expect(await written(ref)).toBe(0);

    const retry = await post(key, ref, false);
    expect(retry.status).toBe(201);
    expect(t.runs.count('transfer')).toBe(2);
    expect(await written(ref)).toBe(1);
  });

  it('cancels the statement the handler is still running, so its backend and locks go at once', async () => {
    const key = randomUUID();
    const ref = randomUUID();
    expect((await post(key, ref, true, '/transfers/stuck')).status).toBe(408);
    // Without the cancel, the backend sleeps on for 30 s holding the row its INSERT wrote.
    const stillRunning = async () =>
      (
        await db.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'`,
        )
      ).rows[0].n;
    const deadline = Date.now() + 3_000;
    while ((await stillRunning()) > 0 && Date.now() < deadline) await sleep(50);
    expect(await stillRunning()).toBe(0);
    expect(await written(ref)).toBe(0);
    expect(t.runs.count('stuck')).toBe(1);
  });
});
