// The bookings API, shaped like the published one. Only the POST is idempotent (GETs are
// safe by definition and never tracked), and it is transactional: the booking row and the
// stored response commit together, so even a crash between them cannot book twice.
import {
  Body,
  Controller,
  Get,
  Headers,
  HttpCode,
  Param,
  Post,
  Res,
  UseGuards,
} from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { Idempotent } from '../../src/index.js';
import { PartnerAuthGuard } from '../auth/partner-auth.guard.js';
import { toBookingResponse, type BookingResponse } from './booking.entity.js';
import { BookingsService } from './bookings.service.js';
import { DeliveryLog } from '../confirmations/confirmation-sender.controller.js';
import { InstantBookingDto } from './instant-booking.dto.js';

/**
 * DEMO ONLY: `x-demo-delay-ms` makes the booking handler wait before it books, so the
 * walkthrough can show a second request arriving while the first is still running (423).
 * Never ship a knob like this: it lets any client hold a server slot for a while.
 */
export const DEMO_DELAY_HEADER = 'x-demo-delay-ms';
const MAX_DEMO_DELAY_MS = 10_000;

/**
 * How long a duplicate of a booking still being made waits for it (waitInFlightMs) before
 * answering 423: the published Python client never retries a 423, but it takes the 409
 * replay that a wait ends with. Two seconds cover a booking, even on a busy machine; the
 * walkthrough's slow bookings (3 s) outlast it on purpose, to show the 423.
 */
export const BOOKING_WAIT_MS = 2_000;

/** The bit of Express' and Fastify's responses the handler needs. */
interface HeaderWriter {
  header(name: string, value: string): unknown;
}

@Controller('x/partners/:partnerId')
@UseGuards(PartnerAuthGuard)
export class BookingsController {
  constructor(
    private readonly bookings: BookingsService,
    private readonly deliveries: DeliveryLog,
  ) {}

  @Post('instant_booking')
  // 200, as the published API answers a new booking: its client takes only 200 and 409.
  @HttpCode(200)
  @Idempotent({ transactional: true, waitInFlightMs: BOOKING_WAIT_MS })
  async book(
    @Param('partnerId') partnerId: string,
    @Body() body: InstantBookingDto,
    @Headers(DEMO_DELAY_HEADER) demoDelay: string | undefined,
    @Res({ passthrough: true }) response: HeaderWriter,
  ): Promise<BookingResponse> {
    const delayMs = Math.min(Number(demoDelay) || 0, MAX_DEMO_DELAY_MS);
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    const booking = await this.bookings.create(partnerId, body);
    response.header('Location', `/x/partners/${partnerId}/bookings/${booking.id}`);
    return toBookingResponse(booking);
  }

  @Get('bookings/:id')
  async findOne(
    @Param('partnerId') partnerId: string,
    @Param('id') id: string,
  ): Promise<BookingResponse> {
    return toBookingResponse(await this.bookings.findOne(partnerId, id));
  }

  /**
   * The booking's `booking.created` event: how often it reached the confirmation sender, and
   * how many confirmations went out.
   */
  @Get('bookings/:id/confirmations')
  async confirmations(@Param('partnerId') partnerId: string, @Param('id') id: string) {
    const booking = await this.bookings.findOne(partnerId, id);
    const eventId = `booking.created:${booking.id}`;
    return {
      booking_id: booking.id,
      event_id: eventId,
      deliveries: this.deliveries.count(eventId),
      sent: await this.bookings.confirmationsSent(booking.id),
    };
  }

  /**
   * DEMO ONLY: delivers the booking's `booking.created` event again, as a broker does after
   * a consumer crash or a producer's retry, and answers once the sender has handled it.
   */
  @Post('bookings/:id/redeliver')
  @HttpCode(200)
  async redeliver(@Param('partnerId') partnerId: string, @Param('id') id: string) {
    const before = this.deliveries.count(`booking.created:${id}`);
    const event = await this.bookings.redeliver(partnerId, id);
    for (let waited = 0; waited < 5_000 && this.deliveries.count(event.eventId) <= before;) {
      await sleep(20);
      waited += 20;
    }
    return this.confirmations(partnerId, id);
  }

  /** How many bookings the partner has: the walkthrough checks it against what it expects. */
  @Get('bookings')
  async count(
    @Param('partnerId') partnerId: string,
  ): Promise<{ partner_id: string; total: number }> {
    return { partner_id: partnerId, total: await this.bookings.count(partnerId) };
  }
}
