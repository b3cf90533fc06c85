// `acknowledge: true` on RabbitMQ (noAck: false): the module is the only one that settles the
// message, so every message an acknowledging handler receives must be settled exactly once,
// whatever path it takes through the module. Messages are published with amqplib, as any
// producer would; prefetchCount 1 makes a message left unsettled visible (nothing after it
// is delivered).
import { Controller, Logger, Module, type INestMicroservice } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  Ctx,
  EventPattern,
  Payload,
  RmqContext,
  Transport,
  type MicroserviceOptions,
} from '@nestjs/microservices';
import amqp from 'amqplib';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { sql } from '../support/graphql-app.js';
import { testIdempotencyModule } from '../support/nest-app.js';
import { RMQ_URL } from '../support/rpc-app.js';
import { RunCounter, sleep, uniqueTableName } from '../support/test-app.js';

Logger.overrideLogger(['error']);

const prefix = `ack.${randomUUID().slice(0, 8)}`;
const OPTIONAL = `${prefix}.optional`;
const RESOLVER_THROWS = `${prefix}.resolver-throws`;
const TWO_CONSUMERS = `${prefix}.two-consumers`;
const ONE_FAILS = `${prefix}.one-fails`;

/** What happened to the consumer's channel (a channel error closes it). */
const channelEvents: unknown[] = [];
const watched = new WeakSet<object>();

interface Message {
  id: string;
  eventId?: string;
}

@Controller()
class Consumers {
  constructor(private readonly runs: RunCounter) {}

  /** The key is optional: a message without one runs as if the module were absent. */
  @EventPattern<string>(OPTIONAL)
  @Idempotent({ acknowledge: true, retryAfterSeconds: 1 })
  optional(@Payload() message: Message) {
    this.runs.hit(`optional:${message.id}`);
  }

  /** A key resolver that fails on a message it does not expect (no `eventId`). */
  @EventPattern<string>(RESOLVER_THROWS)
  @Idempotent({
    acknowledge: true,
    retryAfterSeconds: 1,
    key: (context) => context.switchToRpc().getData<Message>().eventId!.toUpperCase(),
  })
  resolverThrows(@Payload() message: Message) {
    this.runs.hit(`resolver:${message.id}`);
  }
}

/** Two consumers of one event, as the README's "Scope" paragraph describes. */
@Controller()
class ConfirmationSender {
  constructor(private readonly runs: RunCounter) {}

  @EventPattern<string>(TWO_CONSUMERS)
  @Idempotent({ acknowledge: true, retryAfterSeconds: 1 })
  send(@Payload() message: Message, @Ctx() context: RmqContext) {
    const channel = context.getChannelRef();
    if (!watched.has(channel)) {
      watched.add(channel);
      channel.on('close', () => channelEvents.push('close'));
      channel.on('error', (error: Error) => channelEvents.push(error.message));
    }
    this.runs.hit(`send:${message.id}`);
  }
}

/** Two consumers of one event, the second failing on its first delivery. */
@Controller()
class FlakyPair {
  constructor(private readonly runs: RunCounter) {}

  @EventPattern<string>(ONE_FAILS)
  @Idempotent({ acknowledge: true, retryAfterSeconds: 1 })
  steady(@Payload() message: Message) {
    this.runs.hit(`steady:${message.id}`);
  }
}

@Controller()
class FlakyOther {
  constructor(private readonly runs: RunCounter) {}

  @EventPattern<string>(ONE_FAILS)
  @Idempotent({ acknowledge: true, retryAfterSeconds: 1 })
  async flaky(@Payload() message: Message) {
    this.runs.hit(`flaky:${message.id}`);
    await sleep(100);
    if (this.runs.count(`flaky:${message.id}`) === 1) throw new Error('failed once');
  }
}

@Controller()
class AnalyticsRecorder {
  constructor(private readonly runs: RunCounter) {}

  @EventPattern<string>(TWO_CONSUMERS)
  @Idempotent({ acknowledge: true, retryAfterSeconds: 1 })
  record(@Payload() message: Message) {
    this.runs.hit(`record:${message.id}`);
  }
}

describe('acknowledge: true on RabbitMQ', () => {
  const tableName = uniqueTableName('idem_ack');
  const queue = `nest-idempotency-ack-${randomUUID()}`;
  let app: INestMicroservice;
  let runs: RunCounter;
  let connection: amqp.ChannelModel;
  let channel: amqp.Channel;

  const publish = (pattern: string, data: Message, key?: string) =>
    channel.sendToQueue(queue, Buffer.from(JSON.stringify({ pattern, data })), {
      headers: key ? { 'x-idempotency-key': key } : {},
    });
  const until = async (check: () => boolean, ms = 5_000) => {
    const deadline = Date.now() + ms;
    while (!check() && Date.now() < deadline) await sleep(25);
    return check();
  };

  beforeAll(async () => {
    @Module({
      imports: [testIdempotencyModule(tableName)],
      controllers: [Consumers, ConfirmationSender, AnalyticsRecorder, FlakyPair, FlakyOther],
      providers: [RunCounter],
    })
    class ConsumerModule {}
    app = await NestFactory.createMicroservice<MicroserviceOptions>(ConsumerModule, {
      transport: Transport.RMQ,
      options: {
        urls: [RMQ_URL],
        queue,
        queueOptions: { durable: false },
        noAck: false,
        prefetchCount: 1,
      },
      logger: ['error'],
    });
    await app.listen();
    runs = app.get(RunCounter);
    connection = await amqp.connect(RMQ_URL);
    channel = await connection.createChannel();
  }, 30_000);

  afterAll(async () => {
    await channel?.deleteQueue(queue).catch(() => undefined);
    await connection?.close();
    await app?.close();
    await sql(`DROP TABLE IF EXISTS "${tableName}"`);
  });

  it('a message without a key (key not required) runs, and is acknowledged: the next message is delivered', async () => {
    const first = randomUUID();
    const second = randomUUID();
    publish(OPTIONAL, { id: first });
    publish(OPTIONAL, { id: second }, randomUUID());
    expect(await until(() => runs.count(`optional:${first}`) === 1)).toBe(true);
    // With prefetch 1, the second is only delivered once the first is settled.
    expect(await until(() => runs.count(`optional:${second}`) === 1)).toBe(true);
  }, 20_000);

  it('a key resolver that throws rejects the message: it does not block the queue', async () => {
    const bad = randomUUID();
    const good = randomUUID();
    publish(RESOLVER_THROWS, { id: bad });
    publish(OPTIONAL, { id: good }, randomUUID());
    expect(await until(() => runs.count(`optional:${good}`) === 1)).toBe(true);
    expect(runs.count(`resolver:${bad}`)).toBe(0);
  }, 20_000);

  it('two acknowledging consumers of one event: each runs once, the message is settled once', async () => {
    const id = randomUUID();
    const key = randomUUID();
    publish(TWO_CONSUMERS, { id }, key);
    expect(
      await until(() => runs.count(`send:${id}`) === 1 && runs.count(`record:${id}`) === 1),
    ).toBe(true);
    // A message acknowledged twice is a channel error: the broker closes the channel and
    // redelivers what it had not settled.
    const after = randomUUID();
    publish(OPTIONAL, { id: after }, randomUUID());
    expect(await until(() => runs.count(`optional:${after}`) === 1)).toBe(true);
    await sleep(500);
    expect(channelEvents).toEqual([]);
    expect(runs.count(`send:${id}`)).toBe(1);
    expect(runs.count(`record:${id}`)).toBe(1);
  }, 20_000);

  it('two acknowledging consumers, one failing: the message comes back, only the failed one runs again', async () => {
    const id = randomUUID();
    publish(ONE_FAILS, { id }, randomUUID());
    expect(await until(() => runs.count(`flaky:${id}`) === 2, 10_000)).toBe(true);
    const after = randomUUID();
    publish(OPTIONAL, { id: after }, randomUUID());
    expect(await until(() => runs.count(`optional:${after}`) === 1)).toBe(true);
    expect(runs.count(`steady:${id}`)).toBe(1);
    expect(runs.count(`flaky:${id}`)).toBe(2);
  }, 20_000);
});
