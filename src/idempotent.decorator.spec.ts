import { Idempotent } from './idempotent.decorator.js';
import type { IdempotentRouteOptions } from './idempotency-options.interface.js';

const loose = (options: Record<string, unknown>) => options as IdempotentRouteOptions;

describe('@Idempotent()', () => {
  it.each([
    [{ leaseMs: 0 }],
    [{ retentionMs: -1 }],
    [{ retryAfterSeconds: Number.NaN }],
    [{ replayStatus: 200 as unknown as 409 }],
    [loose({ required: 'yes' })],
    [loose({ scope: 'tenant' })],
    [loose({ storeErrors: 400 })],
    [loose({ replayHeaders: 'etag' })],
    [{ replayHeaders: ['x ray'] }],
    [{ key: '' }],
    [{ key: 42 as unknown as string }],
    [{ namespace: 1 as unknown as string }],
    [{ waitInFlightMs: -1 }],
    [loose({ waitInFlightMs: '5s' })],
  ])('rejects invalid options where it is applied: %o', (options) => {
    expect(() => Idempotent(options)).toThrow(/Idempotency option/);
  });

  it('rejects a fractional retryAfterSeconds: Retry-After is whole seconds', () => {
    expect(() => Idempotent({ retryAfterSeconds: 1.5 })).toThrow(
      'Idempotency option retryAfterSeconds must be a positive whole number of seconds (Retry-After has no fractions), got 1.5.',
    );
  });

  it('rejects a misspelled option, listing the valid names', () => {
    expect(() => Idempotent(loose({ requierd: true }))).toThrow(
      'Unknown idempotency option "requierd" in @Idempotent(). Valid options: required, retentionMs, leaseMs, renewLease, retryAfterSeconds, replayStatus, replayHeaders, storeErrors, scope, transactional, statementTimeoutMs, key, namespace, acknowledge, waitInFlightMs.',
    );
  });

  it('says where a module-wide option belongs', () => {
    expect(() => Idempotent(loose({ tableName: 'other' }))).toThrow(
      /tableName applies to the whole module: set it in IdempotencyModule\.forRoot\(\)/,
    );
  });

  it('says maxInFlightWaiters belongs to the module', () => {
    expect(() => Idempotent(loose({ maxInFlightWaiters: 10 }))).toThrow(
      /maxInFlightWaiters applies to the whole module/,
    );
  });

  it.each(['Set-Cookie', 'content-length', 'Transfer-Encoding', 'idempotent-replayed'])(
    'never replays %s',
    (name) => {
      expect(() => Idempotent({ replayHeaders: ['x-trace', name] })).toThrow(
        new RegExp(`replayHeaders cannot include ${name}: .*are never replayed`),
      );
    },
  );

  it('accepts valid options', () => {
    expect(() =>
      Idempotent({
        leaseMs: 1_000,
        replayStatus: 'original',
        retryAfterSeconds: 2,
        replayHeaders: ['X-Request-Id', 'link'],
        storeErrors: (status) => status === 402,
      }),
    ).not.toThrow();
    expect(() => Idempotent({ storeErrors: true })).not.toThrow();
    expect(() => Idempotent({ key: 'idempotency-key', namespace: '' })).not.toThrow();
    expect(() => Idempotent({ key: () => 'k', namespace: 'payments' })).not.toThrow();
  });
});
