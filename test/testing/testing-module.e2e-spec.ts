// IdempotencyTestingModule (nest-idempotency-pg/testing): a controller carrying @Idempotent()
// tested with Test.createTestingModule and no Postgres, under Express and Fastify. The
// outcomes are the real module's, on the in-memory store.
import { Body, Controller, Post, type INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { randomUUID } from 'node:crypto';
import { Idempotent, IdempotencyStore } from '../../src/index.js';
import { IdempotencyTestingModule, InMemoryIdempotencyStore } from '../../src/testing/index.js';
import { send } from '../support/http.js';
import { expectProblem, expectReplayOf } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { ADAPTERS, sleep } from '../support/test-app.js';
import { createAdapterApp, listenOnLoopback } from '../support/nest-app.js';

let runs = 0;

@Controller('bookings')
class BookingsController {
  @Post()
  @Idempotent({ leaseMs: 1_000 })
  async book(@Body() body: { product: string; delayMs?: number }) {
    runs++;
    if (body.delayMs) await sleep(body.delayMs);
    return { booking: runs, product: body.product };
  }
}

describe.each(ADAPTERS)('IdempotencyTestingModule under %s', (adapter) => {
  let app: INestApplication;
  let url: string;
  let now = Date.now();
  const store = new InMemoryIdempotencyStore({ now: () => now });

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyTestingModule.forRoot({ store })],
      controllers: [BookingsController],
    }).compile();
    app = createAdapterApp(moduleRef, adapter);
    url = await listenOnLoopback(app);
  });
  afterAll(() => app?.close());
  beforeEach(() => {
    runs = 0;
    now = Date.now();
    store.clear();
  });

  const book = (key: string, body: object) =>
    send(url, '/bookings', { headers: [['x-idempotency-key', key]], body });

  it('runs a new key once and replays it: 201, then 409 with the same body', async () => {
    const key = randomUUID();
    const first = await book(key, { product: 'travel' });
    const again = await book(key, { product: 'travel' });
    expect(first.status).toBe(201);
    expect(first.json).toEqual({ booking: 1, product: 'travel' });
    expectReplayOf(again, first);
    expect(runs).toBe(1);
    expect(app.get(IdempotencyStore)).toBe(store);
  });

  it('answers 422 for the same key with another body, and 423 while the first runs', async () => {
    const key = randomUUID();
    const slow = book(key, { product: 'slow', delayMs: 300 });
    await waitFor('the first request to claim its key', () => store.size === 1);
    expectProblem(await book(key, { product: 'other' }), 422, 'idempotency_key_reused');
    const duplicate = await book(key, { product: 'slow', delayMs: 300 });
    expectProblem(duplicate, 423, 'idempotency_request_in_flight');
    expect((await slow).status).toBe(201);
    expect(runs).toBe(1);
  });

  it("moves with the store's clock: a lapsed lease is taken over without waiting", async () => {
    const key = randomUUID();
    const stuck = book(key, { product: 'slow', delayMs: 300 });
    await waitFor('the first request to claim its key', () => store.size === 1);
    now += 1_001; // the route's leaseMs has passed: its process is presumed dead
    const takeover = await book(key, { product: 'slow', delayMs: 300 });
    expect(takeover.status).toBe(201);
    expect(runs).toBe(2);
    // The first request lost its lease; its response cannot overwrite the new owner's.
    expectProblem(await stuck, 503, 'idempotency_lease_lost');
  });
});
