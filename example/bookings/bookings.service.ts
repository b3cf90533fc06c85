// Creates and reads bookings. Creating one is the side effect that must never happen twice
// for one idempotency key: it writes through IdempotencyTransaction, so on a
// `transactional` route the booking commits together with the stored response.
import { Injectable, NotFoundException } from '@nestjs/common';
import { DataSource, type Repository } from 'typeorm';
import { IdempotencyTransaction } from '../../src/index.js';
import { Booking } from './booking.entity.js';
import type { InstantBookingDto } from './instant-booking.dto.js';

@Injectable()
export class BookingsService {
  private readonly bookings: Repository<Booking>;

  constructor(
    dataSource: DataSource,
    private readonly transaction: IdempotencyTransaction,
  ) {
    this.bookings = dataSource.getRepository(Booking);
  }

  async create(partnerId: string, dto: InstantBookingDto): Promise<Booking> {
    const totalCents = dto.quotes.reduce((sum, quote) => sum + Math.round(quote.price * 100), 0);
    // The request's transaction when the key is tracked, the DataSource's manager otherwise.
    const bookings = this.transaction.manager.getRepository(Booking);
    return bookings.save(
      bookings.create({
        partnerId,
        status: 'CONFIRMED',
        currency: dto.currency,
        totalPrice: totalCents / 100,
        policyholder: { ...dto.policyholder },
        quotes: dto.quotes.map((quote) => ({ ...quote })),
      }),
    );
  }

  async findOne(partnerId: string, id: string): Promise<Booking> {
    const booking = /^[0-9a-f-]{36}$/i.test(id)
      ? await this.bookings.findOneBy({ id, partnerId })
      : null;
    if (!booking) throw new NotFoundException(`No booking ${id} for partner ${partnerId}.`);
    return booking;
  }

  count(partnerId: string): Promise<number> {
    return this.bookings.countBy({ partnerId });
  }
}
