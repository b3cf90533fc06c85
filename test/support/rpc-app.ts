// A hybrid app (HTTP plus microservices) with idempotent @MessagePattern and @EventPattern
// handlers, listening on Nest's Redis transport (the machine's Redis), on TCP, on RabbitMQ
// (the machine's broker, auto-ack), on NATS (the machine's server) and on MQTT 5 (the machine's
// Mosquitto). Patterns (MQTT topics) carry a random prefix and the queue a random name, so
// parallel runs on one Redis or broker never hear each other.
import {
  Controller,
  Injectable,
  UseInterceptors,
  type CallHandler,
  type ExecutionContext,
  type INestApplication,
  type INestMicroservice,
  type NestInterceptor,
} from '@nestjs/common';
import {
  ClientProxyFactory,
  Ctx,
  EventPattern,
  MessagePattern,
  MqttContext,
  Payload,
  Transport,
  type ClientProxy,
} from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import amqp from 'amqplib';
import { randomUUID } from 'node:crypto';
import type { AddressInfo, Server } from 'node:net';
import { from, tap, type Observable } from 'rxjs';
import { Idempotent, IdempotencyTransaction } from '../../src/index.js';
import { sql } from './graphql-app.js';
import { RunCounter, sleep, uniqueTableName } from './test-app.js';
import { testIdempotencyModule } from './nest-app.js';

export const REDIS = { host: '127.0.0.1', port: 6379 };
export const RMQ_URL = 'amqp://guest:guest@127.0.0.1:5672';
export const NATS = { servers: ['nats://127.0.0.1:4222'] };
/** MQTT 5, so messages carry user properties (the key header). */
export const MQTT = { url: 'mqtt://127.0.0.1:1883', protocolVersion: 5 as const };
export type RpcTransportName = 'redis' | 'tcp' | 'rmq' | 'nats' | 'mqtt';
export const RPC_TRANSPORTS: RpcTransportName[] = ['redis', 'tcp', 'rmq', 'nats', 'mqtt'];

export interface BookMessage {
  requestId?: string;
  product: string;
  delayMs?: number;
  failOnce?: boolean;
  /** Reply with this many values (a streamed reply). */
  parts?: number;
}

export interface BookingEvent {
  eventId: string;
  bookingId: string;
  delayMs?: number;
  failOnce?: boolean;
  /** Make the (not idempotent) audit handler of the same event fail after this long. */
  auditFailsAfterMs?: number;
}

/** Counts every delivery to a handler, settled or failed, before idempotency looks at it. */
@Injectable()
class DeliveryCounter implements NestInterceptor {
  constructor(private readonly runs: RunCounter) {}
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const name = `delivered:${context.getHandler().name}`;
    return next.handle().pipe(tap({ finalize: () => this.runs.hit(name) }));
  }
}

const byRequestId = (context: ExecutionContext) =>
  context.switchToRpc().getData<BookMessage>().requestId;
const byEventId = (context: ExecutionContext) =>
  context.switchToRpc().getData<BookingEvent>().eventId;

function controllers(prefix: string, bookingsTable: string) {
  @Controller()
  @UseInterceptors(DeliveryCounter)
  class BookingsHandler {
    constructor(
      private readonly runs: RunCounter,
      private readonly tx: IdempotencyTransaction,
    ) {}

    @MessagePattern(`${prefix}.book`)
    @Idempotent({ key: byRequestId })
    async book(@Payload() message: BookMessage) {
      this.runs.hit('book');
      if (message.delayMs) await sleep(message.delayMs);
      if (message.failOnce && this.runs.count('book') === 1) throw new Error('failed once');
      const booking = { id: randomUUID(), product: message.product, run: this.runs.count('book') };
      if (!message.parts) return booking;
      return from(Array.from({ length: message.parts }, (_, part) => ({ ...booking, part })));
    }

    /** The key in a message header: Nest 12 packet metadata on Redis and TCP. */
    @MessagePattern(`${prefix}.book-by-header`)
    @Idempotent({ required: true })
    bookByHeader(@Payload() message: BookMessage) {
      this.runs.hit('bookByHeader');
      return { id: randomUUID(), product: message.product };
    }

    /** MQTT only: a wildcard subscription, answering on the topic the message came in on. */
    @MessagePattern(`${prefix}.wild/+`, Transport.MQTT)
    @Idempotent({ key: byRequestId })
    bookWild(@Payload() message: BookMessage, @Ctx() context: MqttContext) {
      this.runs.hit('bookWild');
      return { id: randomUUID(), product: message.product, topic: context.getTopic() };
    }

    @MessagePattern(`${prefix}.book-in-transaction`)
    @Idempotent({ key: byRequestId, transactional: true })
    async bookInTransaction(@Payload() message: BookMessage) {
      this.runs.hit('bookInTransaction');
      const [row] = await this.tx.manager.query(
        `INSERT INTO "${bookingsTable}" (product) VALUES ($1) RETURNING id`,
        [message.product],
      );
      if (message.failOnce && this.runs.count('bookInTransaction') === 1) {
        throw new Error('failed after inserting');
      }
      return { id: String(row.id) };
    }

    @EventPattern<string>(`${prefix}.booking.created`)
    @Idempotent({ key: byEventId })
    async sendConfirmation(@Payload() event: BookingEvent) {
      this.runs.hit('sendConfirmation');
      if (event.delayMs) await sleep(event.delayMs);
      if (event.failOnce && this.runs.count('sendConfirmation') === 1) {
        throw new Error('mail server down');
      }
    }
  }

  /** A second consumer of the same event: it processes each event once too. */
  @Controller()
  @UseInterceptors(DeliveryCounter)
  class AnalyticsHandler {
    constructor(private readonly runs: RunCounter) {}

    @EventPattern<string>(`${prefix}.booking.created`)
    @Idempotent({ key: byEventId })
    recordBooking() {
      this.runs.hit('recordBooking');
    }
  }

  /** A third handler of the event, not idempotent, that can fail while the others run. */
  @Controller()
  class AuditHandler {
    @EventPattern<string>(`${prefix}.booking.created`)
    async audit(@Payload() event: BookingEvent) {
      if (event.auditFailsAfterMs === undefined) return;
      await sleep(event.auditFailsAfterMs);
      throw new Error('audit failed');
    }
  }

  return [BookingsHandler, AnalyticsHandler, AuditHandler];
}

export interface RpcTestApp {
  app: INestApplication;
  runs: RunCounter;
  prefix: string;
  tableName: string;
  bookingsTable: string;
  /** A client for the transport, connected. */
  client(transport: RpcTransportName, metadata?: Record<string, string>): Promise<ClientProxy>;
  close(): Promise<void>;
}

export async function createRpcApp(): Promise<RpcTestApp> {
  const prefix = `t${randomUUID().slice(0, 8)}`;
  const queue = `nest-idempotency-test-${prefix}`;
  const rmq = { urls: [RMQ_URL], queue, queueOptions: { durable: false } };
  const tableName = uniqueTableName('idem_rpc');
  const bookingsTable = `${tableName}_bookings`;
  await sql(`CREATE TABLE "${bookingsTable}" (id bigserial PRIMARY KEY, product text NOT NULL)`);
  const moduleRef = await Test.createTestingModule({
    imports: [testIdempotencyModule(tableName)],
    controllers: controllers(prefix, bookingsTable),
    providers: [RunCounter, DeliveryCounter],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  app.connectMicroservice({ transport: Transport.REDIS, options: REDIS });
  app.connectMicroservice({ transport: Transport.RMQ, options: rmq });
  app.connectMicroservice({ transport: Transport.NATS, options: NATS });
  app.connectMicroservice({
    transport: Transport.MQTT,
    options: { ...MQTT, clientId: `${prefix}-server` },
  });
  const tcp: INestMicroservice = app.connectMicroservice({
    transport: Transport.TCP,
    options: { host: '127.0.0.1', port: 0 },
  });
  await app.startAllMicroservices();
  await app.init();
  const tcpPort = (tcp.unwrap<Server>().address() as AddressInfo).port;
  const clients: ClientProxy[] = [];
  return {
    app,
    runs: app.get(RunCounter),
    prefix,
    tableName,
    bookingsTable,
    async client(transport, metadata) {
      // RabbitMQ and NATS carry message headers, MQTT 5 user properties (the client's
      // `userProperties` option goes on every message it publishes); Redis and TCP Nest 12's
      // packet metadata.
      const client = ClientProxyFactory.create(
        transport === 'mqtt'
          ? {
              transport: Transport.MQTT,
              options: {
                ...MQTT,
                clientId: `${prefix}-client-${clients.length}`,
                ...(metadata ? { userProperties: metadata } : {}),
              },
            }
          : transport === 'rmq'
            ? { transport: Transport.RMQ, options: { ...rmq, headers: metadata } }
            : transport === 'nats'
              ? { transport: Transport.NATS, options: { ...NATS, headers: metadata } }
              : transport === 'redis'
                ? { transport: Transport.REDIS, options: REDIS }
                : { transport: Transport.TCP, options: { host: '127.0.0.1', port: tcpPort } },
      );
      if (metadata && (transport === 'redis' || transport === 'tcp')) {
        client.setOnDispatchHook((packet) => (packet.metadata = { ...metadata }));
      }
      await client.connect();
      clients.push(client);
      return client;
    },
    async close() {
      await Promise.all(clients.map((client) => client.close()));
      await app.close();
      const connection = await amqp.connect(RMQ_URL);
      await (await connection.createChannel()).deleteQueue(queue);
      await connection.close();
      await sql(`DROP TABLE IF EXISTS "${bookingsTable}"`);
      await sql(`DROP TABLE IF EXISTS "${tableName}"`);
    },
  };
}
