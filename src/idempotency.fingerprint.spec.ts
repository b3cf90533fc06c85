import {
  computeCallFingerprint,
  computeFingerprint,
  type FingerprintInput,
} from './idempotency.fingerprint.js';
import { IdempotencyRequestUnsupportedException } from './idempotency.exceptions.js';

const base = { method: 'POST', url: '/x/partners/p1/bookings', contentType: 'application/json' };
const fingerprint = (change: Partial<FingerprintInput>) =>
  computeFingerprint({ ...base, ...change }).toString('hex');
const ofJson = (text: string) => fingerprint({ body: JSON.parse(text) });
const ofQuery = (query: string) => fingerprint({ url: `/r?${query}`, body: {} });

/** A deterministic PRNG, so a failure reproduces. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CHARS = ['a', 'b', '"', '\\', '\n', '\u0000', 'é', '€', '😀', '\ud800', '\udc00', '[', ','];
const NUMBERS = [
  ...[0, -0, 1, -1, 1.5, 0.1, 1e21, 1e-7, 2 ** 53, Infinity, -Infinity, 123456789],
  ...[63, 64, 127, 128, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32],
];

function randomValue(next: () => number, depth = 0): unknown {
  const pick = <T>(list: T[]) => list[Math.floor(next() * list.length)];
  const roll = next();
  if (depth > 4 || roll < 0.45) {
    const kind = Math.floor(next() * 5);
    if (kind === 0) return pick([null, true, false]);
    if (kind === 1) return pick(NUMBERS);
    const length = next() < 0.1 ? 60 + Math.floor(next() * 10) : Math.floor(next() * 6);
    return Array.from({ length }, () => pick(CHARS)).join('');
  }
  const size = Math.floor(next() * 4);
  if (roll < 0.7) return Array.from({ length: size }, () => randomValue(next, depth + 1));
  const object: Record<string, unknown> = {};
  for (let i = 0; i < size; i++)
    object[pick(['a', 'b', 'ab', 'B', '1', '10', 'é'])] = randomValue(next, depth + 1);
  return object;
}

/** What the fingerprint must tell apart: JSON values, keys sorted, -0 apart from 0. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (typeof value === 'number') return Object.is(value, -0) ? '-0' : String(value);
  if (typeof value === 'object' && value !== null) {
    const entries = Object.keys(value).sort();
    return `{${entries.map((k) => `${JSON.stringify(k)}:${canonical((value as any)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The same value built with every object's keys inserted in reverse order. */
function reversedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reversedKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.keys(value)
      .reverse()
      .map((k) => [k, reversedKeys((value as any)[k])]),
  );
}

describe('computeFingerprint', () => {
  it('is 32 bytes of SHA-256 and ignores JSON key order and whitespace', () => {
    expect(computeFingerprint({ ...base, body: {} })).toHaveLength(32);
    expect(ofJson('{ "b": {"d":"x","c":[1,2]}, "a":1 }')).toBe(
      ofJson('{"a":1,"b":{"c":[1,2],"d":"x"}}'),
    );
  });

  it('compares numbers and strings by value, as JSON.parse reads them', () => {
    expect(ofJson('[1.0, 1e2, "\\u00e9"]')).toBe(ofJson('[1, 100, "é"]'));
  });

  it.each([
    ['method', { method: 'PUT' }],
    ['path', { url: '/x/partners/p2/bookings' }],
    ['query', { url: '/x/partners/p1/bookings?dry=1' }],
    ['body', { body: { a: [1, 3] } }],
    ['array order', { body: { a: [2, 1] } }],
    ['value type', { body: { a: ['1', 2] } }],
    [
      'content type of a raw body',
      { contentType: 'text/plain', rawBody: Buffer.from('{"a":[1,2]}') },
    ],
  ])('tells requests apart by %s', (_what, change) => {
    expect(fingerprint({ body: { a: [1, 2] }, ...change })).not.toBe(
      fingerprint({ body: { a: [1, 2] } }),
    );
  });

  it('tells apart random JSON values exactly when their canonical forms differ', () => {
    const next = random(42);
    const values = Array.from({ length: 3_000 }, () => randomValue(next));
    const byCanonical = new Map<string, string>();
    const byFingerprint = new Map<string, string>();
    for (const value of values) {
      const print = fingerprint({ body: value });
      const form = canonical(value);
      expect(fingerprint({ body: reversedKeys(value) })).toBe(print);
      expect(byCanonical.get(form) ?? print).toBe(print);
      expect(byFingerprint.get(print) ?? form).toBe(form);
      byCanonical.set(form, print);
      byFingerprint.set(print, form);
    }
    expect(byCanonical.size).toBeGreaterThan(1_000);
  });

  it('tells apart large bodies that differ in one place, wherever it falls in the hashed chunks', () => {
    const strings = Array.from({ length: 6_000 }, (_, i) => `item ${i} ${'x'.repeat(i % 90)}`);
    const seen = new Set([fingerprint({ body: strings })]);
    for (let i = 0; i < strings.length; i += 97) {
      const changed = [...strings];
      changed[i] = changed[i].replace('item', 'itex');
      seen.add(fingerprint({ body: changed }));
    }
    seen.add(fingerprint({ body: [...strings.slice(0, -1), 'é'.repeat(40_000)] }));
    seen.add(fingerprint({ body: [...strings.slice(0, -1), 'é'.repeat(40_000) + '\ud800'] }));
    expect(seen.size).toBe(2 + Math.ceil(strings.length / 97) + 1);
  });

  it('tells apart strings around every length the encoding switches at', () => {
    const prints = new Set<string>();
    for (const char of ['a', 'é', '€', '😀']) {
      for (const length of [0, 1, 21, 42, 43, 63, 64, 65, 127, 128, 129]) {
        prints.add(fingerprint({ body: [char.repeat(length), 'x'] }));
        prints.add(fingerprint({ body: [char.repeat(length) + 'x'] }));
      }
    }
    expect(prints.size).toBe(4 * 10 * 2 + 2); // length 0 is the same two bodies for every char
  });

  it('fingerprints what JSON.parse accepts: 1e400, lone surrogates, any depth', () => {
    expect(ofJson('{"a":1e400}')).not.toBe(ofJson('{"a":-1e400}'));
    expect(ofJson('{"a":1e400}')).not.toBe(ofJson('{"a":null}'));
    expect(ofJson('"\\ud800"')).not.toBe(ofJson('"\\ud801"'));
    expect(ofJson('"\\ud800"')).not.toBe(ofJson('"\\ufffd"'));
    const arrays = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    const objects = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
    expect(ofJson(arrays(100_000))).not.toBe(ofJson(arrays(99_999)));
    expect(ofJson(objects(50_000))).not.toBe(ofJson(objects(49_999)));
  });

  it('tells no body, a JSON null, an empty text and empty bytes apart', () => {
    const prints = new Set([
      fingerprint({ body: undefined }),
      fingerprint({ body: null }),
      fingerprint({ contentType: 'text/plain', body: '' }),
      fingerprint({ contentType: 'text/plain', rawBody: Buffer.alloc(0) }),
    ]);
    expect(prints.size).toBe(4);
  });

  it('compares a non-JSON body by its bytes when the app keeps them', () => {
    const form = { contentType: 'application/x-www-form-urlencoded', body: { a: '1', b: '2' } };
    expect(fingerprint({ ...form, rawBody: Buffer.from('a=1&b=2') })).not.toBe(
      fingerprint({ ...form, rawBody: Buffer.from('b=2&a=1') }),
    );
  });

  it('reads an object whose prototype adds nothing (fast-querystring’s forms) as a plain one', () => {
    const form = Object.assign(Object.create(Object.create(null)), { a: '1' });
    expect(fingerprint({ contentType: 'text/x-form', body: form })).toBe(
      fingerprint({ contentType: 'text/x-form', body: { a: '1' } }),
    );
  });

  it('refuses a body that is not JSON values rather than guess, unless its bytes are kept', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    let deepCycle: Record<string, unknown> = {};
    const top = deepCycle;
    for (let i = 0; i < 2_000; i++) deepCycle = (deepCycle.next = {}) as Record<string, unknown>;
    deepCycle.next = top;
    for (const body of [
      { at: new Date(0) },
      { m: new Map() },
      [undefined],
      { f: () => 1 },
      cyclic,
      top,
    ]) {
      expect(() => fingerprint({ body })).toThrow(IdempotencyRequestUnsupportedException);
      expect(() => fingerprint({ body, rawBody: Buffer.from('{}') })).not.toThrow();
    }
  });
});

describe('computeFingerprint: the query', () => {
  it('sorts parameters by name and keeps each name’s values in order', () => {
    expect(ofQuery('b=2&a=1')).toBe(ofQuery('a=1&b=2'));
    expect(ofQuery('ids=1&x=0&ids=2')).toBe(ofQuery('x=0&ids=1&ids=2'));
    expect(ofQuery('ids=1&ids=2')).not.toBe(ofQuery('ids=2&ids=1'));
  });

  it('groups names as qs does (a, a[] and a[x] are one name) and compares them decoded', () => {
    expect(ofQuery('a[]=1&a=2')).not.toBe(ofQuery('a=2&a[]=1'));
    expect(ofQuery('a%5B%5D=1&a=2')).not.toBe(ofQuery('a=2&a%5B%5D=1'));
    expect(ofQuery('a.b=1&a=2')).not.toBe(ofQuery('a=2&a.b=1'));
    expect(ofQuery('a%62=1&ab=2')).not.toBe(ofQuery('ab=2&a%62=1'));
    expect(ofQuery('b=1&a[x]=2')).toBe(ofQuery('a[x]=2&b=1'));
  });

  it('keeps a query as sent when a name does not decode, or past 1,000 parameters', () => {
    expect(ofQuery('%C3=1&b=2')).not.toBe(ofQuery('b=2&%C3=1'));
    const many = Array.from({ length: 1_001 }, (_, i) => `p${i}=1`);
    expect(ofQuery(many.join('&'))).not.toBe(ofQuery([...many].reverse().join('&')));
  });

  it('compares values as sent: a different encoding is a different request', () => {
    expect(ofQuery('a=1+2')).not.toBe(ofQuery('a=1%202'));
  });
});

describe('computeCallFingerprint', () => {
  const call = (payload: unknown, operation = 'createBooking') =>
    computeCallFingerprint('graphql', operation, payload).toString('hex');

  it('compares JSON payloads by value, and tells kinds, operations and payloads apart', () => {
    expect(call({ a: 1, b: [1, 2] })).toBe(call(JSON.parse('{"b":[1,2],"a":1}')));
    expect(call({ a: 1 })).not.toBe(call({ a: 1 }, 'cancelBooking'));
    expect(call({ a: 1 })).not.toBe(
      computeCallFingerprint('rpc', 'createBooking', { a: 1 }).toString('hex'),
    );
    expect(call({ a: [1, 2] })).not.toBe(call({ a: [2, 1] }));
    expect(call(Buffer.from('{}'))).not.toBe(call({}));
    expect(call(undefined)).toBe(call(null));
  });

  it('compares a payload holding other objects as JSON.stringify sees it', () => {
    const at = (iso: string) => ({ at: new Date(iso), note: undefined });
    expect(call(at('2026-01-01T00:00:00Z'))).toBe(call(at('2026-01-01T00:00:00.000Z')));
    expect(call(at('2026-01-01T00:00:00Z'))).not.toBe(call(at('2026-01-02T00:00:00Z')));
    expect(call(at('2026-01-01T00:00:00Z'))).not.toBe(call({ at: '2026-01-01T00:00:00.000Z' }));
  });

  it('takes any depth, and refuses a cycle rather than loop', () => {
    const deep = JSON.parse('['.repeat(50_000) + ']'.repeat(50_000));
    expect(call(deep)).toHaveLength(64);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => call(cyclic)).toThrow(IdempotencyRequestUnsupportedException);
  });
});
