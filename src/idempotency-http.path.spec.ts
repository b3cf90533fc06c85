import { withoutTrailingSlash } from './idempotency-http.path.js';

describe('withoutTrailingSlash', () => {
  it.each([
    ['/x/partners/p1/instant_booking/', '/x/partners/p1/instant_booking'],
    ['/x/partners/p1/instant_booking', '/x/partners/p1/instant_booking'],
    ['/x/partners/p1/instant_booking//', '/x/partners/p1/instant_booking'],
    ['/x/bookings/?b=2&a=1', '/x/bookings?b=2&a=1'],
    ['/x/bookings?next=/a/', '/x/bookings?next=/a/'],
    ['/', '/'],
    ['//', '/'],
    ['/?a=1', '/?a=1'],
    ['', ''],
  ])('%s -> %s', (url, expected) => {
    expect(withoutTrailingSlash(url)).toBe(expected);
  });
});
