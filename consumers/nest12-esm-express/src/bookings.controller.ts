// The routes every server consumer exposes: a plain idempotent POST (with an optional delay,
// for the 423 case), a transactional one, the two @Res() shapes, and the handler runs so far.
import { Body, Controller, Get, Post, Res } from '@nestjs/common';
import { Idempotent, IdempotencyTransaction } from 'nest-idempotency-pg';

export class BookingDto {
  product!: string;
  delayMs?: number;
}

@Controller()
export class BookingsController {
  private readonly runs = { bookings: 0, transfers: 0, passthrough: 0, writesItself: 0 };

  constructor(private readonly tx: IdempotencyTransaction) {}

  @Post('bookings')
  @Idempotent()
  async book(@Body() body: BookingDto) {
    const booking = ++this.runs.bookings;
    if (body.delayMs) await new Promise((resolve) => setTimeout(resolve, body.delayMs));
    return { booking, product: body.product };
  }

  /** The store's statements run inside TypeORM's transaction (structured query results). */
  @Post('transfers')
  @Idempotent({ transactional: true })
  async transfer(@Body() body: BookingDto) {
    this.runs.transfers++;
    const [row] = await this.tx.manager.query('SELECT $1::text AS echoed', [body.product]);
    return { echoed: row.echoed, inTransaction: this.tx.isActive };
  }

  /** Nest still sends the response: stored and replayed, headers included. */
  @Post('passthrough')
  @Idempotent()
  passthrough(@Res({ passthrough: true }) response: { header(name: string, value: string): void }) {
    const run = ++this.runs.passthrough;
    response.header('Location', `/passthrough/${run}`);
    return { run };
  }

  /** Writes around Nest: refused before the handler runs. */
  @Post('writes-itself')
  @Idempotent()
  writesItself(@Res() response: { status(code: number): { send(body: string): void } }) {
    this.runs.writesItself++;
    response.status(200).send('unreachable');
  }

  @Get('runs')
  count() {
    return this.runs;
  }
}
