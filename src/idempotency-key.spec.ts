import { checkResolvedKey, readIdempotencyKey } from './idempotency-key.js';
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

  describe('with as many headers as the server reads (maxHeadersCount)', () => {
    const crowded = (headers: number, maxHeadersCount: number | null) => ({
      headers: { [header]: 'a' },
      rawHeaders: ['X-Idempotency-Key', 'a', ...Array(2 * (headers - 1)).fill('x')],
      socket: { server: { maxHeadersCount } },
    });

    const detailOf = (request: object) => {
      try {
        readIdempotencyKey(request, header);
      } catch (error) {
        return (error as IdempotencyKeyInvalidException).getProblem().detail;
      }
      return 'accepted';
    };

    it('rejects: a repeated or later key may have been dropped unseen', () => {
      expect(detailOf(crowded(10, 10))).toMatch(/has 10 headers, .*\(maxHeadersCount\)/);
      expect(detailOf(crowded(1_000, null))).toMatch(/has 1000 headers/);
    });

    it('reads the key below the limit, or when the server keeps every header', () => {
      expect(readIdempotencyKey(crowded(9, 10), header)).toBe('a');
      expect(readIdempotencyKey(crowded(999, null), header)).toBe('a');
      expect(readIdempotencyKey(crowded(5_000, 0), header)).toBe('a');
    });
  });
});

describe('checkResolvedKey', () => {
  it('returns a valid key, and undefined for no key', () => {
    expect(checkResolvedKey('evt-1', 'the key resolver')).toBe('evt-1');
    expect(checkResolvedKey(undefined, 'the key resolver')).toBeUndefined();
    expect(checkResolvedKey(null, 'the key resolver')).toBeUndefined();
  });

  it.each([
    ['empty', ''],
    ['too long', 'k'.repeat(256)],
    ['not ASCII', 'cl\u00e9'],
    ['a number', 42],
    ['an object', { id: 1 }],
  ])('rejects a key that is %s, naming where it came from', (_what, value) => {
    let error: unknown;
    try {
      checkResolvedKey(value, 'the key resolver');
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toBeInstanceOf(IdempotencyKeyInvalidException);
    expect((error as IdempotencyKeyInvalidException).getProblem().detail).toMatch(
      /^The idempotency key \(the key resolver\) is invalid: /,
    );
  });
});
