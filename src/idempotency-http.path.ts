// The request target an HTTP fingerprint sees: trailing slashes on the path do not make a
// new request. Nest strips them from every route it declares, so `/bookings/` and
// `/bookings` can only ever reach the same handler (Express matches both by default,
// Fastify with `ignoreTrailingSlash`); clients such as the published Python example send
// the slash, others do not, and a retry through another client must replay, not get 422.

/** `url` (path and query) with the path's trailing slashes removed; `/` stays `/`. */
export function withoutTrailingSlash(url: string): string {
  const queryAt = url.indexOf('?');
  const path = queryAt === -1 ? url : url.slice(0, queryAt);
  const trimmed = path.replace(/\/+$/, '') || (path ? '/' : '');
  return trimmed === path ? url : trimmed + (queryAt === -1 ? '' : url.slice(queryAt));
}

/**
 * Whether the matched route has a wildcard, which takes a trailing slash into its value
 * (Express 5 gives `/files/*path` the path ['a', ''] for `/files/a/`, find-my-way gives
 * `/files/*` 'a/'): there the slash makes another request. Reads Express's `req.route.path`
 * and Fastify's `request.routeOptions.url`.
 */
export function routeHasWildcard(request: {
  route?: { path?: unknown };
  routeOptions?: { url?: unknown };
}): boolean {
  const pattern = request.route?.path ?? request.routeOptions?.url;
  return typeof pattern === 'string' && pattern.includes('*');
}
