import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { IDEMPOTENCY_CHANNELS, idempotencyKeyHash } from './idempotency.events.js';
import { describeEvent, IdempotencyEvents } from './idempotency-events.service.js';
import { assertValidOptions } from './idempotency.options.js';

describe('IdempotencyEvents', () => {
  it('wants nothing while nobody listens and debug is off: callers then build no event', () => {
    const events = new IdempotencyEvents({ logger: false });
    expect(events.active).toBe(false);
    expect(events.wants('claimed')).toBe(false);
  });

  it('wants the events of a channel while it has a subscriber, and only those', () => {
    const events = new IdempotencyEvents({ logger: false });
    const received: unknown[] = [];
    const listener = (message: unknown) => received.push(message);
    subscribe(IDEMPOTENCY_CHANNELS.replayed, listener);
    try {
      expect(events.active).toBe(true);
      expect(events.wants('replayed')).toBe(true);
      expect(events.wants('claimed')).toBe(false);
      const event = {
        type: 'replayed',
        scope: 's',
        keyHash: 'h',
        claimMs: 1,
        waitedMs: 0,
        status: 201,
      } as const;
      events.emit(event);
      expect(received).toEqual([event]);
    } finally {
      unsubscribe(IDEMPOTENCY_CHANNELS.replayed, listener);
    }
    expect(events.wants('replayed')).toBe(false);
  });

  it('wants every event while events$ has a subscriber', () => {
    const events = new IdempotencyEvents({ logger: false });
    const subscription = events.events$.subscribe();
    expect(events.wants('purge-batch')).toBe(true);
    subscription.unsubscribe();
    expect(events.wants('purge-batch')).toBe(false);
  });

  it('writes one debug line per event to an application logger, with the context', () => {
    const lines: unknown[][] = [];
    const logger = {
      log() {},
      warn() {},
      error() {},
      debug: (...args: unknown[]) => lines.push(args),
    };
    const events = new IdempotencyEvents({ logger });
    expect(events.wants('claimed')).toBe(true);
    events.emit({
      type: 'held',
      handler: 'A.b',
      scope: '',
      keyHash: 'abc',
      reason: 'was cut off',
      handlerMs: 12.345,
    });
    expect(lines).toEqual([
      ['held handler=A.b scope="" keyHash=abc reason="was cut off" handlerMs=12.3', 'Idempotency'],
    ]);
  });

  it('describes an error by its message', () => {
    expect(
      describeEvent({
        type: 'store-unavailable',
        operation: 'claim',
        storeMs: 3,
        timedOut: false,
        error: new Error('connection refused'),
      }),
    ).toBe('store-unavailable operation=claim storeMs=3 timedOut=false error="connection refused"');
  });
});

describe('idempotencyKeyHash', () => {
  it('is 16 hex digits of SHA-256 over scope and key, and tells scopes apart', () => {
    expect(idempotencyKeyHash('user:1', 'k')).toMatch(/^[0-9a-f]{16}$/);
    expect(idempotencyKeyHash('user:1', 'k')).toBe(idempotencyKeyHash('user:1', 'k'));
    expect(idempotencyKeyHash('user:1', 'k')).not.toBe(idempotencyKeyHash('user:2', 'k'));
  });
});

describe('the logger option', () => {
  it('takes a LoggerService or false, and refuses anything else at start-up', () => {
    expect(() => assertValidOptions({ logger: false })).not.toThrow();
    expect(() => assertValidOptions({ logger: console })).not.toThrow();
    expect(() => assertValidOptions({ logger: 'debug' as never })).toThrow(
      /logger must be a Nest LoggerService .* or false, got "debug"/,
    );
    expect(() => assertValidOptions({ logger: true as never })).toThrow(/logger must be/);
  });
});
