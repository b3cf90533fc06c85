// The retrying client against a real HTTP server on loopback that answers a scripted
// sequence of statuses. Backoff is shrunk through options so the tests stay fast.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Controller, Post, ServiceUnavailableException } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Idempotent } from '../../src/index.js';
import { IdempotencyTestingModule } from '../../src/testing/index.js';
import {
  IdempotentClient,
  IdempotentRequestError,
  type RetryEvent,
} from '../../src/client/index.js';

interface Received {
  method: string;
  url: string;
  key: string | undefined;
  body: string;
}

type Answer = (res: ServerResponse) => void;

/** A server that answers the n-th request with answers[n] (the last one repeats). */
async function scriptedServer(
  answers: Answer[],
): Promise<{ url: string; received: Received[]; server: Server }> {
  const received: Received[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({
        method: req.method!,
        url: req.url!,
        key: req.headers['x-idempotency-key'] as string | undefined,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      answers[Math.min(received.length - 1, answers.length - 1)](res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, received, server };
}

const problem =
  (status: number, code: string, headers: Record<string, string> = {}): Answer =>
  (res) => {
    res.writeHead(status, { 'content-type': 'application/problem+json', ...headers });
    res.end(JSON.stringify({ status, code }));
  };

const STORED = '{"id":"b-1","total_price":42.5}';

describe('IdempotentClient', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  });

  it('retries through 423 and 503 (honouring Retry-After) and treats the 409 replay as success', async () => {
    const { url, received, server } = await scriptedServer([
      problem(423, 'idempotency_request_in_flight', { 'retry-after': '0' }),
      // An HTTP date one second in the past: wait 0 ms.
      problem(503, 'idempotency_store_unavailable', {
        'retry-after': new Date(Date.now() - 1000).toUTCString(),
      }),
      (res) => {
        res.writeHead(409, {
          'content-type': 'application/json',
          'idempotent-replayed': 'true',
          'x-idempotency-original-status': '201',
        });
        res.end(STORED);
      },
    ]);
    servers.push(server);
    const retries: RetryEvent[] = [];
    const client = new IdempotentClient({
      baseUrl: url,
      backoffFactorMs: 1,
      headers: { authorization: 'Bearer t' },
      onRetry: (event) => retries.push(event),
    });

    const result = await client.post('/x/partners/p1/instant_booking', { currency: 'EUR' });

    expect(result).toMatchObject({
      status: 409,
      replayed: true,
      originalStatus: 201,
      attempts: 3,
      body: STORED,
    });
    expect(result.json()).toEqual({ id: 'b-1', total_price: 42.5 });
    expect(result.key).toMatch(/^[0-9a-f-]{36}$/);
    // The same key and body on every try: that is what makes the retries safe.
    expect(received).toHaveLength(3);
    expect(new Set(received.map((r) => r.key))).toEqual(new Set([result.key]));
    expect(
      received.every((r) => r.method === 'POST' && r.url === '/x/partners/p1/instant_booking'),
    ).toBe(true);
    expect(received.every((r) => r.body === '{"currency":"EUR"}')).toBe(true);
    expect(retries.map((r) => [r.attempt, r.status, r.delayMs])).toEqual([
      [1, 423, 0],
      [2, 503, 0],
    ]);
  });

  it('returns a first-time success as not replayed, with the caller’s key', async () => {
    const { url, received, server } = await scriptedServer([
      (res) => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(STORED);
      },
    ]);
    servers.push(server);
    const result = await new IdempotentClient().post(`${url}/book`, { a: 1 }, { key: 'my-key' });
    expect(result).toMatchObject({
      status: 201,
      replayed: false,
      originalStatus: 201,
      attempts: 1,
      key: 'my-key',
    });
    expect(received.map((r) => r.key)).toEqual(['my-key']);
  });

  it('gives up after retries + 1 tries with an error carrying the last status and attempts', async () => {
    const { url, received, server } = await scriptedServer([
      problem(503, 'idempotency_store_unavailable'),
    ]);
    servers.push(server);
    const client = new IdempotentClient({ baseUrl: url, retries: 3, backoffFactorMs: 2 });
    const started = Date.now();

    const error = await client.post('/book', {}, { key: 'k-503' }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(IdempotentRequestError);
    expect(error).toMatchObject({ status: 503, attempts: 4, key: 'k-503', exhausted: true });
    expect((error as Error).message).toMatch(
      /Gave up after 4 tries .*status 503 \(idempotency_store_unavailable\)/,
    );
    expect(received).toHaveLength(4);
    // Exponential backoff 2 + 4 + 8 ms: bounded, and nowhere near urllib3-sized waits.
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('caps a long Retry-After at maxDelayMs', async () => {
    const { url, received, server } = await scriptedServer([
      problem(429, 'rate_limited', { 'retry-after': '3600' }),
    ]);
    servers.push(server);
    const delays: number[] = [];
    const client = new IdempotentClient({
      baseUrl: url,
      retries: 1,
      maxDelayMs: 5,
      onRetry: (e) => delays.push(e.delayMs),
    });
    await expect(client.post('/book', {})).rejects.toMatchObject({ status: 429, attempts: 2 });
    expect(delays).toEqual([5]);
    expect(received).toHaveLength(2);
  });

  it("does not mistake the application's own 409 (no Idempotent-Replayed) for a replay", async () => {
    const { url, received, server } = await scriptedServer([problem(409, 'seat_already_taken')]);
    servers.push(server);
    const client = new IdempotentClient({ baseUrl: url, retries: 3, backoffFactorMs: 2 });
    await expect(client.post('/book', {})).rejects.toMatchObject({
      status: 409,
      attempts: 1,
      exhausted: false,
    });
    expect(received).toHaveLength(1);
  });

  it('does not retry a final status such as 422', async () => {
    const { url, received, server } = await scriptedServer([
      problem(422, 'idempotency_key_reused'),
    ]);
    servers.push(server);
    const error = await new IdempotentClient({ baseUrl: url })
      .post('/book', {})
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 422, attempts: 1, exhausted: false });
    expect((error as Error).message).toMatch(
      /422 \(idempotency_key_reused\).*retrying will not help/,
    );
    expect(received).toHaveLength(1);
  });

  it('treats network errors as retryable and reports them when the tries run out', async () => {
    // A port that was just free: connections are refused.
    const { url, server } = await scriptedServer([problem(500, 'unused')]);
    await new Promise((resolve) => server.close(resolve));
    const retries: RetryEvent[] = [];
    const client = new IdempotentClient({
      baseUrl: url,
      retries: 2,
      backoffFactorMs: 1,
      onRetry: (e) => retries.push(e),
    });

    const error = await client.post('/book', {}, { key: 'k-net' }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(IdempotentRequestError);
    expect(error).toMatchObject({ status: undefined, attempts: 3, key: 'k-net', exhausted: true });
    expect((error as Error).message).toMatch(/no response/);
    expect(retries.map((r) => r.status)).toEqual([undefined, undefined]);
  });

  it('retries a try that times out, then succeeds', async () => {
    const { url, received, server } = await scriptedServer([
      () => undefined, // never answers: the client's timeout fires
      (res) => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(STORED);
      },
    ]);
    servers.push(server);
    // The answered try must fit in the timeout too: 100 ms did not on a loaded 2-core machine
    // (a third attempt was made), so the timeout leaves room and the first try waits it out.
    const client = new IdempotentClient({ baseUrl: url, timeoutMs: 1_000, backoffFactorMs: 1 });
    const result = await client.post('/book', {}, { key: 'k-slow' });
    expect(result).toMatchObject({ status: 201, attempts: 2 });
    expect(received.map((r) => r.key)).toEqual(['k-slow', 'k-slow']);
    server.closeAllConnections();
  });

  it('stops at once when the caller aborts', async () => {
    const { url, received, server } = await scriptedServer([
      problem(423, 'idempotency_request_in_flight', { 'retry-after': '30' }),
    ]);
    servers.push(server);
    const controller = new AbortController();
    const client = new IdempotentClient({
      baseUrl: url,
      onRetry: () => controller.abort(new Error('cancelled')),
    });
    await expect(client.post('/book', {}, { signal: controller.signal })).rejects.toThrow(
      'cancelled',
    );
    expect(received).toHaveLength(1);
  });
});

describe('IdempotentClient: keys, bodies and outcomes it must not get wrong', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  });
  const created: Answer = (res) => {
    res.writeHead(201, { 'content-type': 'application/json' });
    res.end(STORED);
  };
  const replayed: Answer = (res) => {
    res.writeHead(409, {
      'content-type': 'application/json',
      'idempotent-replayed': 'true',
      'x-idempotency-original-status': '201',
    });
    res.end(STORED);
  };

  it('sends a key given in the headers (any case) as the key, alone, on every call', async () => {
    const { url, received, server } = await scriptedServer([
      problem(503, 'idempotency_store_unavailable', { 'retry-after': '0' }),
      created,
      replayed,
    ]);
    servers.push(server);
    const client = new IdempotentClient({ baseUrl: url, backoffFactorMs: 1 });
    const headers = { 'X-Idempotency-Key': 'booking-op-1' };

    const first = await client.post('/book', { a: 1 }, { headers });
    // The caller retries the operation later, as the README says: with the same key.
    const later = await client.post('/book', { a: 1 }, { headers });

    // One key for the operation: never "booking-op-1, <a UUID>", never a fresh one per call.
    expect(received.map((r) => r.key)).toEqual(['booking-op-1', 'booking-op-1', 'booking-op-1']);
    expect([first.key, later.key]).toEqual(['booking-op-1', 'booking-op-1']);
    expect(later.replayed).toBe(true);
  });

  it('refuses a key option that contradicts the key header, before sending anything', async () => {
    const { url, received, server } = await scriptedServer([created]);
    servers.push(server);
    const client = new IdempotentClient({ baseUrl: url });
    await expect(
      client.post('/book', {}, { key: 'k-1', headers: { 'x-idempotency-key': 'k-2' } }),
    ).rejects.toThrow(TypeError);
    expect(received).toHaveLength(0);
  });

  it('refuses a key header among the headers of every request: one key per operation', () => {
    expect(
      () => new IdempotentClient({ headers: { 'X-Idempotency-Key': 'shared-by-every-booking' } }),
    ).toThrow(TypeError);
  });

  it('lets a content-type header replace its own instead of sending two', async () => {
    const contentTypes: (string | undefined)[] = [];
    const server = createServer((req, res) => {
      contentTypes.push(req.headers['content-type']);
      req.resume().on('end', () => created(res));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push(server);
    const { port } = server.address() as AddressInfo;
    await new IdempotentClient({ baseUrl: `http://127.0.0.1:${port}` }).post(
      '/book',
      { a: 1 },
      { headers: { 'Content-Type': 'application/vnd.api+json' } },
    );
    expect(contentTypes).toEqual(['application/vnd.api+json']);
  });

  it('sends URLSearchParams, Blob and ArrayBuffer bodies as they are, on every try', async () => {
    const { url, received, server } = await scriptedServer([
      problem(503, 'idempotency_store_unavailable', { 'retry-after': '0' }),
      created,
    ]);
    servers.push(server);
    const client = new IdempotentClient({ baseUrl: url, backoffFactorMs: 1 });
    await client.post('/form', new URLSearchParams({ amount: '42.50', currency: 'EUR' }));
    await client.post('/blob', new Blob(['raw-bytes']));
    await client.post('/buffer', new TextEncoder().encode('abc').buffer);
    expect(received.map((r) => [r.url, r.body])).toEqual([
      ['/form', 'amount=42.50&currency=EUR'],
      ['/form', 'amount=42.50&currency=EUR'],
      ['/blob', 'raw-bytes'],
      ['/buffer', 'abc'],
    ]);
  });

  it('sends a FormData body as multipart, the same parts on every try', async () => {
    const { url, received, server } = await scriptedServer([
      problem(503, 'idempotency_store_unavailable', { 'retry-after': '0' }),
      created,
    ]);
    servers.push(server);
    const form = new FormData();
    form.append('amount', '42.50');
    form.append('receipt', new Blob(['%PDF-1.7']), 'receipt.pdf');
    await new IdempotentClient({ baseUrl: url, backoffFactorMs: 1 }).post('/upload', form);
    expect(received).toHaveLength(2);
    for (const { body } of received) {
      expect(body).toContain('name="amount"\r\n\r\n42.50');
      expect(body).toContain('filename="receipt.pdf"');
      expect(body).toContain('%PDF-1.7');
    }
  });

  it('refuses a stream body, which a retry could not send again, before sending anything', async () => {
    const { url, received, server } = await scriptedServer([created]);
    servers.push(server);
    const stream = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"amount":42.5}'));
        controller.close();
      },
    });
    await expect(new IdempotentClient({ baseUrl: url }).post('/book', stream)).rejects.toThrow(
      TypeError,
    );
    expect(received).toHaveLength(0);
  });

  it('retries a success whose body was cut off, and returns the replayed body', async () => {
    const { url, received, server } = await scriptedServer([
      (res) => {
        res.writeHead(201, { 'content-type': 'application/json', 'content-length': '200' });
        res.write(STORED.slice(0, 8));
        setTimeout(() => res.destroy(), 20);
      },
      replayed,
    ]);
    servers.push(server);
    const client = new IdempotentClient({ baseUrl: url, backoffFactorMs: 1 });
    const result = await client.post('/book', {}, { key: 'k-cut' });
    expect(result).toMatchObject({ status: 409, replayed: true, attempts: 2, body: STORED });
    expect(received.map((r) => r.key)).toEqual(['k-cut', 'k-cut']);
  });

  it('does not retry a replayed error (storeErrors): the same answer comes back for good', async () => {
    const storedError: Answer = (res) => {
      res.writeHead(503, {
        'content-type': 'application/problem+json',
        'idempotent-replayed': 'true',
        'x-idempotency-original-status': '503',
      });
      res.end(JSON.stringify({ status: 503, code: 'upstream_unavailable' }));
    };
    const { url, received, server } = await scriptedServer([storedError]);
    servers.push(server);
    const error = await new IdempotentClient({ baseUrl: url, backoffFactorMs: 1 })
      .post('/book', {}, { key: 'k-stored' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdempotentRequestError);
    expect(error).toMatchObject({ status: 503, attempts: 1, exhausted: false });
    expect(received).toHaveLength(1);
  });

  it('gives up at the replay of a stored 503 from the module (storeErrors), not after every try', async () => {
    let runs = 0;
    @Controller('bookings')
    class FailingBookingsController {
      @Post()
      @Idempotent({ storeErrors: true })
      book() {
        runs++;
        throw new ServiceUnavailableException('the insurer is down');
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyTestingModule.forRoot()],
      controllers: [FailingBookingsController],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    try {
      await app.listen(0, '127.0.0.1');
      const client = new IdempotentClient({ baseUrl: await app.getUrl(), backoffFactorMs: 1 });
      const error = await client.post('/bookings', { a: 1 }).catch((e: unknown) => e);
      // The first 503 is the handler's; the second is its replay, the answer for good.
      expect(error).toMatchObject({ status: 503, attempts: 2, exhausted: false });
      expect(runs).toBe(1);
    } finally {
      await app.close();
    }
  });

  it('throws the caller’s abort, not a success, when it aborts while the body is read', async () => {
    const controller = new AbortController();
    const { url, server } = await scriptedServer([
      (res) => {
        res.writeHead(201, { 'content-type': 'application/json', 'content-length': '200' });
        res.write(STORED.slice(0, 8));
        setTimeout(() => controller.abort(new Error('cancelled')), 20);
      },
    ]);
    servers.push(server);
    await expect(
      new IdempotentClient({ baseUrl: url }).post('/book', {}, { signal: controller.signal }),
    ).rejects.toThrow('cancelled');
    server.closeAllConnections();
  });
});
