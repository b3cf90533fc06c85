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

  // Not fixed on Fastify: @fastify/compress encodes in an onSend hook, before the capture at
  // the Node response, so the gzip bytes are stored and replayed to every client. (Express's
  // compression wraps the response, after the capture: the replay is encoded per request.)
  const itUnlessFastify = adapter === 'fastify' ? it.failing : it;
  itUnlessFastify(
    'replays plain JSON to a retry that does not accept gzip, after a first one that did',
    async () => {
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
    },
  );
});
