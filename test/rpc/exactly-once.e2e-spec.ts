// Issue 12, the transactional inbox: a consumer (a real standalone microservice process) is
// SIGKILLed after its insert and before its commit; the event is delivered again (by
// RabbitMQ itself, or re-published to Redis or MQTT as a producer's retry would) and another
// consumer process processes it; in the end there is exactly one row.
import { Logger } from '@nestjs/common';
import { ClientProxyFactory, Transport, type ClientProxy } from '@nestjs/microservices';
import amqp from 'amqplib';
import { randomUUID } from 'node:crypto';
import { firstValueFrom } from 'rxjs';
import { idempotencyRecordsDdl } from '../../src/index.js';
import { Db, startAppProcess, stopAll, waitFor, type AppProcess } from '../support/processes.js';
import { dropTable, uniqueTableName } from '../support/test-app.js';

const RMQ_URL = 'amqp://guest:guest@127.0.0.1:5672';
const MQTT_URL = 'mqtt://127.0.0.1:1883';
const LEASE_MS = 2_000;
const db = new Db();
// The test's own clients log their connections; the consumers' output is captured.
Logger.overrideLogger(['error']);

afterAll(async () => {
  await stopAll();
  await db.end();
}, 30_000);

describe.each(['rmq', 'redis', 'mqtt'] as const)('exactly once on %s', (transport) => {
  const idemTable = uniqueTableName('idem_inbox');
  const bookingsTable = `${idemTable}_bookings`;
  const pattern = `inbox.${randomUUID().slice(0, 8)}.booking.created`;
  const queue = `nest-idempotency-test-${randomUUID()}`;
  let client: ClientProxy;
  const consumers: AppProcess[] = [];

  const startConsumer = async (env: Record<string, string> = {}) => {
    const consumer = await startAppProcess({
      entry: 'test/support/consumer-server.ts',
      idemTable,
      runsTable: bookingsTable,
      env: {
        TRANSPORT: transport,
        PATTERN: pattern,
        QUEUE: queue,
        RMQ_URL,
        MQTT_URL,
        BOOKINGS_TABLE: bookingsTable,
        LEASE_MS: String(LEASE_MS),
        ...env,
      },
    });
    consumers.push(consumer);
    return consumer;
  };
  const rows = async (eventId: string) =>
    (
      await db.query<{ pid: number }>(`SELECT pid FROM "${bookingsTable}" WHERE event_id = $1`, [
        eventId,
      ])
    ).rows;
  const recordState = async (eventId: string) =>
    (
      await db.query<{ state: string }>(
        `SELECT state FROM "${idemTable}" WHERE idempotency_key = $1`,
        [eventId],
      )
    ).rows[0]?.state;

  beforeAll(async () => {
    for (const statement of idempotencyRecordsDdl(idemTable).up) await db.query(statement);
    await db.query(
      `CREATE TABLE "${bookingsTable}" (event_id text NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    );
    client = ClientProxyFactory.create(
      transport === 'rmq'
        ? {
            transport: Transport.RMQ,
            options: { urls: [RMQ_URL], queue, queueOptions: { durable: false } },
          }
        : transport === 'mqtt'
          ? { transport: Transport.MQTT, options: { url: MQTT_URL, protocolVersion: 5 } }
          : { transport: Transport.REDIS, options: { host: '127.0.0.1', port: 6379 } },
    );
    await client.connect();
  }, 30_000);

  afterAll(async () => {
    await Promise.all(consumers.map((consumer) => consumer.stop()));
    await client?.close();
    await dropTable(idemTable);
    await db.dropTables(bookingsTable);
    if (transport === 'rmq') {
      const connection = await amqp.connect(RMQ_URL);
      const channel = await connection.createChannel();
      await channel.deleteQueue(queue);
      await connection.close();
    }
  }, 30_000);

  // Generous: two consumer processes start one after the other, slowly on a loaded machine.
  it('a consumer killed between its insert and its commit: the redelivered event makes exactly one row', async () => {
    const event = { eventId: randomUUID(), bookingId: 'b-1' };
    const emit = () => firstValueFrom(client.emit(pattern, event), { defaultValue: undefined });

    // A inserts, then stalls before its transaction can commit; it dies there.
    const a = await startConsumer({ STALL_MS: '60000' });
    await emit();
    await waitFor('A to insert', () => a.output().includes(`INSERTED ${event.eventId}`), 15_000);
    const b = await startConsumer();
    await a.kill9();
    // Postgres rolled A's transaction back with its connection: its row is gone.
    await waitFor('A’s insert to roll back', async () => (await rows(event.eventId)).length === 0);

    if (transport !== 'rmq') {
      // Redis pub/sub does not redeliver, nor does MQTT at QoS 0 (Nest's default; QoS 1
      // redelivers only to a persistent session of the same client id, which a second
      // consumer process does not have): the producer retries until the event is processed.
      await waitFor(
        'a retry to be processed',
        async () => {
          if ((await recordState(event.eventId)) === 'completed') return true;
          await emit();
          await new Promise((resolve) => setTimeout(resolve, 500));
          return false;
        },
        LEASE_MS + 15_000,
      );
    } else {
      // RabbitMQ redelivers the unacknowledged message to B by itself; B requeues it while
      // A's lease holds, then takes the key over.
      await waitFor(
        'B to process the redelivery',
        async () => (await recordState(event.eventId)) === 'completed',
        LEASE_MS + 15_000,
      );
    }

    expect(await rows(event.eventId)).toEqual([{ pid: b.pid }]);
    // More deliveries of the same event change nothing.
    await emit();
    await emit();
    await waitFor('B to see the repeats', () =>
      transport === 'rmq' ? queueIsEmpty(queue) : Promise.resolve(true),
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await rows(event.eventId)).toEqual([{ pid: b.pid }]);
    expect(b.output()).toContain(`INSERTED ${event.eventId}`);
    expect(b.output().match(/INSERTED/g)).toHaveLength(1);
  }, 150_000);
});

/** No message waiting in the queue, none unacknowledged (RabbitMQ's management-free check). */
async function queueIsEmpty(queue: string): Promise<boolean> {
  const connection = await amqp.connect(RMQ_URL);
  try {
    const channel = await connection.createChannel();
    const { messageCount } = await channel.checkQueue(queue);
    return messageCount === 0;
  } finally {
    await connection.close();
  }
}
