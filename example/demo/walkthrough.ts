// The guided walkthrough behind `npm run demo`: sends the requests of every row of the
// contract to a running bookings app, prints what goes out and what comes back, checks each
// answer, and finally compares the bookings actually created with what the steps imply.
// Importable, so the test suite runs exactly what a newcomer sees.
import { STATUS_CODES } from 'node:http';
import { randomUUID } from 'node:crypto';
import { IdempotentClient, type IdempotentClientOptions } from '../../src/client/index.js';
import { BOOKING_WAIT_MS, DEMO_DELAY_HEADER } from '../bookings/bookings.controller.js';
import {
  PUBLISHED_CLIENT,
  fillPublishedClient,
  findPython,
  printedBookingId,
  startPythonClient,
  type ClientRun,
} from './published-client.js';

export interface WalkthroughOptions {
  /** Base URL of the bookings app, e.g. `http://127.0.0.1:3000`. */
  baseUrl: string;
  /**
   * Partner token to book with (see DEMO_PARTNERS).
   * @default 'demo-token-acme'
   */
  token?: string;
  /**
   * The partner that token belongs to.
   * @default 'ACME01'
   */
  partnerId?: string;
  /**
   * How long the "slow" bookings take, in milliseconds: longer than the route's wait
   * (BOOKING_WAIT_MS), so a duplicate's wait runs out and it gets 423.
   * @default 3000
   */
  slowMs?: number;
  /**
   * How long the bookings a duplicate waits for take, in milliseconds: well within the
   * route's wait, and far longer than a round trip.
   * @default 400
   */
  briefMs?: number;
  /** Overrides for the retrying client (the tests shorten its backoff). */
  client?: IdempotentClientOptions;
  /**
   * Where the narration goes.
   * @default console.log
   */
  log?: (line: string) => void;
}

export interface WalkthroughStep {
  title: string;
  /** Why the step did not run (the published Python client needs python3 with requests). */
  skipped?: string;
  /** What did not match the contract; empty when the step passed. */
  failures: string[];
  /** Bookings this step should have created. */
  expectedBookings: number;
}

export interface WalkthroughResult {
  ok: boolean;
  steps: WalkthroughStep[];
  /** Sum of what the steps imply. */
  expectedBookings: number;
  /** Bookings the partner gained during the walkthrough, counted by the API. */
  createdBookings: number;
  /** Distinct booking ids seen in the responses. */
  distinctBookingIds: number;
  /**
   * The app's idempotency counters from GET /metrics, by event type (every handler summed);
   * empty when the app serves none.
   */
  counters: Record<string, number>;
}

interface Sent {
  status: number;
  headers: Headers;
  body: string;
}

const SHOWN_HEADERS = [
  'location',
  'content-type',
  'idempotent-replayed',
  'x-idempotency-original-status',
  'retry-after',
];

export async function runWalkthrough(options: WalkthroughOptions): Promise<WalkthroughResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const token = options.token ?? 'demo-token-acme';
  const partnerId = options.partnerId ?? 'ACME01';
  const slowMs = options.slowMs ?? 3000;
  const briefMs = options.briefMs ?? 400;
  if (slowMs <= BOOKING_WAIT_MS || briefMs >= BOOKING_WAIT_MS) {
    throw new Error(
      `slowMs must exceed and briefMs stay under the route's wait (${BOOKING_WAIT_MS} ms).`,
    );
  }
  const base = options.baseUrl.replace(/\/$/, '');
  const bookPath = `/x/partners/${partnerId}/instant_booking`;
  const auth = { authorization: `Bearer ${token}` };
  // Fresh keys every run: the database may hold earlier runs' keys (they replay for 48 h).
  const run = randomUUID().slice(0, 8);
  const keyFor = (name: string) => `demo-${run}-${name}`;
  const steps: WalkthroughStep[] = [];
  const bookingIds = new Set<string>();
  let current: WalkthroughStep | undefined;

  const step = (title: string, expectedBookings: number, explain: string) => {
    current = { title, failures: [], expectedBookings };
    steps.push(current);
    log('');
    log(`── Step ${steps.length}: ${title}`);
    log(`   ${explain}`);
  };
  const check = (condition: boolean, failure: string) => {
    if (condition) return;
    current!.failures.push(failure);
    log(`   ✗ ${failure}`);
  };
  const pass = (what: string) => {
    if (current!.failures.length === 0) log(`   ✓ ${what}`);
  };

  const send = async (
    label: string,
    body: unknown,
    headers: Record<string, string> = {},
    method = 'POST',
    path = bookPath,
    quiet = false,
  ): Promise<Sent> => {
    const shown = Object.entries(headers)
      .map(
        ([name, value]) =>
          `${name}: ${value.length > 40 ? `${value.slice(0, 37)}...(${value.length} chars)` : value}`,
      )
      .join(', ');
    if (!quiet) log(`   → ${label}${method} ${path}${shown ? `  [${shown}]` : ''}`);
    const response = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...auth,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const sent = {
      status: response.status,
      headers: response.headers,
      body: await response.text(),
    };
    if (!quiet) printResponse(log, label, sent);
    const id = parseJson(sent.body)?.id;
    if (sent.status === 200 && typeof id === 'string') bookingIds.add(id);
    return sent;
  };

  const bookingCount = async (): Promise<number> => {
    const response = await fetch(`${base}/x/partners/${partnerId}/bookings`, {
      headers: auth,
      signal: AbortSignal.timeout(15_000),
    });
    if (response.status !== 200)
      throw new Error(`Counting bookings failed: ${response.status} ${await response.text()}`);
    return (JSON.parse(await response.text()) as { total: number }).total;
  };

  log(`Walkthrough against ${base} as partner ${partnerId} (keys start with demo-${run}-)`);
  const before = await bookingCount();
  log(`Partner ${partnerId} has ${before} booking(s) before we start.`);

  // 1. A new key runs the handler and answers with its own status.
  step(
    'A first booking',
    1,
    'A new key: the handler runs and its answer (200, as the published API answers) goes back as is.',
  );
  const alice = booking('Alice', 'travel', 42.5);
  const first = await send('', alice, { 'x-idempotency-key': keyFor('first') });
  check(first.status === 200, `expected 200, got ${first.status}`);
  check(!!first.headers.get('location'), 'expected a Location header');
  pass('200 OK: one booking');

  // 2. Same key, same request: the stored answer, byte for byte, as 409.
  step(
    'The same request again',
    0,
    'A retry with the same key and body: nothing runs again; the stored answer comes back as 409.',
  );
  const again = await send('', alice, { 'x-idempotency-key': keyFor('first') });
  check(again.status === 409, `expected 409, got ${again.status}`);
  check(again.body === first.body, 'expected the first response body, byte for byte');
  check(again.headers.get('idempotent-replayed') === 'true', 'expected Idempotent-Replayed: true');
  check(
    again.headers.get('x-idempotency-original-status') === '200',
    'expected x-idempotency-original-status: 200',
  );
  check(
    again.headers.get('location') === first.headers.get('location'),
    'expected the stored Location header',
  );
  pass('409 Conflict with the very same body: still one booking');
  const firstId = parseJson(first.body)?.id;
  if (typeof firstId === 'string') {
    const read = await send(
      'read it back: ',
      undefined,
      {},
      'GET',
      `/x/partners/${partnerId}/bookings/${firstId}`,
    );
    check(read.status === 200, `expected 200 from GET, got ${read.status}`);
  }

  // 3. Same key twice at once: one runs, the other waits for it and gets its answer.
  step(
    'Two at once: the duplicate waits for the first',
    1,
    `Both carry the same key; the handler takes ${briefMs} ms (${DEMO_DELAY_HEADER}, demo only). One runs; the other waits for it (the route waits up to ${BOOKING_WAIT_MS} ms) and gets its answer as 409.`,
  );
  const bob = booking('Bob', 'cancellation', 19.99);
  const briefHeaders = {
    'x-idempotency-key': keyFor('concurrent'),
    [DEMO_DELAY_HEADER]: String(briefMs),
  };
  const pair = await Promise.all([send('A: ', bob, briefHeaders), send('B: ', bob, briefHeaders)]);
  const statuses = pair.map((r) => r.status).sort();
  check(
    statuses[0] === 200 && statuses[1] === 409,
    `expected one 200 and one 409, got ${statuses.join(' and ')}`,
  );
  const waited = pair.find((r) => r.status === 409);
  const ran = pair.find((r) => r.status === 200);
  check(waited?.body === ran?.body, 'expected the 409 to carry the first response, byte for byte');
  check(
    waited?.headers.get('idempotent-replayed') === 'true',
    'expected Idempotent-Replayed: true on the 409',
  );
  pass('one 200, one 409 with the same body: one booking, and no 423 to retry');

  // 4. The first outlasts the wait: the duplicate is told to come back later.
  step(
    'Two at once, the first slower than the wait',
    1,
    `Now the handler takes ${slowMs} ms, longer than the route waits: the duplicate waits ${BOOKING_WAIT_MS} ms, then gets 423 Locked with Retry-After.`,
  );
  const ivan = booking('Ivan', 'cancellation', 21.5);
  const slowHeaders = {
    'x-idempotency-key': keyFor('outlasting'),
    [DEMO_DELAY_HEADER]: String(slowMs),
  };
  const slowPair = await Promise.all([
    send('A: ', ivan, slowHeaders),
    send('B: ', ivan, slowHeaders),
  ]);
  const slowStatuses = slowPair.map((r) => r.status).sort();
  check(
    slowStatuses[0] === 200 && slowStatuses[1] === 423,
    `expected one 200 and one 423, got ${slowStatuses.join(' and ')}`,
  );
  const locked = slowPair.find((r) => r.status === 423);
  check(!!locked?.headers.get('retry-after'), 'expected Retry-After on the 423');
  check(
    !!locked?.headers.get('content-type')?.startsWith('application/problem+json'),
    'expected problem+json on the 423',
  );
  pass('one 200, one 423 with Retry-After: one booking');

  // 5. Same key, different body: a client bug, refused.
  step(
    'The same key with another body',
    0,
    'Reusing a key for a different request is a client bug: 422, nothing runs.',
  );
  const reused = await send(
    '',
    { ...alice, quotes: [{ ...alice.quotes[0], price: 99 }] },
    { 'x-idempotency-key': keyFor('first') },
  );
  check(reused.status === 422, `expected 422, got ${reused.status}`);
  check(
    parseJson(reused.body)?.code === 'idempotency_key_reused',
    'expected code idempotency_key_reused',
  );
  pass('422 idempotency_key_reused: no booking');

  // 6. No key: the module stays out of the way, so a retry books twice.
  step(
    'No key',
    2,
    'Without a key the route works as if the module were absent: the same request twice books twice.',
  );
  const carol = booking('Carol', 'travel', 10);
  const once = await send('', carol);
  const twice = await send('', carol);
  check(
    once.status === 200 && twice.status === 200,
    `expected 200 twice, got ${once.status} and ${twice.status}`,
  );
  check(parseJson(once.body)?.id !== parseJson(twice.body)?.id, 'expected two different bookings');
  pass('200 twice: two bookings (this is why clients should send a key)');

  // 7. A malformed key is rejected before anything runs.
  step(
    'A bad key',
    0,
    'Keys are 1-255 printable ASCII characters; anything else is a 400 and nothing runs.',
  );
  const bad = await send('', booking('Dave', 'travel', 5), {
    'x-idempotency-key': 'k'.repeat(256),
  });
  check(bad.status === 400, `expected 400, got ${bad.status}`);
  check(
    parseJson(bad.body)?.code === 'idempotency_key_invalid',
    'expected code idempotency_key_invalid',
  );
  pass('400 idempotency_key_invalid: no booking');

  // 8. The retrying client rides out the 423 and takes the 409 as success.
  step(
    'The retrying client',
    1,
    'A slow first request (longer than the wait) is running when the client sends the same operation; the client retries through 423 (honouring Retry-After) until the stored result comes back as 409, which it treats as success.',
  );
  const erin = booking('Erin', 'travel', 77.7);
  const clientKey = keyFor('client');
  const slowFirst = send('first: ', erin, {
    'x-idempotency-key': clientKey,
    [DEMO_DELAY_HEADER]: String(slowMs),
  });
  await new Promise((resolve) => setTimeout(resolve, Math.min(200, slowMs / 4)));
  const client = new IdempotentClient({
    baseUrl: base,
    headers: auth,
    ...options.client,
    onRetry: (event) => {
      log(
        `   ↻ client: try ${event.attempt} got ${event.status ?? 'a network error'}; retrying in ${event.delayMs} ms with the same key`,
      );
      options.client?.onRetry?.(event);
    },
  });
  log(`   → client: POST ${bookPath}  [x-idempotency-key: ${clientKey}]`);
  let clientFailure: unknown;
  const result = await client.post(bookPath, erin, { key: clientKey }).catch((error: unknown) => {
    clientFailure = error;
    return undefined;
  });
  const original = await slowFirst;
  if (result) {
    log(
      `   ← client: ${result.status} ${STATUS_CODES[result.status]} after ${result.attempts} tries, replayed=${result.replayed}, original status ${result.originalStatus}`,
    );
    if (result.replayed)
      log('     (the Python example logs this as a warning: "duplicated request")');
  }
  check(
    !clientFailure,
    `the client failed: ${clientFailure instanceof Error ? clientFailure.message : String(clientFailure)}`,
  );
  check(original.status === 200, `expected the first request to get 200, got ${original.status}`);
  check(
    result?.status === 409 && result.replayed,
    `expected the client to end on a 409 replay, got ${result?.status}`,
  );
  check(
    (result?.attempts ?? 0) >= 2,
    `expected the client to retry at least once, it sent ${result?.attempts ?? 0} request(s)`,
  );
  check(result?.body === original.body, 'expected the client to get the first response body');
  pass(`the client saw 423, waited, and got the stored booking: one booking`);

  // 9. Events: the confirmation sender consumes booking.created once, however often it comes.
  step(
    'A redelivered event',
    1,
    'Each booking publishes booking.created; the confirmation sender consumes it with @Idempotent() keyed by the event id. Brokers deliver at least once, so the event is delivered twice more (DEMO ONLY endpoint): both are acknowledged without sending again.',
  );
  const frank = await send('', booking('Frank', 'travel', 12), {
    'x-idempotency-key': keyFor('event'),
  });
  check(frank.status === 200, `expected 200, got ${frank.status}`);
  const frankId = parseJson(frank.body)?.id;
  if (typeof frankId === 'string') {
    const confirmationsPath = `/x/partners/${partnerId}/bookings/${frankId}/confirmations`;
    let sent: Record<string, unknown> | undefined;
    for (let waited = 0; waited <= 10_000; waited += 50) {
      sent = parseJson((await send('', undefined, {}, 'GET', confirmationsPath, true)).body);
      if (Number(sent?.deliveries) >= 1) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    log(`   ← first delivery: sent ${sent?.sent} confirmation(s)`);
    check(sent?.sent === 1, `expected 1 confirmation after the first delivery, got ${sent?.sent}`);
    const redeliver = `/x/partners/${partnerId}/bookings/${frankId}/redeliver`;
    const second = parseJson((await send('redelivery 1: ', undefined, {}, 'POST', redeliver)).body);
    const third = parseJson((await send('redelivery 2: ', undefined, {}, 'POST', redeliver)).body);
    check(
      second?.deliveries === 2 && third?.deliveries === 3,
      `expected the sender to see 3 deliveries, saw ${third?.deliveries}`,
    );
    check(third?.sent === 1, `expected the count of sends to stay at 1, got ${third?.sent}`);
    pass(`3 deliveries of ${third?.event_id}, 1 confirmation sent: the repeats were skipped`);
  }

  // 10. The Python client of the published document, run as published.
  await publishedClientStep();

  async function publishedClientStep(): Promise<void> {
    const python = await findPython();
    step(
      'The published Python client',
      'missing' in python ? 0 : 2,
      'The Python example of the published document, unmodified: only its URL (with the trailing slash, as published), headers, payload and key are filled in. It treats 200 and 409 as success and logs a 409 as a duplicate; it never retries a POST, so a 423 would end it.',
    );
    if ('missing' in python) {
      current!.skipped = `${python.missing}; install Python 3 and "pip install requests" to run it`;
      log(`   - skipped: ${current!.skipped}`);
      return;
    }
    log(`   (${python.versions})`);
    const grace = booking('Grace', 'travel', 64.2);
    /** Starts the client for `key`; it sends its request when `go` resolves. */
    const run = async (label: string, key: string, go?: () => Promise<unknown>) => {
      const script = fillPublishedClient(PUBLISHED_CLIENT, {
        url: `${base}${bookPath}/`,
        headers: { ...auth, 'Content-Type': 'application/json' },
        payload: grace,
        key,
      });
      const client = startPythonClient(python.command, script);
      await client.ready;
      await go?.();
      log(`   → ${label}python3 published_client.py  [x-idempotency-key: ${key}]`);
      client.go();
      const result: ClientRun = await client.done;
      for (const line of result.stdout.trim().split('\n')) log(`   ← ${label}${truncate(line)}`);
      for (const line of result.stderr.trim().split('\n').filter(Boolean)) {
        log(`   ← ${label}(stderr) ${truncate(line)}`);
      }
      return result;
    };

    const newKey = keyFor('python');
    const fresh = await run('new key: ', newKey);
    const freshId = printedBookingId(fresh.stdout);
    check(fresh.code === 0, `expected the client to exit 0, got ${fresh.code}`);
    check(!!freshId, 'expected the client to print the booking');
    check(!fresh.stderr.includes('duplicated'), 'expected no duplicate warning for a new key');
    if (freshId) bookingIds.add(freshId);

    const repeat = await run('same key: ', newKey);
    check(repeat.stdout === fresh.stdout, 'expected the same booking printed again');
    check(
      repeat.stderr.includes('duplicated xcover request'),
      'expected the duplicate warning on the repeat',
    );

    // A duplicate while the first is still running: it waits and gets the replay.
    const concurrentKey = keyFor('python-concurrent');
    let firstRunning!: Promise<Sent>;
    const duplicate = await run('while it runs: ', concurrentKey, async () => {
      firstRunning = send('first: ', grace, {
        'x-idempotency-key': concurrentKey,
        [DEMO_DELAY_HEADER]: String(briefMs),
      });
      // Let the first request claim the key; the client's then arrives while it runs.
      await new Promise((resolve) => setTimeout(resolve, Math.min(150, briefMs / 3)));
    });
    const runningFirst = await firstRunning;
    check(runningFirst.status === 200, `expected 200 for the first, got ${runningFirst.status}`);
    check(
      printedBookingId(duplicate.stdout) === parseJson(runningFirst.body)?.id,
      "expected the client to print the first request's booking",
    );
    check(duplicate.stderr.includes('duplicated xcover request'), 'expected the duplicate warning');
    pass(
      'the booking, then the same booking with its duplicate warning, also for a duplicate sent while the first ran: two bookings',
    );
  }

  const after = await bookingCount();
  const expectedBookings = steps.reduce((sum, s) => sum + s.expectedBookings, 0);
  const createdBookings = after - before;
  const ok =
    steps.every((s) => s.failures.length === 0) &&
    createdBookings === expectedBookings &&
    bookingIds.size === expectedBookings;
  log('');
  log('── Result');
  for (const [index, s] of steps.entries()) {
    const mark = s.skipped ? '-' : s.failures.length === 0 ? '✓' : '✗';
    log(
      `   ${mark} ${index + 1}. ${s.title} (+${s.expectedBookings})${s.skipped ? ' skipped' : ''}`,
    );
  }
  log(
    `   Bookings expected: ${expectedBookings}; created (counted in the database through the API): ${createdBookings}; distinct ids returned: ${bookingIds.size}.`,
  );
  log(
    ok
      ? '   All good: every retry was safe.'
      : '   Something did not match the contract (see ✗ above).',
  );
  const counters = await printCounters(base, log);
  return {
    ok,
    steps,
    expectedBookings,
    createdBookings,
    distinctBookingIds: bookingIds.size,
    counters,
  };
}

/**
 * Prints what the app counted (GET /metrics, the Prometheus recipe of the README) and returns
 * the counts by event type. The app counts for its whole life: with DEMO_URL, earlier
 * requests are included.
 */
async function printCounters(
  base: string,
  log: (line: string) => void,
): Promise<Record<string, number>> {
  const counters: Record<string, number> = {};
  const response = await fetch(`${base}/metrics`).catch(() => undefined);
  log('');
  log('── What the app counted (GET /metrics)');
  if (!response?.ok) {
    log(`   No metrics: GET /metrics answered ${response?.status ?? 'nothing'}.`);
    return counters;
  }
  for (const line of (await response.text()).split('\n')) {
    const match = /^idempotency_events_total\{type="([^"]+)",handler="([^"]*)"\} (\S+)$/.exec(line);
    if (!match) continue;
    const [, type, handler, value] = match;
    counters[type] = (counters[type] ?? 0) + Number(value);
    log(`   ${type.padEnd(18)} ${handler.padEnd(40)} ${value}`);
  }
  return counters;
}

/** A valid instant-booking body. */
function booking(firstName: string, policyType: string, price: number) {
  return {
    currency: 'EUR',
    policyholder: {
      first_name: firstName,
      last_name: 'Example',
      email: `${firstName.toLowerCase()}@example.com`,
      country: 'DE',
    },
    quotes: [{ policy_type: policyType, policy_start_date: '2027-01-15', price }],
  };
}

function printResponse(log: (line: string) => void, label: string, sent: Sent): void {
  const headers = SHOWN_HEADERS.filter((name) => sent.headers.has(name))
    .map((name) => `${name}: ${sent.headers.get(name)}`)
    .join(', ');
  log(
    `   ← ${label}${sent.status} ${STATUS_CODES[sent.status] ?? ''}${headers ? `  [${headers}]` : ''}`,
  );
  if (sent.body)
    log(`     ${sent.body.length > 300 ? `${sent.body.slice(0, 297)}...` : sent.body}`);
}

function truncate(line: string): string {
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
