// CONTRACT: a 409 only ever carries a stored success (the published client treats every 409
// as one). A handler's own 409 (a ConflictException: the seat is taken) on a keyed request
// therefore goes out as 422 with its body unchanged and 409 in x-idempotency-original-status;
// the key is released as for any error, or the error stored and replayed the same way with
// storeErrors. With replayStatus: 'original' no replay is a 409, so the handler's goes out as
// it is; without a key the module is absent.
import { ConflictException, Controller, Post, Res, type Type } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter } from '../support/test-app.js';

@Controller('seats')
class SeatsController {
  constructor(private readonly runs: RunCounter) {}

  @Post('taken')
  @Idempotent()
  taken() {
    this.runs.hit('taken');
    throw new ConflictException('seat already taken');
  }

  @Post('stored')
  @Idempotent({ storeErrors: true })
  stored() {
    this.runs.hit('stored');
    throw new ConflictException('seat already taken');
  }

  @Post('original')
  @Idempotent({ replayStatus: 'original' })
  original() {
    this.runs.hit('original');
    throw new ConflictException('seat already taken');
  }

  /** Written by the handler itself, reason phrase and all. */
  @Post('raw')
  @Idempotent()
  raw(@Res({ passthrough: true }) res: any) {
    this.runs.hit('raw');
    const raw = res.raw ?? res;
    raw.writeHead(409, 'Taken', { 'content-type': 'text/plain', 'x-seat': '12A' });
    raw.end('seat 12A is taken');
  }
}

const CONFLICT_BODY = { message: 'seat already taken', error: 'Conflict', statusCode: 409 };

describe.each(ADAPTERS)("a handler's own 409 under %s", (adapter) => {
  let t: RouteApp;
  beforeAll(async () => {
    t = await createRouteApp(adapter, { controllers: [SeatsController] as Type[] });
  });
  afterAll(async () => {
    await t?.close();
  });

  const post = (path: string, key?: string) =>
    send(t.url, `/seats/${path}`, {
      headers: key ? [['x-idempotency-key', key]] : [],
      body: { seat: '12A' },
    });
  const expectOwnConflict = (response: TestResponse) => {
    expect(response.status).toBe(422);
    expect(response.headers['x-idempotency-original-status']).toBe('409');
  };

  it('goes out as 422 with its body, and the key is released: a retry runs again', async () => {
    const key = randomUUID();
    const before = t.runs.count('taken');
    const first = await post('taken', key);
    expectOwnConflict(first);
    expect(first.json).toEqual(CONFLICT_BODY);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const retry = await post('taken', key);
    expectOwnConflict(retry);
    expect(retry.json).toEqual(CONFLICT_BODY);
    expect(t.runs.count('taken')).toBe(before + 2);
  });

  it('is stored and replayed as 422 with storeErrors', async () => {
    const key = randomUUID();
    const before = t.runs.count('stored');
    const first = await post('stored', key);
    expectOwnConflict(first);
    const replay = await post('stored', key);
    expectOwnConflict(replay);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(first.body)).toBe(true);
    expect(t.runs.count('stored')).toBe(before + 1);
  });

  it('keeps its headers and body when the handler wrote it itself', async () => {
    const first = await post('raw', randomUUID());
    expectOwnConflict(first);
    expect(first.headers['x-seat']).toBe('12A');
    expect(first.headers['content-type']).toBe('text/plain');
    expect(first.body.toString()).toBe('seat 12A is taken');
  });

  it("stays 409 under replayStatus: 'original', and without a key", async () => {
    const keyed = await post('original', randomUUID());
    expect(keyed.status).toBe(409);
    expect(keyed.json).toEqual(CONFLICT_BODY);
    const unkeyed = await post('taken');
    expect(unkeyed.status).toBe(409);
    expect(unkeyed.headers['x-idempotency-original-status']).toBeUndefined();
  });
});
