// Review findings on replays: what a retry gets back must be what the first client got
// (status class, body bytes, the replayed headers), under Express and Fastify.
import {
  BadGatewayException,
  Catch,
  Controller,
  HttpException,
  Injectable,
  Post,
  Res,
  UseFilters,
  UseInterceptors,
  type ArgumentsHost,
  type CallHandler,
  type ExceptionFilter,
  type NestInterceptor,
  type Type,
} from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { catchError, throwError, type Observable } from 'rxjs';
import { Idempotent, IdempotentReplay } from '../../src/index.js';
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

/** An application's error mapping, written as the README says: its own errors only. */
@Injectable()
class MapErrors implements NestInterceptor {
  intercept(_context: unknown, next: CallHandler): Observable<unknown> {
    return next
      .handle()
      .pipe(
        catchError((error: unknown) =>
          throwError(() =>
            error instanceof HttpException || error instanceof IdempotentReplay
              ? error
              : new BadGatewayException(),
          ),
        ),
      );
  }
}

@Controller('review-mapped')
@UseInterceptors(MapErrors)
class ReviewMappedController {
  constructor(private readonly runs: RunCounter) {}

  @Post()
  @Idempotent()
  book() {
    this.runs.hit('mapped');
    return { booked: this.runs.count('mapped') };
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
      controllers: [ReviewController, ReviewClassController, ReviewMappedController] as Type[],
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  const post = (path: string, key: string) =>
    send(t.url, path, { headers: [['x-idempotency-key', key]], body: {} });

  // Nest tries a route's filters method first, then class, each list last written first: a
  // catch-all filter written above @Idempotent() (or on the method when @Idempotent() is on
  // the class) would render the replay (and the module's problems) unless the module puts
  // its own filter first.
  it.each(['/review/filtered', '/review-class', '/review-mapped'])(
    "%s: a replay is a 409 with the stored body despite the app's catch-all filter or error mapping",
    async (path) => {
      const key = randomUUID();
      const first = await post(path, key);
      expect(first.status).toBe(201);
      const replay = await post(path, key);
      expect(replay.status).toBe(409);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.equals(first.body)).toBe(true);
      // The module's own answers too: another request under the key is its 422 problem.
      const reused = await send(t.url, path, {
        headers: [['x-idempotency-key', key]],
        body: { other: true },
      });
      expect(reused.status).toBe(422);
      expect(reused.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect((reused.json as { code: string }).code).toBe('idempotency_key_reused');
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

  // As the README says: both adapters give a body without a Content-Type
  // application/octet-stream, so its replay carries that one (the bytes are the same).
  it('replays a body sent without a Content-Type as application/octet-stream', async () => {
    const key = randomUUID();
    const first = await post('/review/untyped', key);
    expect(first.status).toBe(201);
    expect(first.headers['content-type']).toBeUndefined();
    const replay = await post('/review/untyped', key);
    expect(replay.status).toBe(409);
    expect(replay.body.equals(first.body)).toBe(true);
    expect(replay.headers['content-type']).toBe('application/octet-stream');
  });
});
