// Which response headers are stored with a response and sent again on its replays. A replay
// carries the stored body byte for byte, so the headers that describe that body or the
// resource the request created come along; headers about one particular exchange do not.
import { ORIGINAL_STATUS_HEADER, REPLAYED_HEADER } from './idempotency.constants.js';

/**
 * Replayed by default. Content-Encoding comes along because the body is stored as sent:
 * compressed, if a compression hook ran before the bytes reached the socket.
 */
export const DEFAULT_REPLAY_HEADERS: readonly string[] = [
  // the body as stored
  'content-type',
  'content-encoding',
  'content-language',
  'content-disposition',
  'etag',
  'last-modified',
  'cache-control',
  'vary',
  // the resource the request created or pointed to
  'location',
  'content-location',
];

/**
 * Never replayed, even when asked: a cookie belongs to the exchange that set it (replaying a
 * session cookie hands it out again), framing headers are computed for each response, and
 * the replay markers are the module's own.
 */
const NEVER_REPLAYED = new Set([
  'set-cookie',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'trailer',
  'date',
  REPLAYED_HEADER.toLowerCase(),
  ORIGINAL_STATUS_HEADER.toLowerCase(),
]);

/** RFC 9110 field-name (a token). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Why `names` cannot be a `replayHeaders` option, or `undefined` when it can. */
export function replayHeadersProblem(names: unknown): string | undefined {
  if (!Array.isArray(names)) return `must be an array of header names, got ${typeof names}`;
  for (const name of names) {
    if (typeof name !== 'string' || !FIELD_NAME.test(name)) {
      return `must hold header names, got ${JSON.stringify(name)}`;
    }
    if (NEVER_REPLAYED.has(name.toLowerCase())) {
      return `cannot include ${name}: ${[...NEVER_REPLAYED].join(', ')} are never replayed`;
    }
  }
  return undefined;
}

/** The defaults plus the route's own, lower-cased, each once. */
export function replayHeadersFor(extra: readonly string[] = []): readonly string[] {
  return [...new Set([...DEFAULT_REPLAY_HEADERS, ...extra.map((name) => name.toLowerCase())])];
}
