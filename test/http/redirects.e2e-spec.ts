// A redirect the handler produced is its result: stored on the first request and replayed,
// with its Location, to every retry; the handler runs once. Under Express and Fastify.
import { Controller, Header, HttpCode, Post, Redirect, Res, type Type } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { Idempotent, IdempotencyTransaction } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter, uniqueTableName } from '../support/test-app.js';

const NOTES_TABLE = uniqueTableName('redirect_notes');

@Controller('redirects')
class RedirectsController {
  constructor(
    private readonly runs: RunCounter,
    private readonly tx: IdempotencyTransaction,
  ) {}

  @Post('decorated')
  @Idempotent()
  @Redirect('/x/orders/7', 303)
  decorated() {
    this.runs.hit('decorated');
  }

  @Post('decorated-original')
  @Idempotent({ replayStatus: 'original' })
  @Redirect('/x/orders/8', 303)
  decoratedOriginal() {
    this.runs.hit('decorated-original');
  }

  /** Nest lets the handler pick the target: `{ url, statusCode }` overrides the decorator's. */
  @Post('dynamic')
  @Idempotent()
  @Redirect('/x/fallback', 302)
  dynamic() {
    this.runs.hit('dynamic');
    return { url: `/x/orders/${this.runs.count('dynamic')}`, statusCode: 307 };
  }

  @Post('passthrough-status')
  @Idempotent()
  passthroughStatus(@Res({ passthrough: true }) res: any) {
    this.runs.hit('passthrough-status');
    res.status(303);
    if (typeof res.header === 'function') res.header('Location', '/x/orders/9');
    else res.setHeader('Location', '/x/orders/9');
  }

  @Post('passthrough-redirect')
  @Idempotent()
  passthroughRedirect(@Res({ passthrough: true }) res: any) {
    this.runs.hit('passthrough-redirect');
    // Express: res.redirect(status, url); Fastify: reply.redirect(url, status).
    if (res.raw) res.redirect('/x/orders/10', 303);
    else res.redirect(303, '/x/orders/10');
  }

  @Post('http-code')
  @Idempotent()
  @HttpCode(302)
  @Header('Location', '/x/orders/11')
  httpCode() {
    this.runs.hit('http-code');
    return { moved: true };
  }

  @Post('transactional')
  @Idempotent({ transactional: true })
  @Redirect('/x/orders/12', 303)
  async transactional() {
    this.runs.hit('transactional');
    await this.tx.manager.query(`INSERT INTO "${NOTES_TABLE}" (note) VALUES ('redirected')`);
  }
}

const post = (t: RouteApp, path: string, key: string) =>
  send(t.url, path, { headers: [['x-idempotency-key', key]], body: {} });

function expectRedirectReplay(replay: TestResponse, first: TestResponse, status = 409): void {
  expect(replay.status).toBe(status);
  expect(replay.headers.location).toBe(first.headers.location);
  expect(replay.headers['idempotent-replayed']).toBe('true');
  expect(replay.headers['x-idempotency-original-status']).toBe(String(first.status));
  expect(replay.body.equals(first.body)).toBe(true);
}

describe.each(ADAPTERS)('redirects under %s', (adapter) => {
  let t: RouteApp;
  let db: pg.Client;

  beforeAll(async () => {
    db = new pg.Client(process.env.DATABASE_URL);
    await db.connect();
    await db.query(`CREATE TABLE IF NOT EXISTS "${NOTES_TABLE}" (note text NOT NULL)`);
    t = await createRouteApp(adapter, { controllers: [RedirectsController as Type] });
  });
  afterAll(async () => {
    await t?.close();
    await db.query(`DROP TABLE IF EXISTS "${NOTES_TABLE}"`);
    await db.end();
  });
  beforeEach(() => t.runs.reset());

  it('stores a @Redirect() and replays it with its Location; the handler runs once', async () => {
    const key = randomUUID();
    const first = await post(t, '/redirects/decorated', key);
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe('/x/orders/7');
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    for (let i = 0; i < 3; i++)
      expectRedirectReplay(await post(t, '/redirects/decorated', key), first);
    expect(t.runs.count('decorated')).toBe(1);
  });

  it("replays a @Redirect() with its own status when the route asks for 'original'", async () => {
    const key = randomUUID();
    const first = await post(t, '/redirects/decorated-original', key);
    expect(first.status).toBe(303);
    expectRedirectReplay(await post(t, '/redirects/decorated-original', key), first, 303);
    expect(t.runs.count('decorated-original')).toBe(1);
  });

  it('stores the target and status a @Redirect() handler returned', async () => {
    const key = randomUUID();
    const first = await post(t, '/redirects/dynamic', key);
    expect(first.status).toBe(307);
    expect(first.headers.location).toBe('/x/orders/1');
    expectRedirectReplay(await post(t, '/redirects/dynamic', key), first);
    expect(t.runs.count('dynamic')).toBe(1);
  });

  it('stores a 303 set with res.status() in a passthrough handler: 3 posts, 1 run', async () => {
    const key = randomUUID();
    const first = await post(t, '/redirects/passthrough-status', key);
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe('/x/orders/9');
    expectRedirectReplay(await post(t, '/redirects/passthrough-status', key), first);
    expectRedirectReplay(await post(t, '/redirects/passthrough-status', key), first);
    expect(t.runs.count('passthrough-status')).toBe(1);
  });

  it("stores the adapter's own redirect() called in a passthrough handler", async () => {
    const key = randomUUID();
    const first = await post(t, '/redirects/passthrough-redirect', key);
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe('/x/orders/10');
    expectRedirectReplay(await post(t, '/redirects/passthrough-redirect', key), first);
    expect(t.runs.count('passthrough-redirect')).toBe(1);
  });

  it('stores a 302 set with @HttpCode() and @Header(), body included', async () => {
    const key = randomUUID();
    const first = await post(t, '/redirects/http-code', key);
    expect(first.status).toBe(302);
    expect(first.json).toEqual({ moved: true });
    expectRedirectReplay(await post(t, '/redirects/http-code', key), first);
    expect(t.runs.count('http-code')).toBe(1);
  });

  it("commits a transactional handler's writes with its redirect, once", async () => {
    const key = randomUUID();
    const before = Number((await db.query(`SELECT count(*) FROM "${NOTES_TABLE}"`)).rows[0].count);
    const first = await post(t, '/redirects/transactional', key);
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe('/x/orders/12');
    expectRedirectReplay(await post(t, '/redirects/transactional', key), first);
    const after = Number((await db.query(`SELECT count(*) FROM "${NOTES_TABLE}"`)).rows[0].count);
    expect(after - before).toBe(1);
    expect(t.runs.count('transactional')).toBe(1);
  });
});
