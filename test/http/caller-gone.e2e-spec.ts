// A caller that goes away (an outer timeout unsubscribes) after the key is claimed but before
// the handler runs leaves nothing behind: the key is free, no transaction stays open. And two
// idempotency interceptors on one call (the interceptor also bound globally) track it once.
import {
  Body,
  Controller,
  Headers,
  InternalServerErrorException,
  Post,
  UseInterceptors,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  Idempotent,
  IdempotencyInterceptor,
  IdempotencyStore,
  computeFingerprint,
} from '../../src/index.js';
import { IdempotencyEngine } from '../../src/idempotency.engine.js';
import { resolveOptions } from '../../src/idempotency.options.js';
import { send } from '../support/http.js';
import { expectProblem } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ShortTimeout } from '../support/short-timeout.js';
import { ADAPTERS, RunCounter, sleep } from '../support/test-app.js';

/** The timeout is bound to the class, so it runs outside the route's idempotency interceptor. */
@Controller('gone')
@UseInterceptors(ShortTimeout)
class GoneController {
  constructor(private readonly runs: RunCounter) {}

  /** Fails after 800 ms when asked to: its key is then freed for a waiting duplicate. */
  @Post('waits')
  @Idempotent({ waitInFlightMs: 5_000 })
  async waits(@Body() body: { fail?: boolean }) {
    this.runs.hit('waits');
    await sleep(body.fail ? 800 : 10);
    if (body.fail) throw new InternalServerErrorException('first attempt fails');
    return { ok: true };
  }
}

@Controller('gone')
class TwiceController {
  constructor(private readonly runs: RunCounter) {}

  @Post('twice')
  @Idempotent()
  twice(@Headers('x-idempotency-key') key: string) {
    this.runs.hit('twice');
    return { key, run: this.runs.count('twice') };
  }
}

describe.each(ADAPTERS)('a caller gone after its claim (%s)', (adapter) => {
  let t: RouteApp;
  let twice: RouteApp;
  const applicationName = `idem-gone-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    t = await createRouteApp(adapter, {
      controllers: [GoneController],
      module: {
        connection: { type: 'postgres', url: process.env.DATABASE_URL, applicationName },
      },
    });
    twice = await createRouteApp(adapter, {
      controllers: [TwiceController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: IdempotencyInterceptor }],
    });
  });
  afterAll(async () => {
    await t?.close();
    await twice?.close();
  });

  const post = (path: string, key: string, body: object, shortTimeout = false, app = t) =>
    send(app.url, path, {
      headers: [
        ['x-idempotency-key', key],
        ...(shortTimeout ? [['x-short-timeout', '1'] as [string, string]] : []),
      ],
      body,
    });

  it('frees a key claimed for a duplicate whose caller timed out while it waited', async () => {
    const key = randomUUID();
    const first = post('/gone/waits', key, { fail: true });
    await sleep(100);
    // Waits for the first, times out at 300 ms; the first fails at 800 ms and frees the key,
    // which this gone duplicate's wait then claims.
    expect((await post('/gone/waits', key, { fail: true }, true)).status).toBe(408);
    expect((await first).status).toBe(500);
    await sleep(300);
    const retry = await post('/gone/waits', key, { fail: false });
    expect(retry.status).toBe(201);
    expect(JSON.parse(retry.body.toString())).toEqual({ ok: true });
    // The first attempt and the retry: the gone duplicate never ran the handler.
    expect(t.runs.count('waits')).toBe(2);
  });

  it('rolls back a transaction that opens after its caller is gone, and frees the key', async () => {
    const engine = t.app.get(IdempotencyEngine);
    const store = t.app.get(IdempotencyStore);
    const key = randomUUID();
    const claim = await store.claim({
      scope: '',
      key,
      fingerprint: computeFingerprint({ method: 'POST', url: '/gone', body: {} }),
      leaseMs: 60_000,
      retentionMs: 60_000,
    });
    if (claim.outcome !== 'claimed') throw new Error(`expected a claim, got ${claim.outcome}`);
    const options = resolveOptions({}, { transactional: true });
    // Gone before the transaction opens.
    engine.transactionFor(claim.record, options).subscribe().unsubscribe();

    const db = new pg.Client(process.env.DATABASE_URL);
    await db.connect();
    try {
      await waitFor(
        'the key to be freed',
        async () => (await store.inspect('', key)) === undefined,
      );
      await waitFor('no transaction left open', async () => {
        const { rows } = await db.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE application_name = $1 AND state LIKE 'idle in transaction%'`,
          [applicationName],
        );
        return rows[0].n === 0;
      });
    } finally {
      await db.end();
    }
  });

  it('tracks a call once when the interceptor is also bound globally', async () => {
    const key = randomUUID();
    const first = await post('/gone/twice', key, {}, false, twice);
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body.toString())).toEqual({ key, run: 1 });
    const replay = await post('/gone/twice', key, {}, false, twice);
    expect(replay.status).toBe(409);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(first.body)).toBe(true);
    const other = await post('/gone/twice', key, { other: true }, false, twice);
    expectProblem(other, 422, 'idempotency_key_reused');
    expect(twice.runs.count('twice')).toBe(1);
  });
});
