// IdempotencyKeys, the operator's API, on a real Postgres under Express and Fastify: looking
// a key up, invalidating a completed key (the next request runs the handler again), and
// refusing an in-progress key unless told it may go, and what follows when it goes.
import {
  Body,
  Controller,
  Injectable,
  Post,
  UseGuards,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { IdempotencyKeys, Idempotent, idempotencyKeyHash } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import { expectProblem, expectRetryable } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter } from '../support/test-app.js';

/** Sets request.user from `x-user`, as an auth guard would: the default scope reads it. */
@Injectable()
class UserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest();
    request.user = { id: request.headers['x-user'] };
    return true;
  }
}

/** Holds the slow handler until the test opens it. */
@Injectable()
class Gate {
  private open!: () => void;
  opened = new Promise<void>((resolve) => (this.open = resolve));
  release(): void {
    this.open();
  }
}

@Controller('orders')
@UseGuards(UserGuard)
class OrdersController {
  constructor(
    private readonly runs: RunCounter,
    private readonly gate: Gate,
  ) {}

  @Post()
  @Idempotent()
  create(@Body() body: { item: string }) {
    this.runs.hit('create');
    return { order: this.runs.count('create'), item: body.item };
  }

  @Post('slow')
  @Idempotent({ leaseMs: 60_000 })
  async slow(@Body() body: { item: string }) {
    this.runs.hit('slow');
    const run = this.runs.count('slow');
    await this.gate.opened;
    return { order: run, item: body.item };
  }
}

describe.each(ADAPTERS)('IdempotencyKeys (%s)', (adapter) => {
  let routeApp: RouteApp;
  let keys: IdempotencyKeys;

  beforeEach(async () => {
    routeApp = await createRouteApp(adapter, {
      controllers: [OrdersController],
      providers: [Gate],
    });
    keys = routeApp.app.get(IdempotencyKeys);
  });
  afterEach(async () => {
    routeApp.app.get(Gate).release();
    await routeApp.close();
  });

  const post = (path: string, key: string, item = 'book'): Promise<TestResponse> =>
    send(routeApp.url, path, {
      headers: [
        ['x-user', 'alice'],
        ['x-idempotency-key', key],
      ],
      body: { item },
    });

  it('looks up nothing for a key never used', async () => {
    expect(await keys.lookup({ key: randomUUID(), scope: 'user:alice' })).toBeNull();
  });

  it('looks up a completed key: state, times, token, stored status and size', async () => {
    const key = randomUUID();
    const first = await post('/orders', key);
    expect(first.status).toBe(201);
    const record = await keys.lookup({ key, scope: 'user:alice' });
    expect(record).toMatchObject({
      scope: 'user:alice',
      key,
      state: 'completed',
      fingerprint: expect.stringMatching(/^[0-9a-f]{64}$/),
      fencingToken: expect.any(String),
      leasePassed: false,
      expired: false,
      response: { status: 201, bodyBytes: first.body.length },
    });
    expect(record!.response!.headers['content-type']).toMatch(/^application\/json/);
    expect(record!.expiresAt.getTime() - record!.completedAt!.getTime()).toBe(48 * 3_600_000);
    expect(record!.leaseExpiresAt).toBeUndefined();
    // Another owner's scope holds nothing under this key.
    expect(await keys.lookup({ key, scope: 'user:bob' })).toBeNull();
    expect(await keys.lookup({ key })).toBeNull();
    expect(routeApp.runs.count('create')).toBe(1);
  });

  it('invalidates a completed key: the same request then runs the handler again', async () => {
    const key = randomUUID();
    const first = await post('/orders', key);
    const replay = await post('/orders', key);
    expect([first.status, replay.status]).toEqual([201, 409]);
    expect(replay.text).toBe(first.text);

    expect(await keys.invalidate({ key, scope: 'user:alice' })).toEqual({
      outcome: 'deleted',
      state: 'completed',
    });
    expect(await keys.lookup({ key, scope: 'user:alice' })).toBeNull();
    // Named by its hash, as every log line names keys.
    const hash = idempotencyKeyHash('user:alice', key);
    expect(routeApp.logs.find('warn', `Invalidated key ${hash}`)).toHaveLength(1);

    const again = await post('/orders', key);
    expect(again.status).toBe(201);
    expect(again.json).toEqual({ order: 2, item: 'book' });
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(routeApp.runs.count('create')).toBe(2);
    // And it is the stored answer from then on.
    const replayed = await post('/orders', key);
    expect(replayed.status).toBe(409);
    expect(replayed.json).toEqual({ order: 2, item: 'book' });
    expect(await keys.invalidate({ key, scope: 'user:bob' })).toEqual({ outcome: 'missing' });
  });

  it('refuses to invalidate a key in progress without inProgress: true', async () => {
    const key = randomUUID();
    const running = post('/orders/slow', key);
    await waitFor('the first request to run', () => routeApp.runs.count('slow') === 1);
    const record = await keys.lookup({ key, scope: 'user:alice' });
    expect(record).toMatchObject({ state: 'in_progress', leasePassed: false });
    expect(record!.leaseExpiresAt!.getTime() - record!.createdAt.getTime()).toBe(60_000);
    expect(record!.response).toBeUndefined();

    expect(await keys.invalidate({ key, scope: 'user:alice' })).toEqual({
      outcome: 'refused',
      state: 'in_progress',
    });
    const duplicate = await post('/orders/slow', key);
    expectRetryable(duplicate, 423, 'idempotency_request_in_flight');
    routeApp.app.get(Gate).release();
    const first = await running;
    expect(first.status).toBe(201);
    expect(first.json).toEqual({ order: 1, item: 'book' });
    expect(routeApp.runs.count('slow')).toBe(1);
  });

  it('with inProgress: true, deletes it: a retry runs, and the first owner is fenced off', async () => {
    const key = randomUUID();
    // The owner stands for a process that crashed: here it is alive, which shows the price
    // of invalidating a live owner's key: the handler runs twice.
    const owner = post('/orders/slow', key);
    await waitFor('the first request to run', () => routeApp.runs.count('slow') === 1);
    const { fencingToken } = (await keys.lookup({ key, scope: 'user:alice' }))!;

    expect(await keys.invalidate({ key, scope: 'user:alice' }, { inProgress: true })).toEqual({
      outcome: 'deleted',
      state: 'in_progress',
    });
    const retry = post('/orders/slow', key);
    await waitFor('the retry to run', () => routeApp.runs.count('slow') === 2);
    const taken = await keys.lookup({ key, scope: 'user:alice' });
    expect(taken).toMatchObject({ state: 'in_progress' });
    expect(taken!.fencingToken).not.toBe(fencingToken);

    routeApp.app.get(Gate).release();
    const [ownerAnswer, retryAnswer] = await Promise.all([owner, retry]);
    expect(retryAnswer.status).toBe(201);
    expect(retryAnswer.json).toEqual({ order: 2, item: 'book' });
    // The owner cannot store its result over the retry's: its client is told to retry.
    expectRetryable(ownerAnswer, 503, 'idempotency_lease_lost');
    const replay = await post('/orders/slow', key);
    expect(replay.status).toBe(409);
    expect(replay.json).toEqual({ order: 2, item: 'book' });
    expect(routeApp.runs.count('slow')).toBe(2);
  });

  it('a different request with an invalidated key is no longer refused as reused', async () => {
    const key = randomUUID();
    expect((await post('/orders', key, 'book')).status).toBe(201);
    expectProblem(await post('/orders', key, 'lamp'), 422, 'idempotency_key_reused');
    await keys.invalidate({ key, scope: 'user:alice' });
    const lamp = await post('/orders', key, 'lamp');
    expect(lamp.status).toBe(201);
    expect(lamp.json).toEqual({ order: 2, item: 'lamp' });
    expect(routeApp.runs.count('create')).toBe(2);
  });
});
