// OpenTelemetry metrics and spans from the module's diagnostics channels, with
// @opentelemetry/api only (the application's SDK decides where they go). Each claim and each
// settlement becomes a span, a child of the request's span when one is active.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { metrics, SpanStatusCode, trace } from '@opentelemetry/api';
import {
  IDEMPOTENCY_CHANNELS,
  IDEMPOTENCY_EVENT_TYPES,
  type IdempotencyEvent,
} from '../../src/index.js';

/** Subscribes; returns the function that unsubscribes. */
export function recordIdempotencyTelemetry(): () => void {
  const meter = metrics.getMeter('nest-idempotency-pg');
  const tracer = trace.getTracer('nest-idempotency-pg');
  const outcomes = meter.createCounter('idempotency.events', {
    description: 'Idempotency outcomes, by type and handler',
  });
  const durations = meter.createHistogram('idempotency.duration', {
    description: 'Time to claim a key, run the handler and settle the record',
    unit: 's',
  });
  const listener = (message: unknown) => {
    const event = message as IdempotencyEvent;
    const attributes = {
      'idempotency.event': event.type,
      'idempotency.handler': event.handler ?? '',
    };
    outcomes.add(1, attributes);
    const phases = [
      ['claim', 'claimMs' in event ? event.claimMs : undefined],
      ['handler', 'handlerMs' in event ? event.handlerMs : undefined],
      ['store', 'storeMs' in event ? event.storeMs : undefined],
    ] as const;
    for (const [phase, ms] of phases) {
      if (ms !== undefined)
        durations.record(ms / 1000, { ...attributes, 'idempotency.phase': phase });
    }
    // A span over the step the event ends: the claim, or the store step that settled it.
    const ms = 'claimMs' in event ? event.claimMs : 'storeMs' in event ? event.storeMs : undefined;
    if (ms === undefined || !event.keyHash) return;
    const span = tracer.startSpan(`idempotency ${event.type}`, {
      startTime: Date.now() - ms,
      attributes: { ...attributes, 'idempotency.key_hash': event.keyHash },
    });
    if (event.type === 'store-unavailable') {
      span.recordException(event.error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: event.error.message });
    }
    span.end();
  };
  for (const type of IDEMPOTENCY_EVENT_TYPES) subscribe(IDEMPOTENCY_CHANNELS[type], listener);
  return () => {
    for (const type of IDEMPOTENCY_EVENT_TYPES) unsubscribe(IDEMPOTENCY_CHANNELS[type], listener);
  };
}
