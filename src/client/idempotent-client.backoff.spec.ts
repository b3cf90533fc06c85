import { parseRetryAfter, retryDelay } from './idempotent-client.backoff.js';

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-11-29T10:00:00Z');

  it.each([
    ['1', 1000],
    ['0', 0],
    [' 120 ', 120_000],
    ['1.5', 1500],
    ['Sun, 29 Nov 2026 10:00:05 GMT', 5000],
    ['Sun, 29 Nov 2026 09:59:00 GMT', 0],
  ])('reads %j as %d ms', (value, ms) => {
    expect(parseRetryAfter(value, now)).toBe(ms);
  });

  it.each([[null], [undefined], [''], ['soon'], ['-1']])('ignores %j', (value) => {
    expect(parseRetryAfter(value, now)).toBeUndefined();
  });
});

describe('retryDelay', () => {
  const options = { backoffFactorMs: 5000, maxDelayMs: 120_000 };

  it('doubles like urllib3 backoff_factor=5: 5 s, 10 s, 20 s', () => {
    expect([1, 2, 3].map((retry) => retryDelay(retry, undefined, options))).toEqual([
      5000, 10_000, 20_000,
    ]);
  });

  it('prefers Retry-After, capped at maxDelayMs', () => {
    expect(retryDelay(3, 1000, options)).toBe(1000);
    expect(retryDelay(1, 3_600_000, options)).toBe(120_000);
  });
});
