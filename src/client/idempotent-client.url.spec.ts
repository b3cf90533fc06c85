import { requestTarget } from './idempotent-client.url.js';

describe('requestTarget', () => {
  it.each([
    ['https://api.example.com', '/bookings', 'https://api.example.com/bookings'],
    ['https://api.example.com/', 'bookings', 'https://api.example.com/bookings'],
    ['https://api.example.com/v1', '/x/partners/1', 'https://api.example.com/v1/x/partners/1'],
    ['https://api.example.com/v1/', '/x/partners/1', 'https://api.example.com/v1/x/partners/1'],
    ['https://api.example.com/v1', 'x/partners/1', 'https://api.example.com/v1/x/partners/1'],
    ['https://api.example.com/v1', '/bookings/?q=1', 'https://api.example.com/v1/bookings/?q=1'],
  ])('puts %s before %s', (baseUrl, url, expected) => {
    expect(requestTarget(url, baseUrl)).toBe(expected);
  });

  it('leaves absolute URLs and URL objects alone', () => {
    expect(requestTarget('http://other.example/a', 'https://api.example.com/v1')).toBe(
      'http://other.example/a',
    );
    const url = new URL('https://elsewhere.example/b');
    expect(requestTarget(url, 'https://api.example.com/v1')).toBe(url);
  });

  it('uses the URL as given without a baseUrl', () => {
    expect(requestTarget('/relative', undefined)).toBe('/relative');
  });
});
