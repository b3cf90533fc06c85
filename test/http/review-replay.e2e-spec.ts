// Review findings on replays: what a retry gets back must be what the first client got
// (status class, body bytes, the replayed headers), under Express and Fastify.
import {
  Catch,
  Controller,
  HttpException,
  Post,
  Res,
  UseFilters,
  type ArgumentsHost,
  type ExceptionFilter,
  type Type,
} from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { send } from '../support/http.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter } from '../support/test-app.js';

/** An application's catch-all filter, as `nest new` projects often add to a controller. */
@Catch()
class CatchEverythingFilter implements ExceptionFilter {
  catch(exception: unknown, host: ArgumentsHost) {
    const response = host.switchToHttp().getResponse();
    const status = exception instanceof HttpException ? exception.getStatus() : 500;
    const body = JSON.stringify({ caughtBy: 'app', status });
    const raw = response.raw ?? response;
    raw.statusCode = status;
    raw.setHeader('content-type', 'application/json');
    raw.end(body);
  }
}

@Controller('review')
class ReviewController {
  constructor(private readonly runs: RunCounter) {}

  /** The app's filter written above @Idempotent(): both on the method. */
  @Post('filtered')
  @UseFilters(CatchEverythingFilter)
  @Idempotent()
  filtered() {
    this.runs.hit('filtered');
    return { booked: this.runs.count('filtered') };
  }

  /** A body whose Content-Type the handler wrote itself, without a charset parameter. */
  @Post('typed/:type')
  @Idempotent()
  typed(@Res({ passthrough: true }) res: any) {
    this.runs.hit('typed');
    const raw = res.raw ?? res;
    const type = decodeURIComponent(raw.req.url.split('/').pop());
    raw.writeHead(201, { 'content-type': type });
    raw.end(type.includes('json') ? '{"a":1}' : 'caf\u00e9');
  }

  /** A body written with no Content-Type at all. */
  @Post('untyped')
  @Idempotent()
  untyped(@Res({ passthrough: true }) res: any) {
    this.runs.hit('untyped');
    const raw = res.raw ?? res;
    raw.statusCode = 201;
    raw.end('ok');
  }
}

@Controller('review-class')
@Idempotent()
class ReviewClassController {
  constructor(private readonly runs: RunCounter) {}

  /** @Idempotent() on the class, the app's filter on the method. */
  @Post()
  @UseFilters(CatchEverythingFilter)
  book() {
    this.runs.hit('class-filtered');
    return { booked: this.runs.count('class-filtered') };
  }
}

describe.each(ADAPTERS)('review: replays under %s', (adapter) => {
  let t: RouteApp;

  beforeAll(async () => {
    t = await createRouteApp(adapter, {
      controllers: [ReviewController, ReviewClassController] as Type[],
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  const post = (path: string, key: string) =>
    send(t.url, path, { headers: [['x-idempotency-key', key]], body: {} });

  // Not fixed: Nest tries a route's filters method first, then class, each list last written
  // first, so a catch-all filter written above @Idempotent() (or on the method when
  // @Idempotent() is on the class) renders the replay (and the module's problems) instead.
  it.failing.each(['/review/filtered', '/review-class'])(
    '%s: a replay is a 409 with the stored body even where the app has a catch-all filter',
    async (path) => {
      const key = randomUUID();
      const first = await post(path, key);
      expect(first.status).toBe(201);
      const replay = await post(path, key);
      expect(replay.status).toBe(409);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.equals(first.body)).toBe(true);
    },
  );

  it.each([
    'application/json',
    'text/plain',
    'text/csv',
    'application/vnd.api+json',
    'application/json; charset=UTF-8',
    'application/json;charset=utf-8',
    'text/plain; format=flowed; charset=utf-8',
  ])('replays the Content-Type %s as it was sent, not rewritten by the adapter', async (type) => {
    const key = randomUUID();
    const path = `/review/typed/${encodeURIComponent(type)}`;
    const first = await post(path, key);
    expect(first.status).toBe(201);
    expect(first.headers['content-type']).toBe(type);
    const replay = await post(path, key);
    expect(replay.status).toBe(409);
    expect(replay.body.equals(first.body)).toBe(true);
    expect(replay.headers['content-type']).toBe(type);
  });

  // Not fixed: both adapters give the stored bytes (a StreamableFile) application/octet-stream.
  it.failing('adds no Content-Type to the replay of a body sent without one', async () => {
    const key = randomUUID();
    const first = await post('/review/untyped', key);
    expect(first.status).toBe(201);
    const replay = await post('/review/untyped', key);
    expect(replay.status).toBe(409);
    expect(replay.body.equals(first.body)).toBe(true);
    expect(replay.headers['content-type']).toBe(first.headers['content-type']);
  });
});
