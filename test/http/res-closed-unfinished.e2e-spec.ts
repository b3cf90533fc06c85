// renewLease and a client that leaves: the lease is renewed while the handler runs, whatever
// the client does, since the handler's effects are still happening. A handler that writes its
// own response (@Res({ passthrough: true })), began it and is still working when its client
// leaves keeps its key: a retry meanwhile answers 423 and never runs the handler a second time
// beside it (a change that stopped renewing on such a close did exactly that, and was
// reverted). A response ended late still completes and replays. A handler that hangs holds its
// key for as long as it hangs, like any live handler under renewLease: bound it with a timeout.
import { Controller, Headers, Post, Res } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { request, type ClientRequest } from 'node:http';
import { Idempotent, idempotencyKeyHash } from '../../src/index.js';
import { EventLog } from '../support/events.js';
import { send, type TestResponse } from '../support/http.js';
import { expectProblem } from '../support/problem.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter, sleep } from '../support/test-app.js';

const LEASE_MS = 600; // renewed every 200 ms
const TEXT = 'text/plain; charset=utf-8';

const RENEWED = { leaseMs: LEASE_MS, renewLease: true };

@Controller('res')
class WritesItselfController {
  constructor(private readonly runs: RunCounter) {}

  /** Writes its head and part of its body, and ends it after several lease periods. */
  @Post('late-end')
  @Idempotent(RENEWED)
  async lateEnd(
    @Headers('x-idempotency-key') key: string,
    @Res({ passthrough: true }) res: any,
  ): Promise<void> {
    this.runs.hit(`late-end:${key}`);
    const raw = res.raw ?? res;
    raw.writeHead(200, { 'content-type': TEXT });
    raw.write('early ');
    await sleep(LEASE_MS * 2.5);
    raw.end('late');
  }

  /** An ordinary handler, slower than its lease: Nest writes its answer when it returns. */
  @Post('slow')
  @Idempotent(RENEWED)
  async slow(@Headers('x-idempotency-key') key: string) {
    this.runs.hit(`slow:${key}`);
    await sleep(LEASE_MS * 2.5);
    return { done: true };
  }
}

describe.each(ADAPTERS)('renewLease when the client leaves before the response (%s)', (adapter) => {
  let t: RouteApp;
  const log = new EventLog();

  beforeAll(async () => {
    t = await createRouteApp(adapter, { controllers: [WritesItselfController] });
  });
  afterAll(async () => {
    log.close();
    await t?.close();
  });

  const post = (path: string, key: string): Promise<TestResponse> =>
    send(t.url, path, { headers: [['x-idempotency-key', key]], body: {} });

  /** Sends the request and leaves it open, for the test to abort. */
  const open = (path: string, key: string): ClientRequest => {
    const url = new URL(path, t.url);
    const req = request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-idempotency-key': key },
    });
    req.on('error', () => undefined); // the abort
    req.on('response', () => {
      throw new Error(`no response was expected for ${path}`);
    });
    req.end('{}');
    return req;
  };

  it('keeps renewing for a handler that began its response when its client left: a retry gets 423', async () => {
    const key = randomUUID();
    const hash = idempotencyKeyHash('', key);
    const req = open('/res/late-end', key);
    await log.wait('lease-renewed', hash);
    req.destroy();
    const renewals = log.of('lease-renewed', hash).length;
    // Past the lease the client's retry comes: the handler still runs, so the key is its.
    await sleep(LEASE_MS * 1.5);
    const retry = await post('/res/late-end', key);
    expectProblem(retry, 423, 'idempotency_request_in_flight');
    expect(t.runs.count(`late-end:${key}`)).toBe(1);
    // The handler ends its response: nobody reads it, but it is stored, and replayed.
    await log.wait('completed', hash);
    expect(log.of('lease-renewed', hash).length).toBeGreaterThan(renewals);
    expect(log.of('held', hash)).toEqual([]);
    expect(log.of('lease-taken-over', hash)).toEqual([]);
    const replay = await post('/res/late-end', key);
    expect(replay.status).toBe(409);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers['content-type']).toBe(TEXT);
    expect(replay.text).toBe('early late');
    expect(t.runs.count(`late-end:${key}`)).toBe(1);
  });

  it('still renews, completes and replays a response the handler ends late', async () => {
    const key = randomUUID();
    const hash = idempotencyKeyHash('', key);
    const first = await post('/res/late-end', key);
    expect(first.status).toBe(200);
    expect(first.headers['content-type']).toBe(TEXT);
    expect(first.text).toBe('early late');
    expect(log.of('lease-renewed', hash).length).toBeGreaterThanOrEqual(3);
    await log.wait('completed', hash);
    const replay = await post('/res/late-end', key);
    expect(replay.status).toBe(409);
    expect(replay.headers['content-type']).toBe(TEXT);
    expect(replay.body.equals(first.body)).toBe(true);
    expect(t.runs.count(`late-end:${key}`)).toBe(1);
    expect(log.of('held', hash)).toEqual([]);
  });

  it('keeps renewing for a handler that had written nothing when its client left', async () => {
    const key = randomUUID();
    const hash = idempotencyKeyHash('', key);
    const req = open('/res/slow', key);
    await log.wait('lease-renewed', hash);
    req.destroy();
    const renewals = log.of('lease-renewed', hash).length;
    // Renewed past the close and stored when the handler returns: no second run meanwhile.
    await log.wait('completed', hash);
    expect(log.of('lease-renewed', hash).length).toBeGreaterThan(renewals);
    expect(log.of('held', hash)).toEqual([]);
    const replay = await post('/res/slow', key);
    expect(replay.status).toBe(409);
    expect(replay.json).toEqual({ done: true });
    expect(t.runs.count(`slow:${key}`)).toBe(1);
  });
});
