// Creates and reads bookings. Creating one is the side effect that must never happen twice
// for one idempotency key: it writes through IdempotencyTransaction, so on a
// `transactional` route the booking commits together with the stored response.
import { Injectable, NotFoundException } from '@nestjs/common';
import { DataSource, type Repository } from 'typeorm';
import { IdempotencyTransaction } from '../../src/index.js';
import { BookingEvents, type BookingCreatedEvent } from '../events/booking-events.js';
import { Booking } from './booking.entity.js';
import type { InstantBookingDto } from './instant-booking.dto.js';

@Injectable()
export class BookingsService {
  private readonly bookings: Repository<Booking>;

  constructor(
    private readonly dataSource: DataSource,
    private readonly transaction: IdempotencyTransaction,
    private readonly events: BookingEvents,
  ) {
    this.bookings = dataSource.getRepository(Booking);
  }

  async create(partnerId: string, dto: InstantBookingDto): Promise<Booking> {
    const totalCents = dto.quotes.reduce((sum, quote) => sum + Math.round(quote.price * 100), 0);
    // The request's transaction when the key is tracked, the DataSource's manager otherwise.
    const bookings = this.transaction.manager.getRepository(Booking);
    const booking = await bookings.save(
      bookings.create({
        partnerId,
        status: 'CONFIRMED',
        currency: dto.currency,
        totalPrice: totalCents / 100,
        policyholder: { ...dto.policyholder },
        quotes: dto.quotes.map((quote) => ({ ...quote })),
      }),
    );
    // Published before the booking commits, to keep the example short: its consumer needs
    // nothing but the event. A production service writes the event to an outbox table in
    // this transaction and publishes from there, so a rolled-back booking announces nothing.
    await this.events.publish(bookingCreated(booking));
    return booking;
  }

  /**
   * DEMO ONLY: publishes a booking's `booking.created` again, with the same event id, as a
   * broker does when it redelivers.
   */
  async redeliver(partnerId: string, id: string): Promise<BookingCreatedEvent> {
    const event = bookingCreated(await this.findOne(partnerId, id));
    await this.events.publish(event);
    return event;
  }

  /** Confirmations sent for a booking (rows the confirmation sender wrote). */
  async confirmationsSent(bookingId: string): Promise<number> {
    const [{ sent }] = await this.dataSource.query(
      `SELECT count(*)::int AS sent FROM confirmations WHERE booking_id = $1`,
      [bookingId],
    );
    return sent;
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

function bookingCreated(booking: Booking): BookingCreatedEvent {
  return {
    eventId: `booking.created:${booking.id}`,
    bookingId: booking.id,
    partnerId: booking.partnerId,
    email: booking.policyholder.email,
  };
}
