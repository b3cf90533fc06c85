// Graceful shutdown while a failed request's key could not be released: its handler threw
// during a database blip, so the release failed and is retried in the background. A deploy
// stops the app once the database answers again: shutdown makes the pending release's last
// attempt at once, before the DataSource closes, so a retry of that request runs the handler
// again instead of getting 423 until the lease (far longer here) passes. With the database
// still away at shutdown, that last attempt is bounded: shutdown does not wait out the lease.
import { Controller, Headers, Injectable, Post } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { send } from '../support/http.js';
import { expectProblem } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import {
  ADAPTERS,
  RunCounter,
  dropTable,
  sleep,
  uniqueTableName,
  waitForRecord,
} from '../support/test-app.js';

const LEASE_MS = 30_000;
const STATEMENT_TIMEOUT_MS = 1_000;

/** Holds a failing run until the test opens it: the database goes away meanwhile. */
@Injectable()
class Gate {
  private open!: () => void;
  readonly opened = new Promise<void>((resolve) => (this.open = resolve));
  release(): void {
    this.open();
  }
}

@Controller()
class FailingController {
  constructor(
    private readonly runs: RunCounter,
    private readonly gate: Gate,
  ) {}

  /** With x-fail (not part of the fingerprint), waits for the gate, then throws. */
  @Post('orders')
  @Idempotent()
  async order(@Headers('x-fail') fail: string | undefined) {
    this.runs.hit('orders');
    if (fail) {
      await this.gate.opened;
      throw new Error('payment provider down');
    }
    return { run: this.runs.count('orders') };
  }

  /** The same in a transaction: the failure rolls it back, then the key is released. */
  @Post('tx-orders')
  @Idempotent({ transactional: true })
  txOrder(@Headers('x-fail') fail: string | undefined) {
    return this.order(fail);
  }
}

describe.each(ADAPTERS)('shutdown with a release pending under %s', (adapter) => {
  const tableName = uniqueTableName('idem_shutdown_release');
  let proxy: TcpProxy;

  beforeAll(async () => {
    proxy = TcpProxy.forUrl(process.env.DATABASE_URL!);
    await proxy.open();
  });
  afterAll(async () => {
    if (!proxy.listening) await proxy.open();
    await proxy.close();
    await dropTable(tableName);
  });

  function startApp(throughProxy: boolean): Promise<RouteApp> {
    return createRouteApp(adapter, {
      controllers: [FailingController],
      providers: [Gate],
      module: {
        tableName,
        leaseMs: LEASE_MS,
        statementTimeoutMs: STATEMENT_TIMEOUT_MS,
        ...(throughProxy
          ? {
              connection: {
                type: 'postgres',
                url: proxy.url(process.env.DATABASE_URL!),
                connectTimeoutMS: 1_000,
              },
            }
          : {}),
      },
    });
  }

  /** A request whose handler throws while the database is away: its key cannot be released. */
  async function failDuringBlip(
    app: RouteApp,
    key: string,
    path = '/orders',
    status = 500,
  ): Promise<void> {
    const answer = send(app.url, path, {
      headers: [
        ['x-idempotency-key', key],
        ['x-fail', '1'],
        ['connection', 'close'],
      ],
      body: {},
    });
    await waitForRecord(tableName, key, 'in_progress');
    await waitFor('the handler to start', () => app.runs.count('orders') === 1);
    await proxy.close();
    app.app.get(Gate).release();
    const failed = await answer;
    expect(failed.status).toBe(status);
    await waitFor(
      'the failed release',
      () => app.logs.find('error', 'Idempotency store unavailable (release)').length === 1,
    );
  }

  async function retry(key: string, path = '/orders') {
    const next = await startApp(false);
    try {
      const response = await send(next.url, path, {
        headers: [['x-idempotency-key', key]],
        body: {},
      });
      return { response, runs: next.runs.count('orders') };
    } finally {
      await next.app.close();
    }
  }

  // A plain route answers the handler's error (500); a transactional one 503, its
  // rollback having failed too.
  it.each([
    ['', '/orders', 500],
    ['transactional ', '/tx-orders', 503],
  ])(
    '%sreleases the key before closing once the database answers: a retry runs the handler again',
    async (_, path, status) => {
      const key = randomUUID();
      const first = await startApp(true);
      let closedAfter: number;
      try {
        await failDuringBlip(first, key, path, status);
        // Background retries back off (250 ms, 500, 1 s, 2 s...): the database comes back
        // between two of them, and the deploy stops the app at once.
        await sleep(2_000);
        await proxy.open();
      } finally {
        const closing = Date.now();
        await first.app.close();
        closedAfter = Date.now() - closing;
      }
      // Well within the lease: the key is free, so the retry runs the handler (201), not 423.
      const { response, runs } = await retry(key, path);
      expect({ status: response.status, body: response.json }).toEqual({
        status: 201,
        body: { run: 1 },
      });
      expect(first.runs.count('orders') + runs).toBe(2);
      expect(first.logs.find('log', 'on retry')).toHaveLength(1);
      expect(closedAfter).toBeLessThan(2 * STATEMENT_TIMEOUT_MS + 1_000);
    },
    30_000,
  );

  it('with the database still away, shutdown makes one bounded attempt and does not wait out the lease', async () => {
    const key = randomUUID();
    const first = await startApp(true);
    let closedAfter: number;
    try {
      await failDuringBlip(first, key);
    } finally {
      const closing = Date.now();
      await first.app.close();
      closedAfter = Date.now() - closing;
    }
    expect(closedAfter).toBeLessThan(2 * STATEMENT_TIMEOUT_MS + 1_000);
    expect(first.logs.find('error', 'stays held until its lease passes')).toHaveLength(1);

    // The key stays held (the release never reached the database): 423, the handler does not run.
    await proxy.open();
    const { response, runs } = await retry(key);
    expectProblem(response, 423, 'idempotency_request_in_flight');
    expect(runs).toBe(0);
  }, 30_000);
});
