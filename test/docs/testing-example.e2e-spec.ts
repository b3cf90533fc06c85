// The README's "Testing your application" example, verbatim below this comment (the docs
// test checks that it is), run as part of the suite.

import { Body, Controller, Post, type INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Idempotent } from 'nest-idempotency-pg';
import { IdempotencyTestingModule } from 'nest-idempotency-pg/testing';

@Controller('bookings')
class BookingsController {
  bookings = 0;

  @Post()
  @Idempotent()
  book(@Body() body: { product: string }) {
    this.bookings++;
    return { id: this.bookings, product: body.product };
  }
}

describe('BookingsController', () => {
  let app: INestApplication;

  beforeEach(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyTestingModule.forRoot()], // in memory: no Postgres
      controllers: [BookingsController],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
  });
  afterEach(() => app.close());

  it('books once when the client retries', async () => {
    const book = async () =>
      fetch(`${await app.getUrl()}/bookings`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-idempotency-key': 'booking-1' },
        body: JSON.stringify({ product: 'travel' }),
      });
    const first = await book();
    const retry = await book();

    expect(first.status).toBe(201);
    expect(retry.status).toBe(409);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await retry.json()).toEqual(await first.json());
    expect(app.get(BookingsController).bookings).toBe(1);
  });
});
