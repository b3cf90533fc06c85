// The README's "Metrics and tracing" recipes, run as written (example/metrics holds them; the
// README shows the same code): Prometheus counters through prom-client, and OpenTelemetry
// metrics and spans through @opentelemetry/api with the SDK's in-memory reader and exporter,
// after a new key, a replay, a 423 and a 422, under Express and Fastify.
import { metrics, SpanStatusCode, trace } from '@opentelemetry/api';
import { MeterProvider, MetricReader, type DataPoint } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import type { Subscription } from 'rxjs';
import { recordIdempotencyTelemetry } from '../../example/metrics/idempotency-opentelemetry.js';
import { recordIdempotencyMetrics } from '../../example/metrics/idempotency-prometheus.js';
import { IdempotencyEvents, idempotencyKeyHash } from '../../src/index.js';
import { EventLog } from '../support/events.js';
import { send } from '../support/http.js';
import { expectProblem, expectReplayOf, expectRetryable } from '../support/problem.js';
import { ADAPTERS, createTestApp, type TestApp } from '../support/test-app.js';

const BOOKINGS = '/x/partners/p1/bookings';
const HANDLER = 'BookingsController.book';

/** A new key, its replay, a duplicate in flight (423) and a reused key (422). */
async function runOutcomes(t: TestApp, log: EventLog): Promise<void> {
  const post = (key: string, body: object) =>
    send(t.url, BOOKINGS, { headers: [['x-idempotency-key', key]], body });
  const first = randomUUID();
  const created = await post(first, { product: 'a' });
  expect(created.status).toBe(201);
  expectReplayOf(await post(first, { product: 'a' }), created);
  const slow = randomUUID();
  const running = post(slow, { product: 'b', delayMs: 400 });
  await log.wait('claimed', idempotencyKeyHash('', slow));
  expectRetryable(
    await post(slow, { product: 'b', delayMs: 400 }),
    423,
    'idempotency_request_in_flight',
  );
  expect((await running).status).toBe(201);
  expectProblem(await post(first, { product: 'other' }), 422, 'idempotency_key_reused');
  await log.wait('completed', idempotencyKeyHash('', slow));
  expect(t.runs.count('book')).toBe(2);
}

/** `name{labels} value` lines of a Prometheus exposition, as a map. */
function samples(exposition: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of exposition.split('\n')) {
    const match = /^(\S+) (\S+)$/.exec(line);
    if (match && !line.startsWith('#')) values.set(match[1], Number(match[2]));
  }
  return values;
}

describe.each(ADAPTERS)('the Prometheus recipe under %s', (adapter) => {
  let t: TestApp;
  let log: EventLog;
  let subscription: Subscription;
  const registry = new Registry();

  beforeAll(async () => {
    t = await createTestApp(adapter, { purge: { enabled: false }, logger: false });
    log = new EventLog();
    subscription = recordIdempotencyMetrics(t.app.get(IdempotencyEvents), [registry]);
  }, 30_000);
  afterAll(async () => {
    subscription?.unsubscribe();
    log?.close();
    await t?.close();
  });

  it('counts each outcome by handler, and times claims, handlers and store steps', async () => {
    await runOutcomes(t, log);
    const values = samples(await registry.metrics());
    const count = (type: string) =>
      values.get(`idempotency_events_total{type="${type}",handler="${HANDLER}"}`);
    expect({
      claimed: count('claimed'),
      completed: count('completed'),
      replayed: count('replayed'),
      inFlight: count('in-flight'),
      mismatch: count('mismatch'),
    }).toEqual({ claimed: 2, completed: 2, replayed: 1, inFlight: 1, mismatch: 1 });
    expect(values.get('idempotency_duration_seconds_count{type="claimed",phase="claim"}')).toBe(2);
    expect(values.get('idempotency_duration_seconds_count{type="completed",phase="handler"}')).toBe(
      2,
    );
    expect(values.get('idempotency_duration_seconds_count{type="completed",phase="store"}')).toBe(
      2,
    );
    expect(
      values.get('idempotency_duration_seconds_sum{type="completed",phase="handler"}'),
    ).toBeGreaterThan(0.4);
  });
});

class CollectingReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

describe.each(ADAPTERS)('the OpenTelemetry recipe under %s', (adapter) => {
  let t: TestApp;
  let log: EventLog;
  let stop: () => void;
  const reader = new CollectingReader();
  const spans = new InMemorySpanExporter();

  beforeAll(async () => {
    // The API's global providers are set once per process; each adapter gets fresh ones.
    metrics.disable();
    trace.disable();
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
    trace.setGlobalTracerProvider(
      new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }),
    );
    stop = recordIdempotencyTelemetry();
    t = await createTestApp(adapter, { purge: { enabled: false }, logger: false });
    log = new EventLog();
  }, 30_000);
  afterAll(async () => {
    stop?.();
    log?.close();
    await t?.close();
    metrics.disable();
    trace.disable();
  });

  it('counts each outcome, records durations and ends a span per claim and settlement', async () => {
    await runOutcomes(t, log);
    const { resourceMetrics } = await reader.collect();
    const all = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics);
    const points = (name: string) =>
      all.find((metric) => metric.descriptor.name === name)!.dataPoints as Array<DataPoint<any>>;
    const count = (type: string) =>
      points('idempotency.events').find(
        (point) =>
          point.attributes['idempotency.event'] === type &&
          point.attributes['idempotency.handler'] === HANDLER,
      )?.value;
    expect({
      claimed: count('claimed'),
      completed: count('completed'),
      replayed: count('replayed'),
      inFlight: count('in-flight'),
      mismatch: count('mismatch'),
    }).toEqual({ claimed: 2, completed: 2, replayed: 1, inFlight: 1, mismatch: 1 });
    const handlerTimes = points('idempotency.duration').find(
      (point) =>
        point.attributes['idempotency.event'] === 'completed' &&
        point.attributes['idempotency.phase'] === 'handler',
    );
    expect(handlerTimes?.value.count).toBe(2);

    const names = spans.getFinishedSpans().map((span) => span.name);
    expect(names.filter((name) => name === 'idempotency claimed')).toHaveLength(2);
    expect(names.filter((name) => name === 'idempotency completed')).toHaveLength(2);
    expect(names.filter((name) => name === 'idempotency in-flight')).toHaveLength(1);
    const replay = spans.getFinishedSpans().find((span) => span.name === 'idempotency replayed')!;
    expect(replay.attributes).toEqual({
      'idempotency.event': 'replayed',
      'idempotency.handler': HANDLER,
      'idempotency.key_hash': expect.stringMatching(/^[0-9a-f]{16}$/),
    });
    expect(replay.status.code).toBe(SpanStatusCode.UNSET);
  });
});

describe('the recipes in the README', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  it.each(['idempotency-prometheus.ts', 'idempotency-opentelemetry.ts'])(
    'shows example/metrics/%s as it is tested',
    (file) => {
      const code = readFileSync(new URL(`../../example/metrics/${file}`, import.meta.url), 'utf8')
        // The README imports the package by name, as applications do.
        .replace(/'\.\.\/\.\.\/src\/index\.js'/g, "'nest-idempotency-pg'");
      expect(readme).toContain('```ts\n' + code + '```');
    },
  );
});
