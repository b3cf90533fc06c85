// The Python client of the published document, run unmodified (only its URL, headers,
// payload and key filled in) against the example app under Express and Fastify: it prints
// the booking for a new key and the same booking, with its duplicate warning, for a
// repeat or a duplicate sent while the first runs; its trailing-slash URL is the same
// request as the URL without it. When the first outlasts the route's wait it prints 423
// (it never retries a POST), and the README's corrected client retries and gets the booking.
// Runs where python3 has `requests`; CI sets REQUIRE_PYTHON_CLIENT=1 so it cannot be skipped.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DEMO_PARTNERS } from '../../example/auth/partner-auth.guard.js';
import { BOOKING_WAIT_MS, DEMO_DELAY_HEADER } from '../../example/bookings/bookings.controller.js';
import { startBookingsApp, type RunningBookingsApp } from '../../example/bookings-app.js';
import {
  PUBLISHED_CLIENT,
  fillPublishedClient,
  findPython,
  printedBookingId,
  runPythonClient,
  startPythonClient,
  type ClientRun,
  type Python,
} from '../../example/demo/published-client.js';
import { bookingRequest } from '../support/booking-request.js';
import { send } from '../support/http.js';
import { waitFor } from '../support/processes.js';
import { ADAPTERS, dropSchema } from '../support/test-app.js';

const TOKEN = 'demo-token-acme';
const PARTNER = DEMO_PARTNERS[TOKEN];
const WARNING = 'duplicated xcover request';

// Each test below has 120 s: it runs python3 once or twice, and on a loaded 2-CPU machine
// one start (importing requests) can take tens of seconds; 60 s was once not enough.

/** The corrected client of the README: the python block that sets allowed_methods. */
function readmeClient(): string {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const blocks = [...readme.matchAll(/```python\n([\s\S]*?)```/g)].map((m) => m[1]);
  const corrected = blocks.filter((block) => block.includes('allowed_methods'));
  expect(corrected).toHaveLength(1);
  return corrected[0];
}

let python: Python | { missing: string };
beforeAll(async () => {
  python = await findPython();
}, 30_000);

it('finds python3 with requests, or is allowed to do without', () => {
  if ('missing' in python) {
    console.log(`The published Python client tests did not run: ${python.missing}`);
    expect(process.env.REQUIRE_PYTHON_CLIENT).not.toBe('1');
  } else {
    expect(python.versions).toMatch(/^Python 3\.\d+\.\d+, requests \S+, urllib3 \S+$/);
  }
});

describe.each(ADAPTERS)('the published Python client against the example on %s', (adapter) => {
  const schema = `published_client_${randomBytes(4).toString('hex')}`;
  let app: RunningBookingsApp;

  const available = () => !('missing' in python);
  const script = (source: string, key: string, price: number) =>
    fillPublishedClient(source, {
      url: `${app.url}/x/partners/${PARTNER}/instant_booking/`,
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
      payload: bookingRequest(price),
      key,
    });
  const runClient = (key: string, price: number, source = PUBLISHED_CLIENT): Promise<ClientRun> =>
    runPythonClient((python as Python).command, script(source, key, price));
  /** A first booking that takes `delayMs`, sent by fetch (the client cannot send the knob). */
  const slowFirst = (key: string, price: number, delayMs: number) =>
    send(app.url, `/x/partners/${PARTNER}/instant_booking`, {
      headers: [
        ['authorization', `Bearer ${TOKEN}`],
        ['x-idempotency-key', key],
        [DEMO_DELAY_HEADER, String(delayMs)],
      ],
      body: bookingRequest(price),
    });
  /**
   * Starts clients, then the slow first request, then lets the clients send theirs once the
   * first has claimed its key (not after a fixed pause: on a loaded machine the first may not
   * have claimed yet, and a client's duplicate would then run first).
   */
  async function duplicatesOfSlowFirst(
    key: string,
    price: number,
    delayMs: number,
    sources: string[],
  ) {
    const clients = sources.map((source) =>
      startPythonClient((python as Python).command, script(source, key, price)),
    );
    await Promise.all(clients.map((client) => client.ready));
    const first = slowFirst(key, price, delayMs);
    await waitFor('the first request to claim its key', async () => {
      const rows: Array<{ state: string }> = await app.dataSource.query(
        `SELECT state FROM ${schema}.idempotency_records WHERE idempotency_key = $1`,
        [key],
      );
      return rows[0]?.state === 'in_progress';
    });
    for (const client of clients) client.go();
    return { first: await first, runs: await Promise.all(clients.map((client) => client.done)) };
  }
  const bookings = async (): Promise<number> =>
    (await app.dataSource.query(`SELECT count(*)::int AS n FROM ${schema}.bookings`))[0].n;

  beforeAll(async () => {
    if (!available()) return;
    app = await startBookingsApp({
      databaseUrl: process.env.DATABASE_URL!,
      port: 0,
      schema,
      adapter,
      logger: false,
    });
  }, 120_000);
  afterAll(async () => {
    if (!app) return;
    try {
      await app.close();
    } finally {
      await dropSchema(schema);
    }
  });

  it('prints the booking for a new key, then the same booking with its warning for a repeat', async () => {
    if (!available()) return;
    const key = randomUUID();
    const before = await bookings();
    const fresh = await runClient(key, 42.5);
    expect(fresh).toMatchObject({ code: 0, stderr: '' });
    const id = printedBookingId(fresh.stdout);
    expect(fresh.stdout).toContain(`'partner_id': '${PARTNER}'`);
    expect(fresh.stdout).toContain(`'total_price': 42.5`);
    const repeat = await runClient(key, 42.5);
    expect(repeat.code).toBe(0);
    expect(repeat.stdout).toBe(fresh.stdout);
    expect(repeat.stderr.trim()).toBe(WARNING);
    expect(await bookings()).toBe(before + 1);
    const [row] = await app.dataSource.query(
      `SELECT partner_id FROM ${schema}.bookings WHERE id = $1`,
      [id],
    );
    expect(row).toEqual({ partner_id: PARTNER });

    // Its URL ends in a slash; the same request without it is the same request: a replay.
    const withoutSlash = await send(app.url, `/x/partners/${PARTNER}/instant_booking`, {
      headers: [
        ['authorization', `Bearer ${TOKEN}`],
        ['x-idempotency-key', key],
      ],
      body: bookingRequest(42.5),
    });
    expect(withoutSlash.status).toBe(409);
    expect(withoutSlash.json).toMatchObject({ id, partner_id: PARTNER });
    expect(withoutSlash.headers['x-idempotency-original-status']).toBe('200');
    expect(await bookings()).toBe(before + 1);
  }, 120_000);

  it('a duplicate sent while the first runs waits for it, and prints that booking with its warning', async () => {
    if (!available()) return;
    const key = randomUUID();
    const before = await bookings();
    // A quarter of the route's wait: the duplicate, sent once the first has claimed, must be
    // answered by the first's completion before its own wait ends, with room for a loaded
    // machine (at half the wait it once printed no booking).
    const { first, runs } = await duplicatesOfSlowFirst(key, 19.99, BOOKING_WAIT_MS / 4, [
      PUBLISHED_CLIENT,
    ]);
    expect(first.status).toBe(200);
    expect(runs[0].code).toBe(0);
    expect(printedBookingId(runs[0].stdout)).toBe(first.json.id);
    expect(runs[0].stderr.trim()).toBe(WARNING);
    expect(await bookings()).toBe(before + 1);
  }, 120_000);

  it('when the first outlasts the wait: the published client prints 423, the README client retries to the booking', async () => {
    if (!available()) return;
    const key = randomUUID();
    const before = await bookings();
    // Outlasts the wait by 3 s, so that a duplicate sent late on a loaded machine still
    // waits out the route's wait while the first runs.
    const { first, runs } = await duplicatesOfSlowFirst(key, 77.7, BOOKING_WAIT_MS + 3_000, [
      PUBLISHED_CLIENT,
      readmeClient(),
    ]);
    const [published, corrected] = runs;
    expect(first.status).toBe(200);
    // urllib3 never retries a POST unless allowed_methods says so: one try, then 423.
    expect(published).toMatchObject({ code: 0, stdout: '423\n', stderr: '' });
    // The corrected client retried after Retry-After and got the first booking, as a 409.
    expect(corrected.code).toBe(0);
    expect(printedBookingId(corrected.stdout)).toBe(first.json.id);
    expect(corrected.stderr.trim()).toBe(WARNING);
    expect(await bookings()).toBe(before + 1);
  }, 120_000);
});
