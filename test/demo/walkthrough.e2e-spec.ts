// Runs the `npm run demo` walkthrough against the example app on the test database and
// checks that every step held and that exactly the implied number of bookings exist.
import { randomBytes } from 'node:crypto';
import { startBookingsApp, type RunningBookingsApp } from '../../example/bookings-app.js';
import { runWalkthrough, type WalkthroughResult } from '../../example/demo/walkthrough.js';

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
  }, 60_000);

  afterAll(async () => {
    if (!app) return;
    try {
      await app.dataSource.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    } finally {
      await app.close();
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
      'Two at once while the first is slow',
      'The same key with another body',
      'No key',
      'A bad key',
      'The retrying client',
    ]);
    expect(result.ok).toBe(true);
  });

  it('creates exactly the bookings the steps imply: 1 + 0 + 1 + 0 + 2 + 0 + 1', async () => {
    expect(result.expectedBookings).toBe(5);
    expect(result.createdBookings).toBe(5);
    expect(result.distinctBookingIds).toBe(5);
    const [{ count }] = await app.dataSource.query(
      `SELECT count(*)::int AS count FROM ${schema}.bookings`,
    );
    expect(count).toBe(5);
  });

  it('stores one completed idempotency record per key that succeeded, in the partner scope', async () => {
    const rows: { scope: string; state: string }[] = await app.dataSource.query(
      `SELECT scope, state FROM ${schema}.idempotency_records ORDER BY created_at`,
    );
    // first, concurrent and client keys; the 422, 400 and keyless requests store nothing.
    expect(rows).toEqual([
      { scope: 'user:ACME01', state: 'completed' },
      { scope: 'user:ACME01', state: 'completed' },
      { scope: 'user:ACME01', state: 'completed' },
    ]);
  });
});
