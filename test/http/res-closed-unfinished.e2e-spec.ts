// renewLease and a handler that writes its own response (@Res({ passthrough: true })): when the
// client's connection closes after the handler began writing the response and before it ended
// it, nothing will ever send that response, so the lease is no longer renewed (it used to be
// renewed for good: the key answered 423 forever and one timer per request leaked). The key
// is held until its lease passes, as for any outcome the module cannot know after the handler
// ran, and then a retry runs the handler again. A response that is ended, however late, still
// completes and replays; a handler that had written nothing when its client left (Nest answers
// for it when it returns) keeps its lease while it runs, as renewLease promises.
import { Controller, Headers, Post, Res } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { request, type ClientRequest } from 'node:http';
import pg from 'pg';
import { Idempotent, idempotencyKeyHash } from '../../src/index.js';
import { EventLog } from '../support/events.js';
import { send, type TestResponse } from '../support/http.js';
import { expectProblem } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter, sleep } from '../support/test-app.js';

const LEASE_MS = 600; // renewed every 200 ms
const TEXT = 'text/plain; charset=utf-8';

/** Keys whose first run never ends its response (later runs do). */
const firstRunsHang = new Set<string>();

/** Transactional first runs that hang until the test resolves them. */
const hangingTransactions = new Map<string, Gate>();

/** A promise the test resolves. */
class Gate {
  open!: () => void;
  readonly promise = new Promise<void>((resolve) => (this.open = resolve));
}

const RENEWED = { leaseMs: LEASE_MS, renewLease: true };

@Controller('res')
class WritesItselfController {
  constructor(private readonly runs: RunCounter) {}

  /** Writes its head and part of the body; ends it, except on a first run that hangs. */
  @Post('partial')
  @Idempotent(RENEWED)
  async partial(
    @Headers('x-idempotency-key') key: string,
    @Res({ passthrough: true }) res: any,
  ): Promise<void> {
    this.runs.hit(`partial:${key}`);
    const raw = res.raw ?? res;
    raw.writeHead(200, { 'content-type': TEXT, 'x-step': 'head' });
    raw.write('partial');
    if (firstRunsHang.delete(key)) await new Promise(() => undefined); // never ends
    raw.end(' and the rest');
  }

  /** The same in a transaction; its first run hangs until the test lets it go. */
  @Post('partial-tx')
  @Idempotent({ ...RENEWED, transactional: true })
  async partialTx(
    @Headers('x-idempotency-key') key: string,
    @Res({ passthrough: true }) res: any,
  ): Promise<void> {
    this.runs.hit(`partial-tx:${key}`);
    const raw = res.raw ?? res;
    raw.writeHead(200, { 'content-type': TEXT });
    raw.write('partial');
    const hang = hangingTransactions.get(key);
    if (hang) await hang.promise;
    raw.end(' in a transaction');
  }

  /** The same, ending its response after several lease periods. */
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

describe.each(ADAPTERS)('renewLease when the connection closes mid-response (%s)', (adapter) => {
  let t: RouteApp;
  let db: pg.Client;
  const log = new EventLog();

  beforeAll(async () => {
    t = await createRouteApp(adapter, { controllers: [WritesItselfController] });
    db = new pg.Client(process.env.DATABASE_URL);
    await db.connect();
  });
  afterAll(async () => {
    log.close();
    await db?.end();
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

  const lockedUntil = async (key: string): Promise<Date> => {
    const { rows } = await db.query(
      `SELECT locked_until FROM "${t.tableName}" WHERE idempotency_key = $1`,
      [key],
    );
    return rows[0].locked_until;
  };
  const leasePassed = async (key: string): Promise<boolean> => {
    const { rows } = await db.query(
      `SELECT locked_until < now() AS passed FROM "${t.tableName}" WHERE idempotency_key = $1`,
      [key],
    );
    return rows[0].passed;
  };

  it('stops renewing once the client is gone, holds the key for its lease, then runs a retry', async () => {
    const key = randomUUID();
    const hash = idempotencyKeyHash('', key);
    firstRunsHang.add(key);
    const req = open('/res/partial', key);
    // Renewing while the handler runs, as before.
    await log.wait('lease-renewed', hash);
    req.destroy();

    const [held] = await log.wait('held', hash);
    expect(held.reason).toContain('lost its connection');
    const renewals = log.of('lease-renewed', hash).length;
    // Held, not released: the handler may have had its effects, and it is still running.
    const duplicate = await post('/res/partial', key);
    expectProblem(duplicate, 423, 'idempotency_request_in_flight');

    // No renewal after the close: the lease in the table stays where it was, and passes.
    await sleep(LEASE_MS / 3); // past a renewal that was already on its way at the close
    const locked = await lockedUntil(key);
    await sleep(LEASE_MS);
    expect(await lockedUntil(key)).toEqual(locked);
    expect(log.of('lease-renewed', hash)).toHaveLength(renewals);
    await waitFor('the lease to pass', () => leasePassed(key), 5_000);

    // The retry takes the key over and runs the handler, which ends its response this time.
    const retry = await post('/res/partial', key);
    expect(retry.status).toBe(200);
    expect(retry.headers['content-type']).toBe(TEXT);
    expect(retry.headers['x-step']).toBe('head');
    expect(retry.text).toBe('partial and the rest');
    expect(t.runs.count(`partial:${key}`)).toBe(2);
    const replay = await post('/res/partial', key);
    expect(replay.status).toBe(409);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(retry.body)).toBe(true);
    expect(t.runs.count(`partial:${key}`)).toBe(2);
    expect(t.logs.find('warn', 'lost its connection')).toHaveLength(1);
  });

  it('does the same in a transaction, which commits nothing once the key was taken over', async () => {
    const key = randomUUID();
    const hash = idempotencyKeyHash('', key);
    const hang = new Gate();
    hangingTransactions.set(key, hang);
    const req = open('/res/partial-tx', key);
    await log.wait('lease-renewed', hash);
    req.destroy();
    await log.wait('held', hash);
    const renewals = log.of('lease-renewed', hash).length;
    await sleep(LEASE_MS / 3);
    const locked = await lockedUntil(key);
    await sleep(LEASE_MS);
    expect(await lockedUntil(key)).toEqual(locked);
    expect(log.of('lease-renewed', hash)).toHaveLength(renewals);
    await waitFor('the lease to pass', () => leasePassed(key), 5_000);

    hangingTransactions.delete(key);
    const retry = await post('/res/partial-tx', key);
    expect(retry.status).toBe(200);
    expect(retry.text).toBe('partial in a transaction');
    expect(t.runs.count(`partial-tx:${key}`)).toBe(2);

    // The first run ends at last: its record was taken over, so it commits nothing.
    hang.open();
    await log.wait('lease-lost', hash);
    const replay = await post('/res/partial-tx', key);
    expect(replay.status).toBe(409);
    expect(replay.body.equals(retry.body)).toBe(true);
    expect(t.runs.count(`partial-tx:${key}`)).toBe(2);
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
