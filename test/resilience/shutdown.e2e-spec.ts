// Graceful shutdown: app.close() with a slow request in flight waits for it, and its result
// is stored before the DataSource closes, so a new app on the same table replays it.
import { randomUUID } from 'node:crypto';
import { send } from '../support/http.js';
import { expectReplayOf } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import { ADAPTERS, createTestApp, dropTable, uniqueTableName } from '../support/test-app.js';

const BOOKINGS = '/x/partners/p1/bookings';

describe.each(ADAPTERS)('graceful shutdown under %s', (adapter) => {
  const tableName = uniqueTableName('idem_shutdown');
  afterAll(async () => {
    await dropTable(tableName);
  });

  it('waits for the request in flight and stores its result for replay after a restart', async () => {
    const key = randomUUID();
    const body = { product: 'shutdown', delayMs: 1_200 };
    const first = await createTestApp(adapter, { tableName });
    // `Connection: close`: otherwise the HTTP server's close also waits out the keep-alive
    // timeout (5 s) of the connection once its response is sent.
    const inFlight = send(first.url, BOOKINGS, {
      headers: [
        ['x-idempotency-key', key],
        ['connection', 'close'],
      ],
      body,
    });
    let closedAfter: number;
    try {
      await waitFor('the handler to start', () => first.runs.count('book') === 1);
    } finally {
      const closing = Date.now();
      await first.app.close();
      closedAfter = Date.now() - closing;
    }
    const answer = await inFlight;
    expect({ status: answer.status, body: answer.text }).toMatchObject({ status: 201 });
    expect(closedAfter).toBeGreaterThanOrEqual(800); // it waited for the handler
    expect(closedAfter).toBeLessThan(4_000);

    const second = await createTestApp(adapter, { tableName });
    try {
      expectReplayOf(
        await send(second.url, BOOKINGS, { headers: [['x-idempotency-key', key]], body }),
        answer,
      );
      expect(second.runs.count('book')).toBe(0);
    } finally {
      await second.app.close();
    }
  }, 30_000);
});
