// A trailing slash is the same request only where the router makes it one. Under a wildcard
// route it is not: Express gives `/files/a/` the path ['a', ''] and Fastify the path 'a/',
// where `/files/a` gets ['a'] and 'a'. A handler that tells them apart (a folder `a/`, a file
// `a`) must not get the other's replay under the same key: 422, not 409.
import { Controller, Param, Post, type Type } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { send } from '../support/http.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter } from '../support/test-app.js';

/** The route's wildcard as each router writes it: Express 5 `*path`, find-my-way `*`. */
function wildcardController(pattern: string): Type {
  @Controller('wild')
  class WildcardController {
    constructor(private readonly runs: RunCounter) {}

    @Post(pattern)
    @Idempotent()
    create(@Param() params: Record<string, unknown>) {
      this.runs.hit('files');
      // Express: params.path (an array); Fastify: params['*'] (a string).
      const path = params.path ?? params['*'];
      return { created: Array.isArray(path) ? path.join('/') : path };
    }
  }
  return WildcardController;
}

describe.each(ADAPTERS)('trailing slash under a wildcard route, %s', (adapter) => {
  let t: RouteApp;

  beforeAll(async () => {
    t = await createRouteApp(adapter, {
      controllers: [wildcardController(adapter === 'express' ? 'files/*path' : 'files/*')],
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('a folder `a/` after a file `a` under one key is another request (422)', async () => {
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    const file = await send(t.url, '/wild/files/a', { headers, body: {} });
    expect(file.status).toBe(201);
    expect(file.json).toEqual({ created: 'a' });
    const folder = await send(t.url, '/wild/files/a/', { headers, body: {} });
    expect(folder.status).toBe(422);
    expect(t.runs.count('files')).toBe(1);
  });

  it('the same wildcard path again replays (409)', async () => {
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    const first = await send(t.url, '/wild/files/a/b/', { headers, body: {} });
    expect(first.status).toBe(201);
    const retry = await send(t.url, '/wild/files/a/b/', { headers, body: {} });
    expect(retry.status).toBe(409);
    expect(retry.body.equals(first.body)).toBe(true);
  });
});
