// An application whose exception filter answers errors with a success status (an envelope,
// `200 { ok: false }`, or a redirect to an error page). The handler threw, so by the README's
// table its key is released and a retry runs it again; on a transactional route its writes
// are rolled back. The status the app's filter picked must not turn the failure into a
// stored success.
import {
  Catch,
  Controller,
  HttpException,
  Post,
  Res,
  type ArgumentsHost,
  type ExceptionFilter,
  type Type,
} from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { Idempotent, IdempotencyTransaction } from '../../src/index.js';
import { send } from '../support/http.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter, uniqueTableName } from '../support/test-app.js';

const LEDGER = uniqueTableName('review_ledger');

/** Renders the app's own errors as `200 { ok: false }`, as some APIs do. */
@Catch(HttpException)
class EnvelopeFilter implements ExceptionFilter {
  catch(exception: HttpException, host: ArgumentsHost) {
    const response = host.switchToHttp().getResponse();
    const raw = response.raw ?? response;
    raw.statusCode = 200;
    raw.setHeader('content-type', 'application/json; charset=utf-8');
    raw.end(JSON.stringify({ ok: false, error: exception.message }));
  }
}

@Controller('review-envelope')
class EnvelopeController {
  constructor(
    private readonly runs: RunCounter,
    private readonly tx: IdempotencyTransaction,
  ) {}

  /** Declines the first time, charges the second. */
  @Post('charge')
  @Idempotent()
  charge() {
    this.runs.hit('charge');
    if (this.runs.count('charge') === 1) throw new HttpException('card declined', 402);
    return { ok: true, charged: this.runs.count('charge') };
  }

  /** Answers 201 itself, then fails: the client has its success, which is stored. */
  @Post('sent-then-threw')
  @Idempotent()
  async sentThenThrew(@Res({ passthrough: true }) res: any) {
    this.runs.hit('sent-then-threw');
    res.status(201).send({ ok: true, charged: this.runs.count('sent-then-threw') });
    await new Promise((resolve) => setTimeout(resolve, 20));
    throw new HttpException('after the answer', 500);
  }

  /** Writes to the ledger, then fails. */
  @Post('ledger')
  @Idempotent({ transactional: true })
  async ledger() {
    this.runs.hit('ledger');
    await this.tx.manager.query(`INSERT INTO "${LEDGER}" (note) VALUES ('half done')`);
    throw new HttpException('failed after writing', 500);
  }
}

describe.each(ADAPTERS)('review: errors an app filter answers with 200, under %s', (adapter) => {
  let t: RouteApp;
  let db: pg.Client;

  beforeAll(async () => {
    db = new pg.Client(process.env.DATABASE_URL);
    await db.connect();
    await db.query(`CREATE TABLE IF NOT EXISTS "${LEDGER}" (note text NOT NULL)`);
    t = await createRouteApp(adapter, {
      controllers: [EnvelopeController] as Type[],
      providers: [{ provide: APP_FILTER, useClass: EnvelopeFilter }],
    });
  });
  afterAll(async () => {
    await t?.close();
    await db.query(`DROP TABLE IF EXISTS "${LEDGER}"`);
    await db.end();
  });
  beforeEach(() => t.runs.reset());

  it('releases the key of a handler that threw: the retry runs it', async () => {
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    const first = await send(t.url, '/review-envelope/charge', { headers, body: {} });
    expect(first.status).toBe(200);
    expect(first.json).toEqual({ ok: false, error: 'card declined' });
    const retry = await send(t.url, '/review-envelope/charge', { headers, body: {} });
    expect(retry.status).toBe(201);
    expect(retry.json).toEqual({ ok: true, charged: 2 });
    expect(t.runs.count('charge')).toBe(2);
  });

  it('still stores a success the handler sent before it threw', async () => {
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    const first = await send(t.url, '/review-envelope/sent-then-threw', { headers, body: {} });
    expect(first.status).toBe(201);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const retry = await send(t.url, '/review-envelope/sent-then-threw', { headers, body: {} });
    expect(retry.status).toBe(409);
    expect(retry.body.equals(first.body)).toBe(true);
    expect(t.runs.count('sent-then-threw')).toBe(1);
  });

  it('commits none of the writes of a transactional handler that threw', async () => {
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    const before = (await db.query(`SELECT count(*)::int AS n FROM "${LEDGER}"`)).rows[0].n;
    const first = await send(t.url, '/review-envelope/ledger', { headers, body: {} });
    expect(first.status).toBe(200);
    const after = (await db.query(`SELECT count(*)::int AS n FROM "${LEDGER}"`)).rows[0].n;
    expect(after - before).toBe(0);
  });
});
