// Issue 14, the batched store behind real HTTP, under Express and Fastify: bursts of new
// keys, storms of duplicates and replays share statements, and every request still gets the
// answer it would get one at a time, with the handler run once per distinct key.
import { randomUUID } from 'node:crypto';
import { IdempotencyStore, PostgresIdempotencyStore } from '../../src/index.js';
import { parallel, send, type TestResponse } from '../support/http.js';
import { expectReplayOf, expectRetryable, statusCounts } from '../support/problem.js';
import { ADAPTERS, createTestApp, type TestApp } from '../support/test-app.js';

const BOOKINGS = '/x/partners/p1/bookings';

describe.each(ADAPTERS)('the batched store under %s', (adapter) => {
  let t: TestApp;
  let store: PostgresIdempotencyStore;
  beforeAll(async () => {
    t = await createTestApp(adapter);
    store = t.app.get(IdempotencyStore) as PostgresIdempotencyStore;
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => t.runs.reset());

  const book = (key: string, body: object = { product: 'batch' }) =>
    send(t.url, BOOKINGS, { headers: [['x-idempotency-key', key]], body });

  it('a burst of new keys: every request runs once, and its retry replays it', async () => {
    const keys = Array.from({ length: 40 }, () => randomUUID());
    const claimsBefore = { ...store.batchers!.claim.counters };
    const first = await parallel(keys.length, (i) => book(keys[i]));
    expect(statusCounts(first)).toEqual({ 201: keys.length });
    expect(t.runs.count('book')).toBe(keys.length);
    expect(new Set(first.map((r) => r.json.id)).size).toBe(keys.length);
    const retries = await parallel(keys.length, (i) => book(keys[i]));
    retries.forEach((retry, i) => expectReplayOf(retry, first[i]));
    expect(t.runs.count('book')).toBe(keys.length);
    // 80 claims went to Postgres in fewer statements than that.
    const claims = store.batchers!.claim.counters;
    expect(claims.calls - claimsBefore.calls).toBe(2 * keys.length);
    expect(claims.statements - claimsBefore.statements).toBeLessThan(2 * keys.length);
  });

  it('a storm: 60 requests over 6 keys run the handler 6 times', async () => {
    const keys = Array.from({ length: 6 }, () => randomUUID());
    const responses = await parallel(60, (i) => book(keys[i % keys.length], { delayMs: 300 }));
    expect(t.runs.count('book')).toBe(keys.length);
    keys.forEach((key, k) => {
      const mine = responses.filter((_, i) => i % keys.length === k);
      const counts = statusCounts(mine);
      expect(Object.keys(counts).filter((s) => !['201', '409', '423'].includes(s))).toEqual([]);
      expect(counts[201]).toBe(1);
      const winner = mine.find((r) => r.status === 201)!;
      for (const response of mine) {
        if (response.status === 409) expectReplayOf(response, winner);
        if (response.status === 423) {
          expectRetryable(response, 423, 'idempotency_request_in_flight');
        }
      }
    });
    // Once settled, every key replays its winner.
    const replays: TestResponse[] = await parallel(keys.length, (k) =>
      book(keys[k], { delayMs: 300 }),
    );
    expect(replays.map((r) => r.status)).toEqual(keys.map(() => 409));
    expect(t.runs.count('book')).toBe(keys.length);
  });

  it('a key reused with another body among a burst gets 422, the rest are unaffected', async () => {
    const reused = randomUUID();
    const original = await book(reused, { product: 'one' });
    expect(original.status).toBe(201);
    const others = Array.from({ length: 10 }, () => randomUUID());
    const [mismatch, ...fresh] = await Promise.all([
      book(reused, { product: 'two' }),
      ...others.map((key) => book(key)),
    ]);
    expect(mismatch.status).toBe(422);
    expect(mismatch.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(fresh.map((r) => r.status)).toEqual(others.map(() => 201));
    expect(t.runs.count('book')).toBe(1 + others.length);
  });
});
