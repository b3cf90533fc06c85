// The published Python client posts to `.../instant_booking/` (trailing slash); other
// clients post to `.../instant_booking`. Both reach the same route (Express by default,
// Fastify with `ignoreTrailingSlash`), so under one key they are one request: the second
// replays the first instead of answering 422, and the handler runs once.
import { Body, Controller, Param, Post, type INestApplication } from '@nestjs/common';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { send } from '../support/http.js';
import { expectReplayOf } from '../support/problem.js';
import { ADAPTERS, dropTable, uniqueTableName, type AdapterName } from '../support/test-app.js';
import { testIdempotencyModule } from '../support/nest-app.js';

let runs = 0;

@Controller('x/partners/:partnerId')
class BookingController {
  @Post('instant_booking')
  @Idempotent()
  book(@Param('partnerId') partnerId: string, @Body() body: unknown) {
    runs++;
    return { id: randomUUID(), partnerId, body };
  }
}

async function startApp(adapter: AdapterName, tableName: string): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({
    imports: [testIdempotencyModule(tableName)],
    controllers: [BookingController],
  }).compile();
  const app =
    adapter === 'fastify'
      ? moduleRef.createNestApplication(
          new FastifyAdapter({ routerOptions: { ignoreTrailingSlash: true } }),
          { logger: false },
        )
      : moduleRef.createNestApplication({ logger: false });
  await app.listen(0, '127.0.0.1');
  return app;
}

describe.each(ADAPTERS)('trailing slash under %s', (adapter) => {
  const tableName = uniqueTableName('idem_slash');
  let app: INestApplication;
  let url: string;

  beforeAll(async () => {
    app = await startApp(adapter, tableName);
    url = (await app.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');
  });
  afterAll(async () => {
    await app?.close();
    await dropTable(tableName);
  });

  it.each([
    ['with the slash first', '/x/partners/p1/instant_booking/', '/x/partners/p1/instant_booking'],
    [
      'without the slash first',
      '/x/partners/p1/instant_booking',
      '/x/partners/p1/instant_booking/',
    ],
  ])('%s: one route, one request, one run', async (_order, firstPath, secondPath) => {
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    const body = { product: 'travel', price: 42.5 };
    const before = runs;
    const first = await send(url, firstPath, { headers, body });
    expect({ status: first.status, body: first.text }).toMatchObject({ status: 201 });
    const second = await send(url, secondPath, { headers, body });
    expectReplayOf(second, first);
    // A query string keeps its meaning: the slash before it does not count either.
    const withQuery = await send(url, `${secondPath}?`, { headers, body });
    expectReplayOf(withQuery, first);
    expect(runs - before).toBe(1);
  });

  it('a different body under the same key is still a different request (422)', async () => {
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    const first = await send(url, '/x/partners/p1/instant_booking/', { headers, body: { a: 1 } });
    expect(first.status).toBe(201);
    const other = await send(url, '/x/partners/p1/instant_booking', { headers, body: { a: 2 } });
    expect(other.status).toBe(422);
    expect(other.json).toMatchObject({ code: 'idempotency_key_reused' });
  });
});
