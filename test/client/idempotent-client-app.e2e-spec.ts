// The retrying client against the module on the real Postgres, under Express and Fastify:
// requests fetch could never send fail at once (no retries, no backoff, nothing reaches the
// app); an abort hands the caller the key the client picked, with which the operation is then
// retried and replayed; with `redirect: 'manual'` a handler's redirect is its answer, not a
// second POST under the same key to another URL.
import { Body, Controller, HttpCode, Injectable, Post, Redirect } from '@nestjs/common';
import { Idempotent } from '../../src/index.js';
import {
  IdempotentClient,
  IdempotentRequestAbortedError,
  type RetryEvent,
} from '../../src/client/index.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter } from '../support/test-app.js';

/** Holds the slow handler until the test opens it. */
@Injectable()
class Gate {
  private open!: () => void;
  readonly opened = new Promise<void>((resolve) => (this.open = resolve));
  release(): void {
    this.open();
  }
}

@Controller('bookings')
class BookingsController {
  constructor(
    private readonly runs: RunCounter,
    private readonly gate: Gate,
  ) {}

  @Post()
  @Idempotent()
  @HttpCode(201)
  book(@Body() body: { product: string }) {
    this.runs.hit('book');
    return { booking: this.runs.count('book'), product: body.product };
  }

  @Post('slow')
  @Idempotent()
  @HttpCode(201)
  async slow(@Body() body: { product: string }) {
    this.runs.hit('slow');
    await this.gate.opened;
    return { booking: this.runs.count('slow'), product: body.product };
  }

  /** Moved for good: the booking is made here, the client is sent on to the next version. */
  @Post('moved')
  @Idempotent()
  @Redirect('/bookings/v2', 307)
  moved(@Body() _body: { product: string }) {
    this.runs.hit('moved');
  }

  @Post('v2')
  @Idempotent()
  @HttpCode(201)
  v2(@Body() body: { product: string }) {
    this.runs.hit('v2');
    return { v2: true, product: body.product };
  }

  /** POST-redirect-GET, replayed with its own status. */
  @Post('see-other')
  @Idempotent({ replayStatus: 'original' })
  @Redirect('/bookings/b-1', 303)
  seeOther(@Body() _body: { product: string }) {
    this.runs.hit('see-other');
  }
}

const PAYLOAD = { product: 'hotel-42' };

describe.each(ADAPTERS)('IdempotentClient against the module (%s)', (adapter) => {
  let routeApp: RouteApp;
  let retries: RetryEvent[];

  beforeEach(async () => {
    routeApp = await createRouteApp(adapter, {
      controllers: [BookingsController],
      providers: [Gate],
    });
    retries = [];
  });
  afterEach(async () => {
    routeApp.app.get(Gate).release();
    await routeApp.close();
  });

  /** Retries with a backoff long enough to see: a request error must not wait through it. */
  const client = (options: { baseUrl?: string; redirect?: 'follow' | 'manual' } = {}) =>
    new IdempotentClient({
      baseUrl: routeApp.url,
      retries: 1,
      backoffFactorMs: 1_500,
      onRetry: (event) => retries.push(event),
      ...options,
    });

  describe('a request fetch cannot send fails at once, with the reason as cause', () => {
    const cases: Array<[string, (c: IdempotentClient, url: string) => Promise<unknown>]> = [
      ['a key outside Latin-1', (c) => c.post('/bookings', PAYLOAD, { key: 'réservation-€1' })],
      [
        'a header value outside Latin-1',
        (c) => c.post('/bookings', PAYLOAD, { headers: { 'x-note': 'Zürich → Genève' } }),
      ],
      [
        'a header value with a line break',
        (c) => c.post('/bookings', PAYLOAD, { headers: { 'x-note': 'a\r\nx-admin: 1' } }),
      ],
      [
        'a header name with a space',
        (c) => c.post('/bookings', PAYLOAD, { headers: { 'x note': '1' } }),
      ],
      [
        'a relative URL without baseUrl',
        () => client({ baseUrl: undefined }).post('/bookings', PAYLOAD),
      ],
      [
        'an invalid URL',
        () => client({ baseUrl: undefined }).post('http://exa mple.com/', PAYLOAD),
      ],
      [
        'a URL with credentials',
        (c, url) => c.post(url.replace('http://', 'http://user:secret@') + '/bookings', PAYLOAD),
      ],
      [
        'a scheme fetch does not speak',
        (c, url) => c.post(url.replace('http://', 'ftp://') + '/bookings', PAYLOAD),
      ],
      ['a body on GET', (c) => c.send('GET', '/bookings', PAYLOAD)],
      ['a method fetch refuses', (c) => c.send('CONNECT', '/bookings', PAYLOAD)],
    ];

    it.each(cases)('%s', async (_name, attempt) => {
      const started = Date.now();
      const error = await attempt(client(), routeApp.url).catch((e: unknown) => e);

      expect(error).toBeInstanceOf(TypeError);
      expect((error as Error).message).toMatch(/^IdempotentClient: .*not tried/);
      // Nothing retried, nothing waited for, nothing reached the handler.
      expect(retries).toEqual([]);
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(routeApp.runs.count('book')).toBe(0);
    });

    it('keeps fetch’s own error as the cause', async () => {
      const error = (await client()
        .post('/bookings', PAYLOAD, { key: 'clé-€' })
        .catch((e: unknown) => e)) as Error;
      // fetch's TypeError (from Node's realm, not the test's: compared by name).
      expect((error.cause as Error).name).toBe('TypeError');
      expect(error.message).toContain((error.cause as Error).message);
    });
  });

  describe('an abort hands over the key', () => {
    it('with the key the client picked, the operation is retried later and replayed', async () => {
      const controller = new AbortController();
      const pending = client().post('/bookings/slow', PAYLOAD, { signal: controller.signal });
      await waitUntil(() => routeApp.runs.count('slow') === 1);
      controller.abort();

      const error = await pending.catch((e: unknown) => e);

      expect(error).toBeInstanceOf(IdempotentRequestAbortedError);
      const aborted = error as IdempotentRequestAbortedError;
      // What callers check for an abort keeps working, and the reason is the cause.
      expect(aborted.name).toBe('AbortError');
      expect(aborted.cause).toBe(controller.signal.reason);
      expect(aborted.key).toMatch(/^[0-9a-f-]{36}$/);
      expect(aborted.attempts).toBe(1);
      expect(aborted.message).toContain(aborted.key);

      // The handler finishes what the aborted request started; the caller retries with the key.
      routeApp.app.get(Gate).release();
      // Through a 423 while the first run is still being recorded, to its replay.
      const later = await new IdempotentClient({ baseUrl: routeApp.url, retries: 5 }).post(
        '/bookings/slow',
        PAYLOAD,
        { key: aborted.key },
      );
      expect(later).toMatchObject({ status: 409, replayed: true, originalStatus: 201 });
      expect(later.json()).toEqual({ booking: 1, product: 'hotel-42' });
      expect(routeApp.runs.count('slow')).toBe(1);
    });

    it('during the wait after a 423, keeping the reason’s name (TimeoutError)', async () => {
      const first = client().post('/bookings/slow', PAYLOAD, { key: 'k-in-flight' });
      await waitUntil(() => routeApp.runs.count('slow') === 1);
      const signal = AbortSignal.timeout(700);

      // The 423's Retry-After is 1 s: the caller's 300 ms run out while the client waits.
      const error = await client()
        .post('/bookings/slow', PAYLOAD, { key: 'k-in-flight', signal })
        .catch((e: unknown) => e);

      expect(error).toBeInstanceOf(IdempotentRequestAbortedError);
      expect(error).toMatchObject({ name: 'TimeoutError', key: 'k-in-flight', attempts: 1 });
      expect((error as Error).cause).toBe(signal.reason);
      expect(retries.map((r) => r.status)).toEqual([423]);
      routeApp.app.get(Gate).release();
      expect((await first).status).toBe(201);
      expect(routeApp.runs.count('slow')).toBe(1);
    });
  });

  describe("redirect: 'manual'", () => {
    it('returns a handler’s 307 as its answer instead of re-POSTing the key elsewhere (422)', async () => {
      const c = client({ redirect: 'manual' });
      const first = await c.post('/bookings/moved', PAYLOAD, { key: 'k-moved' });
      expect(first).toMatchObject({ status: 307, replayed: false, originalStatus: 307 });
      expect(first.headers.get('location')).toBe('/bookings/v2');

      const again = await c.post('/bookings/moved', PAYLOAD, { key: 'k-moved' });
      expect(again).toMatchObject({ status: 409, replayed: true, originalStatus: 307 });
      expect(again.headers.get('location')).toBe('/bookings/v2');
      expect([routeApp.runs.count('moved'), routeApp.runs.count('v2')]).toEqual([1, 0]);
      expect(retries).toEqual([]);
    });

    it('keeps a replayed redirect a replay (replayStatus: original)', async () => {
      const c = client({ redirect: 'manual' });
      const first = await c.post('/bookings/see-other', PAYLOAD, { key: 'k-see-other' });
      const again = await c.post('/bookings/see-other', PAYLOAD, { key: 'k-see-other' });
      expect(first).toMatchObject({ status: 303, replayed: false, originalStatus: 303 });
      expect(again).toMatchObject({ status: 303, replayed: true, originalStatus: 303 });
      expect(again.headers.get('location')).toBe('/bookings/b-1');
      expect(routeApp.runs.count('see-other')).toBe(1);
    });
  });
});

/** Polls `check` (every 20 ms, up to 5 s) until it holds. */
async function waitUntil(check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('waitUntil: timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
