// Graceful shutdown during a database blip: a handler ran and answered, but its response
// could not be stored because Postgres was unreachable at that moment; the app is then asked
// to shut down (a deploy) and the database comes back a second later. The response must
// still be stored (shutdown waits for the background store, as it waits for a first store),
// so a retry replays it instead of running the handler again once the lease has passed.
import { randomUUID } from 'node:crypto';
import { send } from '../support/http.js';
import { expectReplayOf } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { ADAPTERS, createTestApp, dropTable, sleep, uniqueTableName } from '../support/test-app.js';

const BOOKINGS = '/x/partners/p1/bookings';
const LEASE_MS = 4_000;

describe.each(ADAPTERS)('shutdown during a database outage under %s', (adapter) => {
  const tableName = uniqueTableName('idem_shutdown_outage');
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

  it('stores the response whose first store failed before closing, so a retry replays it', async () => {
    const key = randomUUID();
    const body = { product: 'deploy-during-blip', delayMs: 800 };
    const first = await createTestApp(adapter, {
      tableName,
      connection: {
        type: 'postgres',
        url: proxy.url(process.env.DATABASE_URL!),
        connectTimeoutMS: 1_000,
      },
      leaseMs: LEASE_MS,
      statementTimeoutMs: 1_000,
    });
    const answer = send(first.url, BOOKINGS, {
      headers: [
        ['x-idempotency-key', key],
        ['connection', 'close'],
      ],
      body,
    });
    await waitFor('the handler to start', () => first.runs.count('book') === 1);
    // The database goes away while the handler runs: its response cannot be stored.
    await proxy.close();
    const ran = await answer;
    expect({ status: ran.status, body: ran.text }).toMatchObject({ status: 201 });
    // A deploy stops the app now; the database is back a second later.
    const closing = first.app.close();
    await sleep(1_000);
    await proxy.open();
    await closing;

    // After the lease, a retry on a new instance replays the stored response: no second run.
    await sleep(LEASE_MS);
    const second = await createTestApp(adapter, { tableName, leaseMs: LEASE_MS });
    try {
      expectReplayOf(
        await send(second.url, BOOKINGS, { headers: [['x-idempotency-key', key]], body }),
        ran,
      );
      expect(second.runs.count('book')).toBe(0);
    } finally {
      await second.app.close();
    }
  }, 30_000);
});
