import { gzipSync } from 'node:zlib';
import { forAcceptedEncoding } from './idempotency-replay-encoding.js';

const plain = Buffer.from(JSON.stringify({ booked: 'x'.repeat(200) }));
const gzipped = gzipSync(plain);
const stored = { 'content-type': 'application/json', 'content-encoding': 'gzip' };

describe('forAcceptedEncoding', () => {
  it.each([
    ['gzip', true],
    ['deflate, gzip;q=0.5', true],
    ['*', true],
    ['GZIP', true],
    ['gzip;q=0, *', false],
    ['gzip;q=0', false],
    ['br, *;q=0', false],
    ['identity', false],
    ['', false],
    [undefined, false],
  ])('Accept-Encoding %p keeps the stored gzip: %p', (acceptEncoding, kept) => {
    const replay = forAcceptedEncoding(gzipped, stored, acceptEncoding);
    if (kept) {
      expect(replay.body).toBe(gzipped);
      expect(replay.headers).toBe(stored);
    } else {
      expect(replay.body.equals(plain)).toBe(true);
      expect(replay.headers).toEqual({ 'content-type': 'application/json' });
    }
  });

  it('leaves a body alone when it has no coding, an unknown one, or is not what it says', () => {
    const none = { 'content-type': 'application/json' };
    expect(forAcceptedEncoding(plain, none, undefined).body).toBe(plain);
    const unknown = { 'content-encoding': 'zstd' };
    expect(forAcceptedEncoding(plain, unknown, undefined)).toEqual({
      body: plain,
      headers: unknown,
    });
    const lying = { 'content-encoding': 'gzip' };
    expect(forAcceptedEncoding(plain, lying, 'identity')).toEqual({ body: plain, headers: lying });
  });
});
