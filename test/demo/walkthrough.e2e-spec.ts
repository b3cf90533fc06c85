// Runs the `npm run demo` walkthrough against the example app on the test database and
// checks that every step held and that exactly the implied number of bookings exist.
import { randomBytes } from 'node:crypto';
import { startBookingsApp, type RunningBookingsApp } from '../../example/bookings-app.js';
import { findPython } from '../../example/demo/published-client.js';
import { runWalkthrough, type WalkthroughResult } from '../../example/demo/walkthrough.js';
import { dropSchema } from '../support/test-app.js';

describe('npm run demo walkthrough', () => {
  // A schema of its own: other test files use the default tables in parallel.
  const schema = `demo_walkthrough_${randomBytes(4).toString('hex')}`;
  const lines: string[] = [];
  let app: RunningBookingsApp;
  let result: WalkthroughResult;

  beforeAll(async () => {
    app = await startBookingsApp({
      databaseUrl: process.env.DATABASE_URL!,
      port: 0,
      host: '127.0.0.1',
      schema,
      logger: false,
    });
    result = await runWalkthrough({ baseUrl: app.url, log: (line) => lines.push(line) });
    // About 20 s alone; it starts python3 three times, and each start takes tens of seconds
    // on a loaded 2-CPU machine (60 s, then 180 s, were each exceeded there once).
  }, 300_000);

  /** Confirmations per booking, once every booking's event has been consumed. */
  async function waitForConfirmations(bookings: number) {
    const query = () =>
      app.dataSource.query(
        `SELECT b.id, count(c.id)::int AS sent FROM ${schema}.bookings b
           LEFT JOIN ${schema}.confirmations c ON c.booking_id = b.id GROUP BY b.id`,
      );
    for (let waited = 0; waited < 10_000; waited += 50) {
      const rows = await query();
      if (rows.length === bookings && rows.every((row: { sent: number }) => row.sent > 0)) {
        return { rows };
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return { rows: await query() };
  }

  afterAll(async () => {
    if (!app) return;
    try {
      await app.close();
    } finally {
      await dropSchema(schema);
    }
  });

  it('passes every step', () => {
    const failed = result.steps.filter((step) => step.failures.length > 0);
    // On failure, the narration says what was sent and what came back.
    if (failed.length > 0) console.log(lines.join('\n'));
    expect(failed).toEqual([]);
    expect(result.steps.map((step) => step.title)).toEqual([
      'A first booking',
      'The same request again',
      'Two at once: the duplicate waits for the first',
      'Two at once, the first slower than the wait',
      'The same key with another body',
      'No key',
      'A bad key',
      'The retrying client',
      'A redelivered event',
      'The published Python client',
    ]);
    expect(result.ok).toBe(true);
  });

  it('runs the published Python client where python3 has requests (CI requires it)', async () => {
    const python = await findPython();
    const step = result.steps.find((s) => s.title === 'The published Python client')!;
    if ('missing' in python) {
      expect(process.env.REQUIRE_PYTHON_CLIENT).not.toBe('1');
      expect(step.skipped).toContain(python.missing);
      expect(step.expectedBookings).toBe(0);
      console.log(`The published Python client did not run: ${python.missing}`);
      return;
    }
    expect(step.skipped).toBeUndefined();
    expect(step.expectedBookings).toBe(2);
    expect(lines.join('\n')).toContain('(stderr) duplicated xcover request');
  });

  it('creates exactly the bookings the steps imply: 1 + 0 + 1 + 1 + 0 + 2 + 0 + 1 + 1 (+ 2 from Python)', async () => {
    const python = result.steps.at(-1)!.expectedBookings;
    expect(result.expectedBookings).toBe(7 + python);
    expect(result.createdBookings).toBe(7 + python);
    expect(result.distinctBookingIds).toBe(7 + python);
    const [{ count }] = await app.dataSource.query(
      `SELECT count(*)::int AS count FROM ${schema}.bookings`,
    );
    expect(count).toBe(7 + python);
  });

  it('sends one confirmation per booking, though one event was delivered three times', async () => {
    const bookings = 7 + result.steps.at(-1)!.expectedBookings;
    const event = result.steps.find((step) => step.title === 'A redelivered event')!;
    expect(event.failures).toEqual([]);
    expect(lines.join('\n')).toMatch(
      /3 deliveries of booking\.created:[0-9a-f-]+, 1 confirmation sent/,
    );
    const { rows } = await waitForConfirmations(bookings);
    expect(rows.every((row: { sent: number }) => row.sent === 1)).toBe(true);
    expect(rows).toHaveLength(bookings);
  });

  it('ends by printing what the app counted at GET /metrics, every outcome it showed included', () => {
    const python = result.steps.at(-1)!.expectedBookings;
    const text = lines.join('\n');
    expect(text).toContain('── What the app counted (GET /metrics)');
    expect(text).toMatch(/replayed\s+BookingsController\.\w+\s+\d+/);
    // Each keyed booking claimed and completed once (the two keyless ones are not tracked),
    // and each booking's event once by the confirmation sender.
    expect(result.counters.claimed).toBe(5 + python + (7 + python));
    expect(result.counters.completed).toBe(5 + python + (7 + python));
    // Redelivered events, and the retries that a 409 answered.
    expect(result.counters.replayed).toBeGreaterThanOrEqual(3);
    expect(result.counters['in-flight']).toBeGreaterThanOrEqual(1);
    expect(result.counters.mismatch).toBe(1);
    expect(result.counters.rejected).toBe(1);
  });

  it('stores one completed idempotency record per key that succeeded, in the partner scope', async () => {
    const rows: { scope: string; state: string }[] = await app.dataSource.query(
      `SELECT scope, state FROM ${schema}.idempotency_records ORDER BY created_at`,
    );
    // first, concurrent, outlasting, client, event and (with Python) two keys; the 422, 400
    // and keyless requests store nothing. The confirmation sender's records live in its own
    // namespace.
    const python = result.steps.at(-1)!.expectedBookings;
    const completed = { scope: 'user:ACME01', state: 'completed' };
    expect(rows.filter((row) => !row.scope.startsWith('rpc:'))).toEqual(
      Array.from({ length: 5 + python }, () => completed),
    );
    const events = rows.filter((row) => row.scope.startsWith('rpc:'));
    expect(new Set(events.map((row) => row.scope))).toEqual(
      new Set(['rpc:ConfirmationSender.send|']),
    );
    expect(events).toHaveLength(7 + python);
  });
});
