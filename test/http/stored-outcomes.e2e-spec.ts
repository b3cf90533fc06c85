// What is stored and what a replay carries: the errors a handler produced (released by
// default, stored with `storeErrors`), errors written around it (held, never stored), and the
// response headers replayed with a stored response (`replayHeaders`). Under Express and Fastify.
import {
  Body,
  Controller,
  Header,
  HttpException,
  Post,
  Res,
  UseInterceptors,
  type Type,
} from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { Idempotent, IdempotencyTransaction } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import { expectProblem } from '../support/problem.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import {
  ADAPTERS,
  GUARDED_SLOW_HANDLER_MS,
  RunCounter,
  sleep,
  TimeoutInterceptor,
  uniqueTableName,
} from '../support/test-app.js';

const NOTES_TABLE = uniqueTableName('outcome_notes');

/** Sets a header on Express's response or Fastify's reply. */
function setHeader(res: any, name: string, value: string | string[]): void {
  if (res.raw) res.header(name, value);
  else res.setHeader(name, value);
}

@Controller('outcomes')
class OutcomesController {
  constructor(
    private readonly runs: RunCounter,
    private readonly tx: IdempotencyTransaction,
  ) {}

  /** Answers its own 400 through the response, then takes a moment to return. */
  @Post('answers-400')
  @Idempotent()
  async answers400(@Res({ passthrough: true }) res: any) {
    this.runs.hit('answers-400');
    res.status(400).send({ error: 'not yet', run: this.runs.count('answers-400') });
    await sleep(50);
  }

  /** Throws the status asked for, as a business rule would (a declined card, a conflict). */
  @Post('declines')
  @Idempotent({ storeErrors: true })
  declines(@Body() body: { status: number }) {
    this.runs.hit('declines');
    throw new HttpException({ code: 'declined', run: this.runs.count('declines') }, body.status);
  }

  @Post('declines-original-status')
  @Idempotent({ storeErrors: true, replayStatus: 409 })
  declinesOriginalStatus() {
    this.runs.hit('declines-original-status');
    throw new HttpException({ code: 'declined' }, 402);
  }

  @Post('picky')
  @Idempotent({ storeErrors: (status) => status === 402 })
  picky(@Body() body: { status: number }) {
    this.runs.hit('picky');
    throw new HttpException({ run: this.runs.count('picky') }, body.status);
  }

  @Post('crashes')
  @Idempotent({ storeErrors: (status) => status < 500 })
  crashes() {
    this.runs.hit('crashes');
    throw new Error('crashed');
  }

  @Post('declines-in-transaction')
  @Idempotent({ storeErrors: true, transactional: true })
  async declinesInTransaction() {
    this.runs.hit('declines-in-transaction');
    await this.tx.manager.query(`INSERT INTO "${NOTES_TABLE}" (note) VALUES ('declined')`);
    throw new HttpException({ code: 'declined' }, 402);
  }

  @Post('headers')
  @Idempotent()
  headers(@Res({ passthrough: true }) res: any) {
    this.runs.hit('headers');
    describeDownload(res);
    return { report: 'q3' };
  }

  @Post('headers-extended')
  @Idempotent({ replayHeaders: ['X-Request-Id', 'link'] })
  headersExtended(@Res({ passthrough: true }) res: any) {
    this.runs.hit('headers-extended');
    describeDownload(res);
    return { report: 'q4' };
  }

  @Post('headers-decorated')
  @Idempotent()
  @Header('ETag', '"v7"')
  @Header('Cache-Control', 'no-store')
  headersDecorated() {
    this.runs.hit('headers-decorated');
    return { decorated: true };
  }
}

function describeDownload(res: any): void {
  setHeader(res, 'ETag', '"r-1"');
  setHeader(res, 'Content-Disposition', 'attachment; filename="report.json"');
  setHeader(res, 'Content-Language', 'en');
  setHeader(res, 'Last-Modified', 'Wed, 21 Oct 2026 07:28:00 GMT');
  setHeader(res, 'Cache-Control', 'private, max-age=60');
  setHeader(res, 'X-Request-Id', `req-${randomUUID()}`);
  setHeader(res, 'Link', '</reports/q3/next>; rel="next"');
  setHeader(res, 'Set-Cookie', ['session=abc; HttpOnly', 'theme=dark']);
}

@Controller('outcomes/guarded')
@UseInterceptors(TimeoutInterceptor)
class GuardedOutcomesController {
  constructor(private readonly runs: RunCounter) {}

  @Post('slow')
  @Idempotent({ storeErrors: true })
  async slow() {
    this.runs.hit('guarded-slow');
    await sleep(GUARDED_SLOW_HANDLER_MS);
    return { done: true };
  }
}

const post = (t: RouteApp, path: string, key: string, body: object = {}) =>
  send(t.url, path, { headers: [['x-idempotency-key', key]], body });

function expectStoredErrorReplay(replay: TestResponse, first: TestResponse): void {
  expect(replay.status).toBe(first.status);
  expect(replay.body.equals(first.body)).toBe(true);
  expect(replay.headers['content-type']).toBe(first.headers['content-type']);
  expect(replay.headers['idempotent-replayed']).toBe('true');
  expect(replay.headers['x-idempotency-original-status']).toBe(String(first.status));
}

describe.each(ADAPTERS)('stored outcomes under %s', (adapter) => {
  let t: RouteApp;
  let db: pg.Client;

  beforeAll(async () => {
    db = new pg.Client(process.env.DATABASE_URL);
    await db.connect();
    await db.query(`CREATE TABLE IF NOT EXISTS "${NOTES_TABLE}" (note text NOT NULL)`);
    t = await createRouteApp(adapter, {
      controllers: [OutcomesController, GuardedOutcomesController] as Type[],
      providers: [TimeoutInterceptor],
    });
  });
  afterAll(async () => {
    await t?.close();
    await db.query(`DROP TABLE IF EXISTS "${NOTES_TABLE}"`);
    await db.end();
  });
  beforeEach(() => t.runs.reset());

  describe('an error the handler answered itself', () => {
    it('releases the key although the handler returned after answering', async () => {
      const key = randomUUID();
      const first = await post(t, '/outcomes/answers-400', key);
      expect(first.status).toBe(400);
      expect(first.json).toEqual({ error: 'not yet', run: 1 });
      await sleep(100); // the handler returns 50 ms after answering; then the key is released
      const retry = await post(t, '/outcomes/answers-400', key);
      expect(retry.status).toBe(400);
      expect(retry.json).toEqual({ error: 'not yet', run: 2 });
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(t.runs.count('answers-400')).toBe(2);
    });
  });

  describe('storeErrors', () => {
    it('stores an error the handler threw and replays it with its own status', async () => {
      const key = randomUUID();
      const first = await post(t, '/outcomes/declines', key, { status: 422 });
      expect(first.status).toBe(422);
      expect(first.json).toEqual({ code: 'declined', run: 1 });
      for (let i = 0; i < 3; i++) {
        expectStoredErrorReplay(await post(t, '/outcomes/declines', key, { status: 422 }), first);
      }
      expect(t.runs.count('declines')).toBe(1);
    });

    it('never replays a stored error as 409, whatever replayStatus says', async () => {
      const key = randomUUID();
      const first = await post(t, '/outcomes/declines-original-status', key);
      expect(first.status).toBe(402);
      expectStoredErrorReplay(await post(t, '/outcomes/declines-original-status', key), first);
      expect(t.runs.count('declines-original-status')).toBe(1);
    });

    it('stores only the statuses its function picks', async () => {
      const stored = randomUUID();
      const first = await post(t, '/outcomes/picky', stored, { status: 402 });
      expect(first.status).toBe(402);
      expectStoredErrorReplay(await post(t, '/outcomes/picky', stored, { status: 402 }), first);
      const released = randomUUID();
      expect((await post(t, '/outcomes/picky', released, { status: 400 })).json).toMatchObject({
        run: 2,
      });
      const again = await post(t, '/outcomes/picky', released, { status: 400 });
      expect(again.status).toBe(400);
      expect(again.json).toMatchObject({ run: 3 });
      expect(again.headers['idempotent-replayed']).toBeUndefined();
      expect(t.runs.count('picky')).toBe(3);
    });

    it('releases an error whose status its function declines (a crash answered 500)', async () => {
      const key = randomUUID();
      expect((await post(t, '/outcomes/crashes', key)).status).toBe(500);
      const retry = await post(t, '/outcomes/crashes', key);
      expect(retry.status).toBe(500);
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(t.runs.count('crashes')).toBe(2);
    });

    it("stores a transactional handler's error without its writes", async () => {
      const key = randomUUID();
      const count = async () =>
        Number((await db.query(`SELECT count(*) FROM "${NOTES_TABLE}"`)).rows[0].count);
      const before = await count();
      const first = await post(t, '/outcomes/declines-in-transaction', key);
      expect(first.status).toBe(402);
      expectStoredErrorReplay(await post(t, '/outcomes/declines-in-transaction', key), first);
      expect(await count()).toBe(before);
      expect(t.runs.count('declines-in-transaction')).toBe(1);
    });

    it('never stores an error written around the handler (a timeout): the key is held', async () => {
      const key = randomUUID();
      expect((await post(t, '/outcomes/guarded/slow', key)).status).toBe(408);
      expectProblem(
        await post(t, '/outcomes/guarded/slow', key),
        423,
        'idempotency_request_in_flight',
      );
      expect(t.runs.count('guarded-slow')).toBe(1);
    });
  });

  describe('replayed headers', () => {
    it('replays the headers that describe the body, not those of one exchange', async () => {
      const key = randomUUID();
      const first = await post(t, '/outcomes/headers', key);
      expect(first.status).toBe(201);
      expect(first.headers['set-cookie']).toHaveLength(2);
      const replay = await post(t, '/outcomes/headers', key);
      expect(replay.status).toBe(409);
      expect(replay.body.equals(first.body)).toBe(true);
      for (const name of [
        'content-type',
        'etag',
        'content-disposition',
        'content-language',
        'last-modified',
        'cache-control',
      ]) {
        expect([name, replay.headers[name]]).toEqual([name, first.headers[name]]);
      }
      for (const name of ['x-request-id', 'link', 'set-cookie']) {
        expect([name, replay.headers[name]]).toEqual([name, undefined]);
      }
      expect(t.runs.count('headers')).toBe(1);
    });

    it('replays the headers a route adds with replayHeaders, never Set-Cookie', async () => {
      const key = randomUUID();
      const first = await post(t, '/outcomes/headers-extended', key);
      const replay = await post(t, '/outcomes/headers-extended', key);
      expect(replay.status).toBe(409);
      expect(replay.headers['x-request-id']).toBe(first.headers['x-request-id']);
      expect(replay.headers.link).toBe(first.headers.link);
      expect(replay.headers.etag).toBe(first.headers.etag);
      expect(replay.headers['set-cookie']).toBeUndefined();
      expect(t.runs.count('headers-extended')).toBe(1);
    });

    it('replays headers set with @Header()', async () => {
      const key = randomUUID();
      await post(t, '/outcomes/headers-decorated', key);
      const replay = await post(t, '/outcomes/headers-decorated', key);
      expect(replay.status).toBe(409);
      expect(replay.headers.etag).toBe('"v7"');
      expect(replay.headers['cache-control']).toBe('no-store');
      expect(t.runs.count('headers-decorated')).toBe(1);
    });
  });
});
