// Prometheus metrics from the module's events (prom-client): how often each outcome happens,
// by handler, and how long claims, handlers and store steps take.
import { Counter, Histogram, register, type Registry } from 'prom-client';
import type { Subscription } from 'rxjs';
import type { IdempotencyEvents } from '../../src/index.js';

export function recordIdempotencyMetrics(
  events: IdempotencyEvents,
  registers: Registry[] = [register],
): Subscription {
  const outcomes = new Counter({
    name: 'idempotency_events_total',
    help: 'Idempotency outcomes (claimed, replayed, in-flight, mismatch...), by handler',
    labelNames: ['type', 'handler'] as const,
    registers,
  });
  const seconds = new Histogram({
    name: 'idempotency_duration_seconds',
    help: 'Time to claim a key, run the handler and settle the record',
    labelNames: ['type', 'phase'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers,
  });
  return events.events$.subscribe((event) => {
    outcomes.inc({ type: event.type, handler: event.handler ?? '' });
    const { type } = event;
    if ('claimMs' in event) seconds.observe({ type, phase: 'claim' }, event.claimMs / 1000);
    if ('handlerMs' in event) seconds.observe({ type, phase: 'handler' }, event.handlerMs / 1000);
    if ('storeMs' in event) seconds.observe({ type, phase: 'store' }, event.storeMs / 1000);
  });
}
