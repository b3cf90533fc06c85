import { computeFingerprint } from './idempotency.fingerprint.js';

const base = { method: 'POST', url: '/x/partners/p1/bookings', contentType: 'application/json' };

describe('computeFingerprint', () => {
  it('ignores JSON key order and whitespace', () => {
    const a = computeFingerprint({ ...base, body: { a: 1, b: { c: [1, 2], d: 'x' } } });
    const b = computeFingerprint({
      ...base,
      body: JSON.parse('{ "b": {"d":"x","c":[1,2]}, "a":1 }'),
    });
    expect(a.equals(b)).toBe(true);
    expect(a).toHaveLength(32);
  });

  it('ignores the order of query parameters', () => {
    const a = computeFingerprint({ ...base, url: '/r?b=2&a=1&a=0', body: {} });
    const b = computeFingerprint({ ...base, url: '/r?a=0&a=1&b=2', body: {} });
    expect(a.equals(b)).toBe(true);
  });

  it.each([
    ['method', { method: 'PUT' }],
    ['path', { url: '/x/partners/p2/bookings' }],
    ['query', { url: '/x/partners/p1/bookings?dry=1' }],
    ['body', { body: { a: 2 } }],
    ['array order', { body: { a: [2, 1] } }],
  ])('tells requests apart by %s', (_what, change) => {
    const original = computeFingerprint({ ...base, body: { a: [1, 2] } });
    expect(computeFingerprint({ ...base, body: { a: [1, 2] }, ...change }).equals(original)).toBe(
      false,
    );
  });

  it('compares non-JSON bodies by their raw bytes when the app keeps them', () => {
    const form = { ...base, contentType: 'application/x-www-form-urlencoded', body: { a: '1' } };
    const a = computeFingerprint({ ...form, rawBody: Buffer.from('a=1&b=2') });
    const b = computeFingerprint({ ...form, rawBody: Buffer.from('b=2&a=1') });
    expect(a.equals(b)).toBe(false);
  });

  it('treats a missing body and an empty one alike', () => {
    const a = computeFingerprint({ ...base, body: undefined });
    const b = computeFingerprint({ ...base, body: null });
    expect(a.equals(b)).toBe(true);
  });
});
