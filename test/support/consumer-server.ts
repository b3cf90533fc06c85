// Child-process entry for the exactly-once consumer tests: a standalone microservice whose
// @EventPattern handler inserts a row through IdempotencyTransaction (transactional: true),
// on Redis, MQTT 5 (the machine's Mosquitto) or RabbitMQ (noAck: false, acknowledged by the
// module). Prints `READY 0`, then `INSERTED <eventId>` once its insert is done; with STALL_MS
// it then waits before returning, so the test can kill it between the insert and the commit.
import 'reflect-metadata';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { EventPattern, Payload, Transport, type MicroserviceOptions } from '@nestjs/microservices';
import { Idempotent, IdempotencyModule, IdempotencyTransaction } from '../../src/index.js';

const { TRANSPORT, PATTERN, QUEUE, BOOKINGS_TABLE, IDEM_TABLE } = process.env;
const LEASE_MS = Number(process.env.LEASE_MS ?? 2_000);
const STALL_MS = Number(process.env.STALL_MS ?? 0);

@Controller()
class BookingsConsumer {
  constructor(private readonly tx: IdempotencyTransaction) {}

  @EventPattern<string>(PATTERN!)
  @Idempotent({
    key: (context) => context.switchToRpc().getData().eventId,
    transactional: true,
    leaseMs: LEASE_MS,
    acknowledge: TRANSPORT === 'rmq',
  })
  async handle(@Payload() event: { eventId: string }) {
    await this.tx.manager.query(`INSERT INTO "${BOOKINGS_TABLE}" (event_id, pid) VALUES ($1, $2)`, [
      event.eventId,
      process.pid,
    ]);
    process.stdout.write(`INSERTED ${event.eventId}\n`);
    if (STALL_MS) await new Promise((resolve) => setTimeout(resolve, STALL_MS));
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      connection: process.env.DATABASE_URL,
      tableName: IDEM_TABLE,
      retryAfterSeconds: 1,
      purge: { enabled: false },
    }),
  ],
  controllers: [BookingsConsumer],
})
class ConsumerModule {}

const options: MicroserviceOptions =
  TRANSPORT === 'rmq'
    ? {
        transport: Transport.RMQ,
        options: {
          urls: [process.env.RMQ_URL!],
          queue: QUEUE,
          queueOptions: { durable: false },
          noAck: false,
        },
      }
    : TRANSPORT === 'mqtt'
      ? { transport: Transport.MQTT, options: { url: process.env.MQTT_URL!, protocolVersion: 5 } }
      : { transport: Transport.REDIS, options: { host: '127.0.0.1', port: 6379 } };

const app = await NestFactory.createMicroservice(ConsumerModule, {
  ...options,
  logger: ['error', 'warn'],
});
await app.listen();
process.stdout.write('READY 0\n');
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
// The test runner holds our stdin: when it goes away (even killed), so do we.
process.stdin.on('end', () => process.exit(1));
process.stdin.on('error', () => process.exit(1));
process.stdin.resume();
