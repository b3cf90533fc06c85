// Where a request goes: baseUrl is a prefix, as its documentation says, so a path under it
// keeps the base's own path ('https://api.example.com/v1' + '/bookings' is '/v1/bookings').
// WHATWG URL resolution would drop '/v1' there, and send a client's retries to a 404.

const ABSOLUTE = /^[a-z][a-z0-9+.-]*:/i;

export function requestTarget(url: string | URL, baseUrl: string | undefined): string | URL {
  if (!baseUrl || url instanceof URL || ABSOLUTE.test(url)) return url;
  return `${baseUrl.replace(/\/+$/, '')}/${url.replace(/^\/+/, '')}`;
}
