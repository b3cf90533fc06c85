// Review finding: with a compression plugin, a replay must be readable by the client that
// retries, whatever it accepts: the first client's Accept-Encoding is not the retry's.
import { Controller, Post, type Type } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { send } from '../support/http.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter } from '../support/test-app.js';

@Controller('review-compressed')
class CompressedController {
  constructor(private readonly runs: RunCounter) {}

  @Post()
  @Idempotent()
  book() {
    this.runs.hit('compressed');
    return { booked: 'x'.repeat(2_000) };
  }
}

describe.each(ADAPTERS)('review: compressed replays under %s', (adapter) => {
  let t: RouteApp;

  beforeAll(async () => {
    t = await createRouteApp(adapter, {
      controllers: [CompressedController] as Type[],
      compress: true,
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  // @fastify/compress encodes in an onSend hook, before the capture at the Node response, so
  // the gzip bytes are stored; a retry that does not accept gzip gets them decoded. (Express's
  // compression wraps the response, after the capture: the replay is encoded per request.)
  it('replays plain JSON to a retry that does not accept gzip, after a first one that did', async () => {
    const key = randomUUID();
    const first = await send(t.url, '/review-compressed', {
      headers: [
        ['x-idempotency-key', key],
        ['accept-encoding', 'gzip'],
      ],
      body: {},
    });
    expect(first.status).toBe(201);
    expect(first.headers['content-encoding']).toBe('gzip');
    const replay = await send(t.url, '/review-compressed', {
      headers: [
        ['x-idempotency-key', key],
        ['accept-encoding', 'identity'],
      ],
      body: {},
    });
    expect(replay.status).toBe(409);
    expect(replay.headers['content-encoding']).toBeUndefined();
    expect(replay.json).toEqual({ booked: 'x'.repeat(2_000) });
    expect(t.runs.count('compressed')).toBe(1);
  });

  // Fastify stores the first client's gzip bytes: what a retry gets is the module's choice.
  // (Express stores the body plain and its compression encodes each replay for its request.)
  const fastifyOnly = adapter === 'fastify' ? it.each : () => () => undefined;
  fastifyOnly([
    ['gzip, deflate', 'gzip'],
    ['br;q=1, *;q=0.5', 'gzip'],
    ['identity', undefined],
    [undefined, undefined],
  ])(
    'replays to a retry sending Accept-Encoding %p with Content-Encoding %p',
    async (acceptEncoding, expected) => {
      const key = randomUUID();
      const runsBefore = t.runs.count('compressed');
      const first = await send(t.url, '/review-compressed', {
        headers: [
          ['x-idempotency-key', key],
          ['accept-encoding', 'gzip'],
        ],
        body: {},
      });
      expect(first.headers['content-encoding']).toBe('gzip');
      const replay = await send(t.url, '/review-compressed', {
        headers: [
          ['x-idempotency-key', key],
          ...(acceptEncoding ? [['accept-encoding', acceptEncoding] as [string, string]] : []),
        ],
        body: {},
      });
      expect(replay.status).toBe(409);
      expect(replay.headers['content-encoding']).toBe(expected);
      if (expected === 'gzip') expect(replay.body.equals(first.body)).toBe(true);
      else expect(replay.json).toEqual({ booked: 'x'.repeat(2_000) });
      expect(t.runs.count('compressed')).toBe(runsBefore + 1);
    },
  );
});
