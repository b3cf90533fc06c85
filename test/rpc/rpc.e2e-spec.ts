// Issue 12, message handlers: @MessagePattern and @EventPattern on Nest's Redis transport
// (the machine's Redis), its TCP transport, RabbitMQ, NATS and MQTT 5 (the machine's servers),
// in a hybrid app. A repeat message gets the stored reply; a repeat event is acknowledged
// without running the handler; in flight, reuse and bad keys are RpcExceptions carrying the
// `code`; a failing handler frees its key.
import { MqttRecordBuilder, type ClientProxy } from '@nestjs/microservices';
import { randomUUID } from 'node:crypto';
import { firstValueFrom, toArray } from 'rxjs';
import { idempotencyKeyHash } from '../../src/index.js';
import { EventLog } from '../support/events.js';
import { sql } from '../support/graphql-app.js';
import { waitFor } from '../support/processes.js';
import {
  createRpcApp,
  RPC_TRANSPORTS,
  type BookingEvent,
  type BookMessage,
  type RpcTestApp,
} from '../support/rpc-app.js';
import { waitForRecord } from '../support/test-app.js';

let t: RpcTestApp;
beforeAll(async () => {
  t = await createRpcApp();
}, 30_000);
afterAll(async () => {
  await t?.close();
});
beforeEach(() => t.runs.reset());

/** The error a client's send() fails with. */
async function rpcError(reply: Promise<unknown>): Promise<Record<string, unknown>> {
  const outcome = await reply.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  expect(outcome).toHaveProperty('error');
  return (outcome as { error: Record<string, unknown> }).error;
}

describe.each(RPC_TRANSPORTS)('@MessagePattern over %s', (transport) => {
  let client: ClientProxy;
  const book = (message: BookMessage, pattern = 'book') =>
    firstValueFrom(client.send(`${t.prefix}.${pattern}`, message));

  beforeAll(async () => {
    client = await t.client(transport);
  });

  it('runs a new key once; a repeat gets the stored reply', async () => {
    const requestId = randomUUID();
    const first = await book({ requestId, product: 'kibble' });
    expect(first).toMatchObject({ product: 'kibble', run: 1 });
    expect(await book({ requestId, product: 'kibble' })).toEqual(first);
    expect(t.runs.count('book')).toBe(1);
    const [record] = await sql(
      `SELECT scope, state, response_body FROM "${t.tableName}" WHERE idempotency_key = $1`,
      [requestId],
    );
    expect(record.scope).toBe('rpc:BookingsHandler.book|');
    expect(JSON.parse(record.response_body.toString())).toEqual([first]);
  });

  it('reports the claim, completion and replay as events of the rpc context', async () => {
    const log = new EventLog();
    try {
      const requestId = randomUUID();
      const scope = 'rpc:BookingsHandler.book|';
      const hash = idempotencyKeyHash(scope, requestId);
      const first = await book({ requestId, product: 'events' });
      expect(await book({ requestId, product: 'events' })).toEqual(first);
      expect(t.runs.count('book')).toBe(1);
      expect(log.typesFor(hash)).toEqual(['claimed', 'completed', 'replayed']);
      const call = { context: 'rpc', handler: 'BookingsHandler.book', scope, keyHash: hash };
      expect(log.of('claimed', hash)[0]).toEqual({
        type: 'claimed',
        ...call,
        claimMs: expect.any(Number),
        waitedMs: 0,
      });
      expect(log.of('completed', hash)[0]).toMatchObject({ ...call, status: 200 });
      expect(log.of('replayed', hash)[0]).toMatchObject({ ...call, status: 200 });
      expect(JSON.stringify(log.events)).not.toContain(requestId);
    } finally {
      log.close();
    }
  });

  it('a streamed reply is stored whole and replayed value by value', async () => {
    const requestId = randomUUID();
    const send = () =>
      firstValueFrom(
        client.send(`${t.prefix}.book`, { requestId, product: 'p', parts: 3 }).pipe(toArray()),
      );
    const first = await send();
    expect(first.map((value: any) => value.part)).toEqual([0, 1, 2]);
    expect(await send()).toEqual(first);
    expect(t.runs.count('book')).toBe(1);
  });

  it('a duplicate while the first runs fails with an RpcException idempotency_request_in_flight and a retry hint', async () => {
    const requestId = randomUUID();
    const slow = book({ requestId, product: 'slow', delayMs: 1_500 });
    await waitForRecord(t.tableName, requestId, 'in_progress');
    const error = await rpcError(book({ requestId, product: 'slow', delayMs: 1_500 }));
    expect(error).toMatchObject({
      status: 'error',
      code: 'idempotency_request_in_flight',
      retryAfterSeconds: 1,
      message: expect.any(String),
    });
    expect(await slow).toMatchObject({ product: 'slow', run: 1 });
    expect(t.runs.count('book')).toBe(1);
  });

  it('the same key with another message fails with idempotency_key_reused', async () => {
    const requestId = randomUUID();
    await book({ requestId, product: 'a' });
    expect(await rpcError(book({ requestId, product: 'b' }))).toMatchObject({
      code: 'idempotency_key_reused',
    });
    expect(t.runs.count('book')).toBe(1);
  });

  it('a handler that throws frees the key: the retry runs again', async () => {
    const requestId = randomUUID();
    expect(await rpcError(book({ requestId, product: 'f', failOnce: true }))).toMatchObject({
      status: 'error',
    });
    expect(await book({ requestId, product: 'f', failOnce: true })).toMatchObject({ run: 2 });
    expect(t.runs.count('book')).toBe(2);
  });

  it('a malformed key is refused before the handler runs', async () => {
    const error = await rpcError(book({ requestId: 'k'.repeat(256), product: 'x' }));
    expect(error).toMatchObject({ code: 'idempotency_key_invalid' });
    expect(String(error.message)).toMatch(/255/);
    expect(t.runs.count('book')).toBe(0);
  });

  it('the key in a message header (RabbitMQ and NATS headers; MQTT 5 user properties; Nest 12 packet metadata on Redis and TCP); required: a message without one is refused', async () => {
    const key = randomUUID();
    const withHeader = await t.client(transport, { 'X-Idempotency-Key': key });
    const send = (c: ClientProxy) =>
      firstValueFrom(c.send(`${t.prefix}.book-by-header`, { product: 'h' }));
    const first = await send(withHeader);
    expect(await send(withHeader)).toEqual(first);
    expect(await rpcError(send(client))).toMatchObject({ code: 'idempotency_key_missing' });
    expect(t.runs.count('bookByHeader')).toBe(1);
  });

  it('transactional: the handler’s insert commits with the record, or rolls back with a failure', async () => {
    const requestId = randomUUID();
    const product = `tx-${transport}`;
    const count = async () =>
      (
        await sql(`SELECT count(*)::int AS n FROM "${t.bookingsTable}" WHERE product = $1`, [
          product,
        ])
      )[0].n;
    await rpcError(book({ requestId, product, failOnce: true }, 'book-in-transaction'));
    expect(await count()).toBe(0);
    const first = await book({ requestId, product, failOnce: true }, 'book-in-transaction');
    expect(await book({ requestId, product, failOnce: true }, 'book-in-transaction')).toEqual(
      first,
    );
    expect(await count()).toBe(1);
    expect(t.runs.count('bookInTransaction')).toBe(2);
  });
});

describe.each(RPC_TRANSPORTS)('@EventPattern over %s', (transport) => {
  let client: ClientProxy;
  const emit = (event: BookingEvent) =>
    firstValueFrom(client.emit(`${t.prefix}.booking.created`, event), { defaultValue: undefined });
  /** Waits until both consumers have completed the event (their records are stored). */
  const completed = (eventId: string) =>
    waitFor(`both consumers to complete ${eventId}`, async () => {
      const rows = await sql(
        `SELECT 1 FROM "${t.tableName}" WHERE idempotency_key = $1 AND state = 'completed'`,
        [eventId],
      );
      return rows.length === 2;
    });
  /**
   * Waits until both consumers have seen `n` deliveries each. Nest cancels a pattern's other
   * handlers when one fails, so a delivery may count before its handler settled: tests wait
   * for the records too.
   */
  const delivered = (n: number) =>
    waitFor(
      `${n} deliveries to each consumer`,
      () =>
        t.runs.count('delivered:sendConfirmation') >= n &&
        t.runs.count('delivered:recordBooking') >= n,
    );

  beforeAll(async () => {
    client = await t.client(transport);
  });

  it('a redelivered event is acknowledged without running either consumer again', async () => {
    const event = { eventId: randomUUID(), bookingId: 'b1' };
    await emit(event);
    await delivered(1);
    await emit(event);
    await emit(event);
    await delivered(3);
    await completed(event.eventId);
    // Each consumer has its own namespace: both processed the event, once each.
    expect(t.runs.count('sendConfirmation')).toBe(1);
    expect(t.runs.count('recordBooking')).toBe(1);
    const scopes = await sql(
      `SELECT scope FROM "${t.tableName}" WHERE idempotency_key = $1 ORDER BY scope`,
      [event.eventId],
    );
    expect(scopes.map((row) => row.scope)).toEqual([
      'rpc:AnalyticsHandler.recordBooking|',
      'rpc:BookingsHandler.sendConfirmation|',
    ]);
  });

  it('a consumer that throws frees its key: the redelivered event runs it again, the other consumer not', async () => {
    const event = { eventId: randomUUID(), bookingId: 'b2', failOnce: true };
    await emit(event);
    await delivered(1);
    expect(t.runs.count('sendConfirmation')).toBe(1);
    const [record] = await sql(
      `SELECT 1 FROM "${t.tableName}" WHERE idempotency_key = $1 AND scope LIKE 'rpc:BookingsHandler%'`,
      [event.eventId],
    );
    expect(record).toBeUndefined();
    await emit(event);
    await delivered(2);
    await completed(event.eventId);
    expect(t.runs.count('sendConfirmation')).toBe(2);
    expect(t.runs.count('recordBooking')).toBe(1);
  });

  it('an event redelivered while the first delivery still runs does not run the handler', async () => {
    const event = { eventId: randomUUID(), bookingId: 'b3', delayMs: 1_000 };
    await emit(event);
    await waitForRecord(t.tableName, event.eventId, 'in_progress');
    await emit(event);
    await delivered(2);
    await completed(event.eventId);
    expect(t.runs.count('sendConfirmation')).toBe(1);
  });

  it('another handler of the event failing mid-run does not cancel an idempotent one: it settles', async () => {
    // Nest runs a pattern's handlers together and unsubscribes the others when one fails.
    const event = { eventId: randomUUID(), bookingId: 'b4', delayMs: 800, auditFailsAfterMs: 200 };
    await emit(event);
    await waitFor('the slow handler to run', () => t.runs.count('sendConfirmation') === 1);
    await completed(event.eventId);
    await emit({ ...event, auditFailsAfterMs: undefined });
    await delivered(2);
    expect(t.runs.count('sendConfirmation')).toBe(1);
    expect(t.runs.count('recordBooking')).toBe(1);
  });
});

describe('MQTT 5 specifics', () => {
  let client: ClientProxy;
  beforeAll(async () => {
    client = await t.client('mqtt');
  });

  it('the key as a user property of one message (MqttRecordBuilder), matched case-insensitively', async () => {
    const key = randomUUID();
    const send = () =>
      firstValueFrom(
        client.send(
          `${t.prefix}.book-by-header`,
          new MqttRecordBuilder({ product: 'record' })
            .setProperties({ userProperties: { 'X-IDEMPOTENCY-KEY': key } })
            .build(),
        ),
      );
    const first = await send();
    expect(first).toMatchObject({ product: 'record' });
    expect(await send()).toEqual(first);
    expect(t.runs.count('bookByHeader')).toBe(1);
    const [record] = await sql(`SELECT state FROM "${t.tableName}" WHERE idempotency_key = $1`, [
      key,
    ]);
    expect(record.state).toBe('completed');
  });

  it('a key repeated as a user property (an array) is refused as invalid; nothing crashes', async () => {
    const send = () =>
      firstValueFrom(
        client.send(
          `${t.prefix}.book-by-header`,
          new MqttRecordBuilder({ product: 'twice' })
            .setProperties({ userProperties: { 'x-idempotency-key': ['k1', 'k2'] } })
            .build(),
        ),
      );
    expect(await rpcError(send())).toMatchObject({
      status: 'error',
      code: 'idempotency_key_invalid',
    });
    expect(t.runs.count('bookByHeader')).toBe(0);
    // The app still answers.
    const key = randomUUID();
    const withHeader = await t.client('mqtt', { 'x-idempotency-key': key });
    expect(
      await firstValueFrom(withHeader.send(`${t.prefix}.book-by-header`, { product: 'after' })),
    ).toMatchObject({ product: 'after' });
  });

  it('a wildcard subscription: the fingerprint has the topic the message came in on, so the same key on another topic is reused', async () => {
    const requestId = randomUUID();
    const send = (topic: string) =>
      firstValueFrom(client.send(`${t.prefix}.wild/${topic}`, { requestId, product: 'w' }));
    const first = await send('a');
    expect(first).toMatchObject({ product: 'w', topic: `${t.prefix}.wild/a` });
    expect(await send('a')).toEqual(first);
    expect(await rpcError(send('b'))).toMatchObject({ code: 'idempotency_key_reused' });
    expect(t.runs.count('bookWild')).toBe(1);
  });
});
