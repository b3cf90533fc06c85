// Issue 3, database outage: the app reaches Postgres through a TCP proxy. While the proxy
// is down (not listening, every connection cut), keyed requests fail closed with 503 and
// Retry-After and the handler never runs; once it is back on the same port, the same
// requests succeed without restarting the app.
import { randomUUID } from 'node:crypto';
import { send } from '../support/http.js';
import { expectReplayOf, expectRetryable } from '../support/problem.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { waitFor } from '../support/processes.js';
import { ADAPTERS, createTestApp, sleep, type TestApp } from '../support/test-app.js';

const BOOKINGS = '/x/partners/p1/bookings';

describe.each(ADAPTERS)('Postgres outage under %s', (adapter) => {
  let proxy: TcpProxy;
  let t: TestApp;
  const post = (key: string, body: object = { product: 'outage' }) =>
    send(t.url, BOOKINGS, { headers: [['x-idempotency-key', key]], body });

  beforeAll(async () => {
    proxy = TcpProxy.forUrl(process.env.DATABASE_URL!);
    await proxy.open();
    t = await createTestApp(adapter, {
      connection: {
        type: 'postgres',
        url: proxy.url(process.env.DATABASE_URL!),
        connectTimeoutMS: 1_000,
      },
      retryAfterSeconds: 3,
    });
  }, 30_000);

  afterAll(async () => {
    if (!proxy.listening) await proxy.open(); // let the app close its DataSource cleanly
    await t?.close();
    await proxy.close();
  }, 30_000);

  it('fails closed with 503 while Postgres is unreachable and recovers without a restart', async () => {
    // Up: a new key runs and replays.
    const firstKey = randomUUID();
    const before = await post(firstKey);
    expect(before.status).toBe(201);
    expectReplayOf(await post(firstKey), before);
    expect(t.runs.count('book')).toBe(1);
    expect(proxy.accepted).toBeGreaterThan(0);

    // Down: not listening, every pooled connection cut.
    await proxy.close();
    const keys = [randomUUID(), randomUUID()];
    const downSince = Date.now();
    for (let attempt = 0; attempt < 3; attempt++) {
      for (const key of keys) {
        const down = await post(key);
        const retryAfter = expectRetryable(down, 503, 'idempotency_store_unavailable');
        expect(retryAfter).toBe(3);
      }
    }
    // Failing closed is fast: no request waits for a connect timeout, let alone hangs.
    expect(Date.now() - downSince).toBeLessThan(6 * 1_000);
    // A replay cannot be served either: it needs the store too.
    expectRetryable(await post(firstKey), 503, 'idempotency_store_unavailable');
    expect(t.runs.count('book')).toBe(1);

    // Back on the same port: the same requests now run once, then replay.
    const acceptedBefore = proxy.accepted;
    await proxy.open();
    for (const key of keys) {
      const first = await post(key);
      expect({ status: first.status, body: first.text }).toMatchObject({ status: 201 });
      expectReplayOf(await post(key), first);
    }
    expectReplayOf(await post(firstKey), before);
    expect(t.runs.count('book')).toBe(3);
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore); // reconnected through the proxy
  }, 30_000);

  it('an outage while the handler runs: the client still gets its result, stored once the database is back', async () => {
    const key = randomUUID();
    const body = { product: 'outage-mid-request', delayMs: 1_500 };
    const runsBefore = t.runs.count('book');
    const inFlight = post(key, body);
    // Claimed; the handler is running.
    await waitFor('the handler to start', () => t.runs.count('book') === runsBefore + 1);
    await proxy.close();
    // The result cannot be stored, but the handler did run: the client gets its real answer
    // (the interceptor logs the failure) rather than an error that invites a blind retry.
    const answer = await inFlight;
    expect({ status: answer.status, body: answer.text }).toMatchObject({ status: 201 });
    expectRetryable(await post(key, body), 503, 'idempotency_store_unavailable');
    await proxy.open();
    // The record stays claimed by that run (a retry gets 423, never a second run) until the
    // module's background retry stores the result; from then on retries replay it.
    let retry = await post(key, body);
    const deadline = Date.now() + 15_000;
    while (retry.status === 423 && Date.now() < deadline) {
      expect(expectRetryable(retry, 423, 'idempotency_request_in_flight')).toBe(3);
      await sleep(250);
      retry = await post(key, body);
    }
    expectReplayOf(retry, answer);
    expect(t.runs.count('book')).toBe(runsBefore + 1);
  }, 30_000);
});
