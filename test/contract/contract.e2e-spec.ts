// CONTRACT.md, row by row, under Express and Fastify: status, body, headers and how many
// times the handler ran, against a real Postgres.
import { randomUUID } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import {
  ADAPTERS,
  createTestApp,
  GUARDED_SLOW_HANDLER_MS,
  sleep,
  waitForRecord,
  type TestApp,
} from '../support/test-app.js';
import { parallel, send } from '../support/http.js';
import { expectProblem } from '../support/problem.js';

const BOOKINGS = '/x/partners/p1/bookings';
const key = () => randomUUID();
const withKey = (value: string, more: Array<[string, string]> = []): Array<[string, string]> => [
  ['x-idempotency-key', value],
  ...more,
];

describe.each(ADAPTERS)('compressed responses under %s', (adapter) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp(adapter, {}, { compress: true });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('replays the bytes that were sent, with their Content-Encoding, never encoded twice', async () => {
    const k = key();
    const headers = withKey(k, [['accept-encoding', 'gzip']]);
    const first = await send(t.url, BOOKINGS, { headers, body: { product: 'zip' } });
    const again = await send(t.url, BOOKINGS, { headers, body: { product: 'zip' } });
    expect(first.status).toBe(201);
    expect(first.headers['content-encoding']).toBe('gzip');
    expect(JSON.parse(gunzipSync(first.body).toString())).toMatchObject({ product: 'zip' });
    expect(again.status).toBe(409);
    expect(again.headers['content-encoding']).toBe('gzip');
    expect(again.body.equals(first.body)).toBe(true);
    expect(t.runs.count('book')).toBe(1);
  });
});

describe.each(ADAPTERS)('idempotency contract under %s', (adapter) => {
  let t: TestApp;
  const post = (path: string, headers?: Array<[string, string]>, body: unknown = {}) =>
    send(t.url, path, { headers, body: body as object });

  beforeAll(async () => {
    t = await createTestApp(adapter);
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => t.runs.reset());

  describe('new key, handler succeeds', () => {
    it("answers with the handler's status, body and headers", async () => {
      const res = await post(BOOKINGS, withKey(key()), { product: 'travel' });
      expect(res.status).toBe(201);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      expect(res.json).toMatchObject({
        partnerId: 'p1',
        product: 'travel',
        id: expect.any(String),
      });
      expect(res.headers['idempotent-replayed']).toBeUndefined();
      expect(t.runs.count('book')).toBe(1);
    });
  });

  describe('same key, same request, record completed', () => {
    it('replays the stored body byte for byte with 409 five times; the handler ran once', async () => {
      const k = key();
      const first = await post(BOOKINGS, withKey(k), { product: 'travel' });
      for (let i = 0; i < 5; i++) {
        const replay = await post(BOOKINGS, withKey(k), { product: 'travel' });
        expect(replay.status).toBe(409);
        expect(replay.body.equals(first.body)).toBe(true);
        expect(replay.headers['content-type']).toBe(first.headers['content-type']);
        expect(replay.headers['idempotent-replayed']).toBe('true');
        expect(replay.headers['x-idempotency-original-status']).toBe('201');
      }
      expect(t.runs.count('book')).toBe(1);
    });

    it('treats reordered JSON keys and whitespace as the same request', async () => {
      const k = key();
      const first = await send(t.url, BOOKINGS, {
        headers: withKey(k),
        body: '{"product":"travel","seats":2}',
      });
      const again = await send(t.url, BOOKINGS, {
        headers: withKey(k),
        body: '{ "seats": 2,\n  "product": "travel" }',
      });
      expect(first.status).toBe(201);
      expect(again.status).toBe(409);
      expect(again.body.equals(first.body)).toBe(true);
      expect(t.runs.count('book')).toBe(1);
    });

    it('matches the key header case-insensitively', async () => {
      const k = key();
      await post(BOOKINGS, [['X-Idempotency-Key', k]]);
      const again = await post(BOOKINGS, [['x-IDEMPOTENCY-key', k]]);
      expect(again.status).toBe(409);
      expect(t.runs.count('book')).toBe(1);
    });

    it('replays a text body with its content type', async () => {
      const k = key();
      const first = await post('/text', withKey(k));
      const again = await post('/text', withKey(k));
      expect(first.status).toBe(201);
      expect(first.text).toBe('plain text, run 1');
      expect(again.status).toBe(409);
      expect(again.text).toBe('plain text, run 1');
      expect(again.headers['content-type']).toBe(first.headers['content-type']);
      expect(t.runs.count('text')).toBe(1);
    });

    it('keeps the original status and Location', async () => {
      const k = key();
      const first = await post('/created', withKey(k));
      const again = await post('/created', withKey(k));
      expect(first.status).toBe(202);
      expect(again.status).toBe(409);
      expect(again.headers.location).toBe('/x/jobs/42');
      expect(again.headers['x-idempotency-original-status']).toBe('202');
      expect(again.json).toEqual({ queued: true });
      expect(t.runs.count('created')).toBe(1);
    });

    it('stores what a @Res({ passthrough: true }) route returns, with the headers it set', async () => {
      const k = key();
      const first = await post('/passthrough', withKey(k));
      const again = await post('/passthrough', withKey(k));
      expect(first.status).toBe(201);
      expect(first.json).toEqual({ run: 1 });
      expect(again.status).toBe(409);
      expect(again.body.equals(first.body)).toBe(true);
      expect(again.headers.location).toBe('/x/passthrough/1');
      expect(t.runs.count('passthrough')).toBe(1);
    });

    it("replays with the original status when the route asks for 'original'", async () => {
      const k = key();
      const first = await post('/original-status', withKey(k));
      const again = await post('/original-status', withKey(k));
      expect(again.status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.equals(first.body)).toBe(true);
      expect(t.runs.count('original-status')).toBe(1);
    });
  });

  describe('same key, same request, first one still in flight', () => {
    it('runs the handler once for 20 parallel duplicates; the others get 423 or the replay', async () => {
      const k = key();
      const body = { product: 'slow', delayMs: 600 };
      const responses = await parallel(20, () => post(BOOKINGS, withKey(k), body));
      expect(t.runs.count('book')).toBe(1);
      const winner = responses.filter((r) => r.status === 201);
      expect(winner).toHaveLength(1);
      for (const res of responses) {
        if (res.status === 423) {
          expectProblem(res, 423, 'idempotency_request_in_flight');
          expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        } else if (res.status === 409) {
          expect(res.body.equals(winner[0].body)).toBe(true);
        } else {
          expect(res.status).toBe(201);
        }
      }
      expect(responses.filter((r) => r.status === 423).length).toBeGreaterThan(0);
      const after = await post(BOOKINGS, withKey(k), body);
      expect(after.status).toBe(409);
      expect(after.body.equals(winner[0].body)).toBe(true);
      expect(t.runs.count('book')).toBe(1);
    });
  });

  describe('same key, different request', () => {
    it('answers 422 for another body', async () => {
      const k = key();
      await post(BOOKINGS, withKey(k), { product: 'a' });
      const res = await post(BOOKINGS, withKey(k), { product: 'b' });
      expectProblem(res, 422, 'idempotency_key_reused');
      expect(t.runs.count('book')).toBe(1);
    });

    it('answers 422 for another path', async () => {
      const k = key();
      await post(BOOKINGS, withKey(k), { product: 'a' });
      const res = await post('/x/partners/p2/bookings', withKey(k), { product: 'a' });
      expectProblem(res, 422, 'idempotency_key_reused');
      expect(t.runs.count('book')).toBe(1);
    });

    it('answers 422 for another method', async () => {
      const k = key();
      await post(BOOKINGS, withKey(k), { product: 'a' });
      const res = await send(t.url, BOOKINGS, {
        method: 'PUT',
        headers: withKey(k),
        body: { product: 'a' },
      });
      expectProblem(res, 422, 'idempotency_key_reused');
      expect(t.runs.count('rebook')).toBe(0);
    });

    it('reports the mismatch before the in-flight state', async () => {
      const k = key();
      const slow = post(BOOKINGS, withKey(k), { product: 'a', delayMs: 1_500 });
      await waitForRecord(t.tableName, k, 'in_progress');
      const res = await post(BOOKINGS, withKey(k), { product: 'b' });
      expectProblem(res, 422, 'idempotency_key_reused');
      expect((await slow).status).toBe(201);
      expect(t.runs.count('book')).toBe(1);
    });
  });

  describe('malformed key', () => {
    const cases: Array<[string, Array<[string, string]>]> = [
      ['empty', [['x-idempotency-key', '']]],
      ['256 characters', [['x-idempotency-key', 'k'.repeat(256)]]],
      ['a control character', [['x-idempotency-key', 'abc\tdef']]],
      ['not ASCII', [['x-idempotency-key', Buffer.from('cl\u00e9', 'latin1').toString('latin1')]]],
      [
        'a repeated header',
        [
          ['x-idempotency-key', 'one'],
          ['x-idempotency-key', 'two'],
        ],
      ],
    ];
    it.each(cases)('answers 400 for %s and does not run the handler', async (_name, headers) => {
      const res = await post(BOOKINGS, headers);
      expectProblem(res, 400, 'idempotency_key_invalid');
      expect(t.runs.count('book')).toBe(0);
    });

    it('accepts a key of exactly 255 printable characters', async () => {
      const k = (randomUUID() + '!~ '.repeat(100)).slice(0, 255);
      expect(k).toHaveLength(255);
      expect((await post(BOOKINGS, withKey(k))).status).toBe(201);
      expect((await post(BOOKINGS, withKey(k))).status).toBe(409);
      expect(t.runs.count('book')).toBe(1);
    });
  });

  describe('key missing on a route that requires one', () => {
    it('answers 400 and does not run the handler', async () => {
      const res = await post('/required');
      expectProblem(res, 400, 'idempotency_key_missing');
      expect(t.runs.count('required')).toBe(0);
    });
  });

  describe('key missing on a route that does not require one', () => {
    it('runs the handler every time, as if the module were absent', async () => {
      const first = await post(BOOKINGS, [], { product: 'x' });
      const second = await post(BOOKINGS, [], { product: 'x' });
      expect([first.status, second.status]).toEqual([201, 201]);
      expect(second.headers['idempotent-replayed']).toBeUndefined();
      expect(first.json.id).not.toBe(second.json.id);
      expect(t.runs.count('book')).toBe(2);
    });
  });

  describe('handler throws or answers 4xx/5xx', () => {
    it('passes a thrown error through unchanged and releases the key', async () => {
      const k = key();
      const failed = await post('/fails-once', withKey(k));
      expect(failed.status).toBe(500);
      expect(failed.json).toMatchObject({ statusCode: 500 });
      expect(failed.headers['idempotent-replayed']).toBeUndefined();
      const retry = await post('/fails-once', withKey(k));
      expect(retry.status).toBe(201);
      expect(retry.json).toEqual({ attempt: 2 });
      const replay = await post('/fails-once', withKey(k));
      expect(replay.status).toBe(409);
      expect(replay.json).toEqual({ attempt: 2 });
      expect(t.runs.count('fails-once')).toBe(2);
    });

    it('passes a 4xx through unchanged and releases the key', async () => {
      const k = key();
      const rejected = await post('/rejects-once', withKey(k));
      expect(rejected.status).toBe(400);
      expect(rejected.json).toMatchObject({ statusCode: 400, message: 'not yet' });
      const retry = await post('/rejects-once', withKey(k));
      expect(retry.status).toBe(201);
      expect(t.runs.count('rejects-once')).toBe(2);
    });
  });

  describe('an error response the handler did not produce', () => {
    it('holds the key when a timeout interceptor answers 408 while the handler runs', async () => {
      const k = key();
      const sent = Date.now();
      expect((await post('/guarded/slow', withKey(k))).status).toBe(408);
      expect(t.runs.count('guarded-slow')).toBe(1); // the 408 came while the handler ran
      expectProblem(await post('/guarded/slow', withKey(k)), 423, 'idempotency_request_in_flight');
      // Once the handler has finished: its result was never sent, so the key stays held.
      await sleep(Math.max(0, sent + GUARDED_SLOW_HANDLER_MS + 200 - Date.now()));
      expectProblem(await post('/guarded/slow', withKey(k)), 423, 'idempotency_request_in_flight');
      expect(t.runs.count('guarded-slow')).toBe(1);
    });

    it('holds the key when an outer interceptor fails after the handler succeeded', async () => {
      const k = key();
      const failed = await post('/guarded/unserializable', withKey(k));
      expect(failed.status).toBe(500);
      expect(failed.headers['idempotent-replayed']).toBeUndefined();
      expectProblem(
        await post('/guarded/unserializable', withKey(k)),
        423,
        'idempotency_request_in_flight',
      );
      expect(t.runs.count('guarded-unserializable')).toBe(1);
    });
  });

  describe('a handler that outlives its lease', () => {
    it('keeps its key while it runs when the route renews its lease', async () => {
      const k = key();
      const slow = post('/renewed-lease', withKey(k));
      await waitForRecord(t.tableName, k, 'in_progress');
      await sleep(1_200); // twice the 600 ms lease: without renewal, a takeover would run it again
      expectProblem(await post('/renewed-lease', withKey(k)), 423, 'idempotency_request_in_flight');
      const first = await slow;
      expect(first.status).toBe(201);
      const replay = await post('/renewed-lease', withKey(k));
      expect(replay.status).toBe(409);
      expect(replay.body.equals(first.body)).toBe(true);
      expect(t.runs.count('renewed-lease')).toBe(1);
    });
  });

  describe('scopes', () => {
    it('never shows one principal the response stored for another', async () => {
      const k = key();
      const alice = await post(BOOKINGS, withKey(k, [['x-user', 'alice']]), { product: 'same' });
      const bob = await post(BOOKINGS, withKey(k, [['x-user', 'bob']]), { product: 'same' });
      expect([alice.status, bob.status]).toEqual([201, 201]);
      expect(alice.json.id).not.toBe(bob.json.id);
      const aliceAgain = await post(BOOKINGS, withKey(k, [['x-user', 'alice']]), {
        product: 'same',
      });
      const bobAgain = await post(BOOKINGS, withKey(k, [['x-user', 'bob']]), { product: 'same' });
      expect(aliceAgain.status).toBe(409);
      expect(aliceAgain.body.equals(alice.body)).toBe(true);
      expect(bobAgain.status).toBe(409);
      expect(bobAgain.body.equals(bob.body)).toBe(true);
      expect(t.runs.count('book')).toBe(2);
    });
  });

  describe('expiry', () => {
    it('runs the key again once its retention has passed', async () => {
      const k = key();
      expect((await post('/short-retention', withKey(k))).json).toEqual({ run: 1 });
      expect((await post('/short-retention', withKey(k))).status).toBe(409);
      await sleep(1_100);
      const later = await post('/short-retention', withKey(k));
      expect(later.status).toBe(201);
      expect(later.json).toEqual({ run: 2 });
      expect(t.runs.count('short-retention')).toBe(2);
    });
  });

  describe('which routes are tracked', () => {
    it('never tracks safe methods, even under @Idempotent()', async () => {
      const k = key();
      await send(t.url, '/read', { method: 'GET', headers: withKey(k) });
      const again = await send(t.url, '/read', { method: 'GET', headers: withKey(k) });
      expect(again.status).toBe(200);
      expect(t.runs.count('read')).toBe(2);
      await send(t.url, '/orders/1', { method: 'GET', headers: withKey(k) });
      expect((await send(t.url, '/orders/1', { method: 'GET', headers: withKey(k) })).status).toBe(
        200,
      );
      expect(t.runs.count('orders-get')).toBe(2);
    });

    it("covers a decorated controller's unsafe routes; method options merge over the class's", async () => {
      const k = key();
      const first = await send(t.url, '/orders/7', {
        method: 'PUT',
        headers: withKey(k),
        body: {},
      });
      const again = await send(t.url, '/orders/7', {
        method: 'PUT',
        headers: withKey(k),
        body: {},
      });
      expect(first.status).toBe(200);
      // The class asks for the original status on replays.
      expect(again.status).toBe(200);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(t.runs.count('orders-put')).toBe(1);
      // The method adds `required` and keeps the class's replayStatus.
      const k2 = key();
      expectProblem(
        await send(t.url, '/orders/7', { method: 'PATCH', body: {} }),
        400,
        'idempotency_key_missing',
      );
      const patched = await send(t.url, '/orders/7', {
        method: 'PATCH',
        headers: withKey(k2),
        body: {},
      });
      const repatched = await send(t.url, '/orders/7', {
        method: 'PATCH',
        headers: withKey(k2),
        body: {},
      });
      expect([patched.status, repatched.status]).toEqual([200, 200]);
      expect(repatched.headers['idempotent-replayed']).toBe('true');
      expect(t.runs.count('orders-patch')).toBe(1);
    });

    it('leaves routes without @Idempotent() alone', async () => {
      const k = key();
      await post('/untracked', withKey(k));
      expect((await post('/untracked', withKey(k))).status).toBe(201);
      expect(t.runs.count('untracked')).toBe(2);
    });
  });

  describe('responses that cannot be stored', () => {
    it('refuses a StreamableFile with a configuration error and holds the key (the handler ran)', async () => {
      const k = key();
      const res = await post('/stream', withKey(k));
      expectProblem(res, 500, 'idempotency_unsupported_response');
      expectProblem(await post('/stream', withKey(k)), 423, 'idempotency_request_in_flight');
      expect(t.runs.count('stream')).toBe(1);
    });

    it('refuses a route that writes with @Res() before running it', async () => {
      const res = await post('/writes-itself', withKey(key()));
      expectProblem(res, 500, 'idempotency_unsupported_response');
      expect(t.runs.count('writes-itself')).toBe(0);
    });
  });
});
