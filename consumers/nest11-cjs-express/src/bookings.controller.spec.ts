// The controller's unit test as a Nest 11 CommonJS project writes it (jest + ts-jest, as
// `nest new` sets them up): IdempotencyTestingModule instead of Postgres.
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { IdempotencyTestingModule } from 'nest-idempotency-pg/testing';
import { BookingsController } from './bookings.controller';

describe('BookingsController', () => {
  let app: INestApplication;
  let url: string;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyTestingModule.forRoot()],
      controllers: [BookingsController],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
    url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  });
  afterAll(() => app.close());

  const book = (key: string, product: string) =>
    fetch(`${url}/bookings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-idempotency-key': key },
      body: JSON.stringify({ product }),
    });

  it('books once and replays a retry with 409', async () => {
    const first = await book('k-1', 'travel');
    const retry = await book('k-1', 'travel');
    expect(first.status).toBe(201);
    expect(retry.status).toBe(409);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await retry.json()).toEqual(await first.json());
    expect(app.get(BookingsController).count().bookings).toBe(1);
  });

  it('answers 422 problem+json when the key is reused for another body', async () => {
    await book('k-2', 'travel');
    const reused = await book('k-2', 'car');
    expect(reused.status).toBe(422);
    expect(reused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect((await reused.json()).code).toBe('idempotency_key_reused');
  });
});
