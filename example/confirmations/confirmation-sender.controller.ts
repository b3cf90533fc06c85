// The second handler: sends a booking's confirmation when `booking.created` arrives. Brokers
// deliver at least once, so the same event can arrive again (a producer's retry, a
// redelivery after a crash); @Idempotent() keyed by the event id makes it send once. The
// "send" is a row in `confirmations`, written in the same transaction as the idempotency
// record: a crash between the two cannot send twice. (A real email API is not
// transactional: record the intent here and let an outbox send it, or pass the event id on
// as the provider's idempotency key.)
import { Controller, Injectable, UseInterceptors } from '@nestjs/common';
import type { CallHandler, ExecutionContext, NestInterceptor } from '@nestjs/common';
import { EventPattern, Payload } from '@nestjs/microservices';
import { finalize, type Observable } from 'rxjs';
import { Idempotent, IdempotencyTransaction } from '../../src/index.js';
import { BOOKING_CREATED, type BookingCreatedEvent } from '../events/booking-events.js';

/** How many times each event reached the sender, sent or skipped (for the walkthrough). */
@Injectable()
export class DeliveryLog {
  private readonly deliveries = new Map<string, number>();

  record(eventId: string): void {
    this.deliveries.set(eventId, this.count(eventId) + 1);
  }

  count(eventId: string): number {
    return this.deliveries.get(eventId) ?? 0;
  }
}

/** Counts every delivery once handled, including the ones @Idempotent() skips. */
@Injectable()
class CountDeliveries implements NestInterceptor {
  constructor(private readonly log: DeliveryLog) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const { eventId } = context.switchToRpc().getData<BookingCreatedEvent>();
    return next.handle().pipe(finalize(() => this.log.record(eventId)));
  }
}

@Controller()
@UseInterceptors(CountDeliveries)
export class ConfirmationSender {
  constructor(private readonly transaction: IdempotencyTransaction) {}

  @EventPattern(BOOKING_CREATED)
  @Idempotent({
    key: (context) => context.switchToRpc().getData<BookingCreatedEvent>().eventId,
    transactional: true,
  })
  async send(@Payload() event: BookingCreatedEvent): Promise<void> {
    await this.transaction.manager.query(
      `INSERT INTO confirmations (booking_id, event_id, email) VALUES ($1, $2, $3)`,
      [event.bookingId, event.eventId, event.email],
    );
  }
}
