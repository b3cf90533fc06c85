import { readIdempotencyKey } from './idempotency-key.js';
import { IdempotencyKeyInvalidException } from './idempotency.exceptions.js';

const header = 'x-idempotency-key';
const request = (value?: string, times = value === undefined ? 0 : 1) => ({
  headers: value === undefined ? {} : { [header]: value },
  rawHeaders: Array.from({ length: times }, () => ['X-Idempotency-Key', value ?? '']).flat(),
});

describe('readIdempotencyKey', () => {
  it('returns the key, or undefined when the header is absent', () => {
    expect(readIdempotencyKey(request('abc-123'), header)).toBe('abc-123');
    expect(readIdempotencyKey(request(), header)).toBeUndefined();
  });

  it('accepts 255 printable ASCII characters', () => {
    const key = ' !~'.repeat(85);
    expect(readIdempotencyKey(request(key), header)).toBe(key);
  });

  it.each([
    ['empty', request('')],
    ['too long', request('k'.repeat(256))],
    ['a control character', request('a\tb')],
    ['not ASCII', request('cl\u00e9')],
    ['repeated', request('a', 2)],
  ])('rejects a key that is %s', (_what, req) => {
    expect(() => readIdempotencyKey(req, header)).toThrow(IdempotencyKeyInvalidException);
  });

  it('finds the header in Fastify requests (rawHeaders on request.raw)', () => {
    const { headers, rawHeaders } = request('a', 2);
    expect(() => readIdempotencyKey({ headers, raw: { rawHeaders } }, header)).toThrow(
      IdempotencyKeyInvalidException,
    );
  });
});
