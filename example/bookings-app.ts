// Starts the example API on a given Postgres: used by `npm start`, `npm run demo` and the
// walkthrough test, so all three run exactly the same application. It is a hybrid app: it
// also consumes its own `booking.created` events (over Redis with REDIS_URL, else TCP).
import 'reflect-metadata';
import {
  ValidationPipe,
  type INestApplication,
  type LoggerService,
  type LogLevel,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { AddressInfo } from 'node:net';
import type { DataSource } from 'typeorm';
import { AppModule } from './app.module.js';
import { openBookingsDataSource } from './database/bookings.data-source.js';
import { BookingEvents, connectBookingEvents } from './events/booking-events.js';
import { serveBookingsDocs } from './openapi.js';

export interface BookingsAppOptions {
  /** Postgres URL. */
  databaseUrl: string;
  /**
   * Port to listen on; `0` picks a free one.
   * @default 3000
   */
  port?: number;
  /**
   * Interface to listen on. Loopback by default: the example has toy credentials.
   * @default '127.0.0.1'
   */
  host?: string;
  /**
   * HTTP adapter. Fastify is set to ignore trailing slashes, as Express does by default: the
   * published client posts to `.../instant_booking/`.
   * @default 'express'
   */
  adapter?: 'express' | 'fastify';
  /** Postgres schema for the example's tables (see BookingsDataSourceOptions.schema). */
  schema?: string;
  /**
   * Redis for the booking events, e.g. `redis://127.0.0.1:6379`; without it they go over TCP
   * on loopback.
   * @default process.env.REDIS_URL
   */
  redisUrl?: string;
  /**
   * Nest's logger levels, a logger of your own, or `false` for silence.
   * @default ['log', 'warn', 'error']
   */
  logger?: false | LogLevel[] | LoggerService;
}

export interface RunningBookingsApp {
  /** Base URL, e.g. `http://127.0.0.1:3000`. */
  url: string;
  /** Where the booking events travel. */
  events: string;
  app: INestApplication;
  dataSource: DataSource;
  /** Stops the HTTP server, then closes the DataSource. */
  close(): Promise<void>;
}

export async function startBookingsApp(options: BookingsAppOptions): Promise<RunningBookingsApp> {
  const host = options.host ?? '127.0.0.1';
  const dataSource = await openBookingsDataSource({
    url: options.databaseUrl,
    schema: options.schema,
  });
  let app: INestApplication | undefined;
  let events: string;
  try {
    const logger = options.logger ?? ['log', 'warn', 'error'];
    app =
      options.adapter === 'fastify'
        ? await NestFactory.create(
            AppModule.register(dataSource),
            new (await import('@nestjs/platform-fastify')).FastifyAdapter({
              routerOptions: { ignoreTrailingSlash: true },
            }),
            { logger },
          )
        : await NestFactory.create(AppModule.register(dataSource), { logger });
    app.useGlobalPipes(
      new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true }),
    );
    events = await connectBookingEvents(app, options.redisUrl ?? process.env.REDIS_URL);
    serveBookingsDocs(app);
    await app.listen(options.port ?? 3000, host);
  } catch (error) {
    await app?.get(BookingEvents).close();
    await app?.close();
    await dataSource.destroy();
    throw error;
  }
  const { port } = app.getHttpServer().address() as AddressInfo;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    events,
    app,
    dataSource,
    async close() {
      await app.get(BookingEvents).close();
      await app.close();
      // IdempotencyModule never closes a DataSource it was given: that is our job.
      if (dataSource.isInitialized) await dataSource.destroy();
    },
  };
}
