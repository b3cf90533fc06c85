// How bookings travel to their consumers: Nest's Redis transport when REDIS_URL is set,
// otherwise its TCP transport, which the app itself listens on (a fresh machine has no
// Redis, and `npm start` / `npm run demo` must still work there).
import { Injectable, Logger, type INestApplication } from '@nestjs/common';
import {
  ClientProxyFactory,
  Transport,
  type ClientProxy,
  type MicroserviceOptions,
} from '@nestjs/microservices';
import type { AddressInfo, Server } from 'node:net';
import { firstValueFrom } from 'rxjs';

export const BOOKING_CREATED = 'booking.created';

/** What a consumer of `booking.created` gets. */
export interface BookingCreatedEvent {
  /** Stable across redeliveries of the same event: the consumers' idempotency key. */
  eventId: string;
  bookingId: string;
  partnerId: string;
  email: string;
}

/** Publishes booking events once the app's transport is up (see connectBookingEvents). */
@Injectable()
export class BookingEvents {
  private readonly logger = new Logger(BookingEvents.name);
  private client?: ClientProxy;

  attach(client: ClientProxy): void {
    this.client = client;
  }

  async publish(event: BookingCreatedEvent): Promise<void> {
    if (!this.client) throw new Error('BookingEvents: the transport is not connected yet');
    await firstValueFrom(this.client.emit(BOOKING_CREATED, event), { defaultValue: undefined });
    this.logger.debug(`published ${BOOKING_CREATED} ${event.eventId}`);
  }

  async close(): Promise<void> {
    await this.client?.close();
  }
}

/**
 * Listens for booking events in the app (a hybrid HTTP + microservice app) and connects the
 * publisher. Returns a description of the transport for the logs.
 */
export async function connectBookingEvents(
  app: INestApplication,
  redisUrl = process.env.REDIS_URL,
): Promise<string> {
  const redis = redisUrl ? redisOptions(redisUrl) : undefined;
  const server = app.connectMicroservice<MicroserviceOptions>(
    redis
      ? { transport: Transport.REDIS, options: redis }
      : { transport: Transport.TCP, options: { host: '127.0.0.1', port: 0 } },
  );
  await app.startAllMicroservices();
  const client = redis
    ? ClientProxyFactory.create({ transport: Transport.REDIS, options: redis })
    : ClientProxyFactory.create({
        transport: Transport.TCP,
        options: {
          host: '127.0.0.1',
          port: (server.unwrap<Server>().address() as AddressInfo).port,
        },
      });
  await client.connect();
  app.get(BookingEvents).attach(client);
  return redis ? `Redis at ${redis.host}:${redis.port}` : 'TCP on loopback (no REDIS_URL)';
}

function redisOptions(url: string) {
  const parsed = new URL(url);
  return {
    host: parsed.hostname,
    port: Number(parsed.port || 6379),
    username: decodeURIComponent(parsed.username) || undefined,
    password: decodeURIComponent(parsed.password) || undefined,
    db: parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : undefined,
  };
}
