// Issue 13, "see what it does": every outcome is published on its diagnostics channel (and on
// IdempotencyEvents.events$) with the scope, the key's hash (never the key), the handler and
// its durations, and logged as one debug line; operator problems are logged as warnings or
// errors. Under Express and Fastify, on the real Postgres.
import { Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import {
  IdempotencyEvents,
  IdempotencyPurger,
  idempotencyKeyHash,
  type IdempotencyEvent,
} from '../../src/index.js';
import { EventLog, LinesLogger } from '../support/events.js';
import { send } from '../support/http.js';
import { expectProblem, expectReplayOf, expectRetryable } from '../support/problem.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { ADAPTERS, createTestApp, sleep, type TestApp } from '../support/test-app.js';

const BOOKINGS = '/x/partners/p1/bookings';
const USER = 'u1';
const SCOPE = `user:${USER}`;

describe.each(ADAPTERS)('events and logs under %s', (adapter) => {
  let t: TestApp;
  let log: EventLog;
  let logger: LinesLogger;
  const keys: string[] = [];
  const newKey = () => {
    const key = `secret-${randomUUID()}`;
    keys.push(key);
    return key;
  };
  const post = (path: string, key: string | undefined, body: object = { product: 'p' }) =>
    send(t.url, path, {
      headers:
        key === undefined
          ? [['x-user', USER]]
          : [
              ['x-idempotency-key', key],
              ['x-user', USER],
            ],
      body,
    });

  beforeAll(async () => {
    logger = new LinesLogger();
    t = await createTestApp(adapter, { purge: { enabled: false }, logger });
    log = new EventLog();
  }, 30_000);
  afterAll(async () => {
    log?.close();
    await t?.close();
  });
  beforeEach(() => t.runs.reset());

  it('a new key is claimed, then completed; its retry is replayed', async () => {
    const key = newKey();
    const hash = idempotencyKeyHash(SCOPE, key);
    const first = await post(BOOKINGS, key);
    expect(first.status).toBe(201);
    const [completed] = await log.wait('completed', hash);
    const retry = await post(BOOKINGS, key);
    expectReplayOf(retry, first);
    expect(t.runs.count('book')).toBe(1);

    const call = {
      context: 'http',
      handler: 'BookingsController.book',
      scope: SCOPE,
      keyHash: hash,
    };
    expect(log.typesFor(hash)).toEqual(['claimed', 'completed', 'replayed']);
    expect(log.of('claimed', hash)[0]).toEqual({
      type: 'claimed',
      ...call,
      claimMs: expect.any(Number),
      waitedMs: 0,
    });
    expect(completed).toEqual({
      type: 'completed',
      ...call,
      status: 201,
      handlerMs: expect.any(Number),
      storeMs: expect.any(Number),
    });
    expect(completed.storeMs).toBeGreaterThan(0);
    expect(log.of('replayed', hash)[0]).toEqual({
      type: 'replayed',
      ...call,
      status: 201,
      claimMs: expect.any(Number),
      waitedMs: 0,
    });
  });

  it('a duplicate in flight is reported as in-flight (423), a reused key as a mismatch (422)', async () => {
    const key = newKey();
    const hash = idempotencyKeyHash(SCOPE, key);
    const first = post(BOOKINGS, key, { product: 'p', delayMs: 500 });
    await log.wait('claimed', hash);
    expectRetryable(
      await post(BOOKINGS, key, { product: 'p', delayMs: 500 }),
      423,
      'idempotency_request_in_flight',
    );
    expect((await first).status).toBe(201);
    expectProblem(await post(BOOKINGS, key, { product: 'other' }), 422, 'idempotency_key_reused');
    await log.wait('mismatch', hash);
    expect(t.runs.count('book')).toBe(1);

    expect(log.typesFor(hash)).toEqual(['claimed', 'in-flight', 'completed', 'mismatch']);
    expect(log.of('in-flight', hash)[0]).toMatchObject({
      handler: 'BookingsController.book',
      scope: SCOPE,
      retryAfterSeconds: 1,
      claimMs: expect.any(Number),
      waitedMs: 0,
    });
    expect(log.of('mismatch', hash)[0]).toMatchObject({
      handler: 'BookingsController.book',
      claimMs: expect.any(Number),
    });
  });

  it('a missing or invalid key is reported as rejected, with its code and no key', async () => {
    log.clear();
    expectProblem(await post('/required', undefined), 400, 'idempotency_key_missing');
    expectProblem(await post('/required', 'x'.repeat(256)), 400, 'idempotency_key_invalid');
    expect(t.runs.count('required')).toBe(0);
    expect(log.of('rejected')).toEqual([
      {
        type: 'rejected',
        context: 'http',
        handler: 'BookingsController.required',
        code: 'idempotency_key_missing',
        status: 400,
      },
      {
        type: 'rejected',
        context: 'http',
        handler: 'BookingsController.required',
        code: 'idempotency_key_invalid',
        status: 400,
      },
    ]);
  });

  it('a failed handler releases its key; a streamed response holds it', async () => {
    const failing = newKey();
    const failingHash = idempotencyKeyHash(SCOPE, failing);
    expect((await post('/fails-once', failing)).status).toBe(500);
    const [released] = await log.wait('released', failingHash);
    expect(released).toEqual({
      type: 'released',
      context: 'http',
      handler: 'BookingsController.failsOnce',
      scope: SCOPE,
      keyHash: failingHash,
      handlerMs: expect.any(Number),
      storeMs: expect.any(Number),
    });
    expect((await post('/fails-once', failing)).status).toBe(201);
    expect(t.runs.count('fails-once')).toBe(2);

    const streamed = newKey();
    const streamedHash = idempotencyKeyHash(SCOPE, streamed);
    expectProblem(await post('/stream', streamed), 500, 'idempotency_unsupported_response');
    const [held] = await log.wait('held', streamedHash);
    expect(held).toMatchObject({
      handler: 'BookingsController.stream',
      reason: expect.any(String),
      handlerMs: expect.any(Number),
    });
    expect(logger.at('warn').some((line) => line.includes(streamedHash))).toBe(true);
  });

  it('a @Res() route tells the client nothing internal; the log names the route', async () => {
    log.clear();
    const res = await post('/writes-itself', newKey());
    expectProblem(res, 500, 'idempotency_unsupported_response');
    expect(res.text).not.toMatch(/BookingsController|writesItself/);
    expect(t.runs.count('writes-itself')).toBe(0);
    expect(log.of('rejected')).toMatchObject([
      {
        handler: 'BookingsController.writesItself',
        code: 'idempotency_unsupported_response',
        status: 500,
      },
    ]);
    expect(
      logger.at('error').filter((line) => line.includes('BookingsController.writesItself')),
    ).toHaveLength(1);
    // Logged once per route, not once per request.
    expectProblem(await post('/writes-itself', newKey()), 500, 'idempotency_unsupported_response');
    expect(
      logger.at('error').filter((line) => line.includes('BookingsController.writesItself')),
    ).toHaveLength(1);
  });

  it('renewLease reports each renewal', async () => {
    const key = newKey();
    const hash = idempotencyKeyHash(SCOPE, key);
    // leaseMs 600, renewed every 200 ms while the handler runs 2 s.
    expect((await post('/renewed-lease', key)).status).toBe(201);
    await log.wait('completed', hash);
    const renewals = log.of('lease-renewed', hash);
    expect(renewals.length).toBeGreaterThanOrEqual(3);
    expect(renewals[0]).toEqual({
      type: 'lease-renewed',
      context: 'http',
      handler: 'BookingsController.renewedLease',
      scope: SCOPE,
      keyHash: hash,
      storeMs: expect.any(Number),
    });
    expect(log.of('lease-lost', hash)).toEqual([]);
  });

  it('a purge sweep reports its batches', async () => {
    log.clear();
    expect((await post('/short-retention', newKey())).status).toBe(201);
    await sleep(1_100); // retentionMs: 1_000
    await t.app.get(IdempotencyPurger).runOnce();
    const batches = log.of('purge-batch');
    expect(batches.length).toBeGreaterThanOrEqual(1);
    expect(batches[0]).toEqual({
      type: 'purge-batch',
      deleted: expect.any(Number),
      storeMs: expect.any(Number),
    });
    expect(batches.reduce((sum, batch) => sum + batch.deleted, 0)).toBeGreaterThanOrEqual(1);
  });

  it('IdempotencyEvents.events$ carries the same events to Nest code', async () => {
    const seen: IdempotencyEvent[] = [];
    const subscription = t.app
      .get(IdempotencyEvents)
      .events$.subscribe((event) => seen.push(event));
    try {
      const key = newKey();
      const hash = idempotencyKeyHash(SCOPE, key);
      expect((await post(BOOKINGS, key)).status).toBe(201);
      await log.wait('completed', hash);
      expect(seen.filter((event) => event.keyHash === hash)).toEqual(
        log.events.filter((event) => event.keyHash === hash),
      );
    } finally {
      subscription.unsubscribe();
    }
  });

  it('logs one debug line per outcome, with the key hash', async () => {
    const key = newKey();
    const hash = idempotencyKeyHash(SCOPE, key);
    await post(BOOKINGS, key);
    await log.wait('completed', hash);
    await post(BOOKINGS, key);
    const lines = logger.lines.filter(
      (line) => line.level === 'debug' && line.message.includes(hash),
    );
    expect(lines.map((line) => line.message.split(' ')[0])).toEqual([
      'claimed',
      'completed',
      'replayed',
    ]);
    expect(lines[0].message).toContain('handler=BookingsController.book');
    expect(lines.every((line) => line.context === 'Idempotency')).toBe(true);
  });

  it('no event and no log line carries a raw key', () => {
    expect(keys.length).toBeGreaterThan(5);
    const published = JSON.stringify(log.events);
    const logged = JSON.stringify(logger.lines);
    for (const key of keys) {
      expect(published).not.toContain(key);
      expect(logged).not.toContain(key);
    }
  });
});

describe.each(ADAPTERS)('events of waits, lost leases and outages under %s', (adapter) => {
  let proxy: TcpProxy;
  let t: TestApp;
  let log: EventLog;
  let logger: LinesLogger;
  const post = (key: string, body: object) =>
    send(t.url, BOOKINGS, { headers: [['x-idempotency-key', key]], body });

  beforeAll(async () => {
    proxy = TcpProxy.forUrl(process.env.DATABASE_URL!);
    await proxy.open();
    logger = new LinesLogger();
    t = await createTestApp(adapter, {
      connection: {
        type: 'postgres',
        url: proxy.url(process.env.DATABASE_URL!),
        connectTimeoutMS: 1_000,
      },
      purge: { enabled: false },
      leaseMs: 1_000,
      statementTimeoutMs: 900,
      waitInFlightMs: 3_000,
      logger,
    });
    log = new EventLog();
  }, 30_000);
  afterAll(async () => {
    log?.close();
    if (!proxy.listening) await proxy.open();
    await t?.close();
    await proxy.close();
  }, 30_000);
  beforeEach(() => t.runs.reset());

  it('a duplicate that waited for the first is replayed with the time it waited', async () => {
    const key = randomUUID();
    const hash = idempotencyKeyHash('', key);
    const body = { product: 'w', delayMs: 400 };
    const first = post(key, body);
    await log.wait('claimed', hash);
    const duplicate = await post(key, body);
    expectReplayOf(duplicate, await first);
    const [replayed] = await log.wait('replayed', hash);
    expect(replayed.waitedMs).toBeGreaterThan(50);
    expect(replayed.claimMs).toBeGreaterThanOrEqual(replayed.waitedMs);
    expect(t.runs.count('book')).toBe(1);
  });

  it('a handler that outlives its lease is taken over: the late one reports lease-lost and warns', async () => {
    const key = randomUUID();
    const hash = idempotencyKeyHash('', key);
    const body = { product: 'slow', delayMs: 1_800 };
    const late = post(key, body);
    await log.wait('claimed', hash);
    await sleep(1_100); // the lease (1 s) passes; the duplicate waits, then takes it over
    const takeover = post(key, body);
    expectProblem(await late, 503, 'idempotency_lease_lost');
    expect((await takeover).status).toBe(201);
    const [lost] = await log.wait('lease-lost', hash);
    expect(lost).toEqual({
      type: 'lease-lost',
      context: 'http',
      handler: 'BookingsController.book',
      scope: '',
      keyHash: hash,
      phase: 'complete',
    });
    await log.wait('completed', hash);
    expect(log.of('claimed', hash)).toHaveLength(2);
    expect(log.typesFor(hash).slice(0, 3)).toEqual(['claimed', 'lease-taken-over', 'claimed']);
    expect(log.of('lease-taken-over', hash)).toEqual([
      {
        type: 'lease-taken-over',
        context: 'http',
        handler: 'BookingsController.book',
        scope: '',
        keyHash: hash,
      },
    ]);
    expect(logger.at('warn').filter((line) => line.includes(`Took over key ${hash}`))).toHaveLength(
      1,
    );
    expect(t.runs.count('book')).toBe(2);
    expect(
      logger.at('warn').filter((line) => line.includes(`Lease lost for key ${hash}`)),
    ).toHaveLength(1);
  });

  it('a store outage is reported as store-unavailable with its error, and logged as an error', async () => {
    const key = randomUUID();
    const hash = idempotencyKeyHash('', key);
    await proxy.close();
    try {
      expectRetryable(await post(key, { product: 'down' }), 503, 'idempotency_store_unavailable');
    } finally {
      await proxy.open();
    }
    expect(t.runs.count('book')).toBe(0);
    const [failure] = await log.wait('store-unavailable', hash);
    expect(failure).toMatchObject({
      type: 'store-unavailable',
      context: 'http',
      handler: 'BookingsController.book',
      scope: '',
      keyHash: hash,
      operation: 'claim',
      storeMs: expect.any(Number),
      timedOut: expect.any(Boolean),
    });
    expect(failure.error).toBeInstanceOf(Error);
    const errors = logger.at('error').filter((line) => line.includes(hash));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain('Idempotency store unavailable (claim)');
    expect(JSON.stringify(logger.lines)).not.toContain(key);
    // Back up: the same key runs.
    expect((await post(key, { product: 'down' })).status).toBe(201);
  });
});

describe.each(ADAPTERS)('the logger option under %s', (adapter) => {
  const nestLines = new LinesLogger();
  afterEach(() => Logger.overrideLogger(false));

  it.each([
    ['by default, through Nest’s Logger with the context Idempotency', undefined, true],
    ['with logger: false, nowhere', false as const, false],
  ])('logs %s', async (_name, logger, logs) => {
    const t = await createTestApp(adapter, {
      purge: { enabled: false },
      ...(logger === undefined ? {} : { logger }),
    });
    try {
      // The application's logger, as app.useLogger() sets it.
      Logger.overrideLogger(nestLines);
      nestLines.lines.length = 0;
      const key = randomUUID();
      const post = () => send(t.url, BOOKINGS, { headers: [['x-idempotency-key', key]], body: {} });
      expect((await post()).status).toBe(201);
      expect((await post()).status).toBe(409);
      expectProblem(
        await send(t.url, '/writes-itself', { headers: [['x-idempotency-key', key]], body: {} }),
        500,
        'idempotency_unsupported_response',
      );
      expect(t.runs.count('book')).toBe(1);
      const ours = nestLines.lines.filter((line) => line.context === 'Idempotency');
      const hash = idempotencyKeyHash('', key);
      if (logs) {
        expect(ours.filter((line) => line.level === 'debug').map((line) => line.message)).toEqual([
          expect.stringMatching(new RegExp(`^claimed .*keyHash=${hash}`)),
          expect.stringMatching(new RegExp(`^completed .*keyHash=${hash}`)),
          expect.stringMatching(new RegExp(`^replayed .*keyHash=${hash}`)),
          expect.stringMatching(/^rejected .*code=idempotency_unsupported_response/),
        ]);
        expect(ours.filter((line) => line.level === 'error')).toHaveLength(1);
      } else {
        expect(ours).toEqual([]);
      }
    } finally {
      Logger.overrideLogger(false);
      await t.close();
    }
  });
});
