import { Idempotent } from './idempotent.decorator.js';

describe('@Idempotent()', () => {
  it.each([
    [{ leaseMs: 0 }],
    [{ retentionMs: -1 }],
    [{ retryAfterSeconds: Number.NaN }],
    [{ replayStatus: 200 as unknown as 409 }],
    [{ key: '' }],
    [{ key: 42 as unknown as string }],
    [{ namespace: 1 as unknown as string }],
  ])('rejects invalid options where it is applied: %o', (options) => {
    expect(() => Idempotent(options)).toThrow(/Idempotency option/);
  });

  it('accepts valid options', () => {
    expect(() => Idempotent({ leaseMs: 1_000, replayStatus: 'original' })).not.toThrow();
    expect(() => Idempotent({ key: 'idempotency-key', namespace: '' })).not.toThrow();
    expect(() => Idempotent({ key: () => 'k', namespace: 'payments' })).not.toThrow();
  });
});
