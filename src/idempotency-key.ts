// Reads the key header and rejects malformed keys (CONTRACT: empty, over 255 characters,
// not printable ASCII, or the header sent more than once). Keys from a `key` resolver or a
// message header get the same checks.
import { MAX_KEY_LENGTH } from './idempotency.constants.js';
import { IdempotencyKeyInvalidException } from './idempotency.exceptions.js';

const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;
/**
 * How many headers Node puts in `request.headers` while `server.maxHeadersCount` is unset:
 * its parser's default of 2000 fields counts names and values.
 */
const NODE_DEFAULT_HEADER_LIMIT = 1000;

/** Returns the key, `undefined` when the header is absent, or throws a 400. */
export function readIdempotencyKey(request: any, headerName: string): string | undefined {
  const lower = headerName.toLowerCase();
  // Node joins repeated headers into one value, so repetition is only visible in rawHeaders.
  const raw: string[] = request.rawHeaders ?? request.raw?.rawHeaders ?? [];
  // Node keeps only the first maxHeadersCount headers and drops the rest unseen: with that
  // many, a repeated key (or the only one, had it come later) may be among those dropped.
  const limit = headerLimit(request.socket ?? request.raw?.socket);
  if (raw.length / 2 >= limit) {
    throw new IdempotencyKeyInvalidException(
      headerName,
      `the request has ${raw.length / 2} headers, as many as the server reads (maxHeadersCount), so a repeated or later key header may have been dropped unseen`,
    );
  }
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) {
    // Lower-casing makes a string: only names of the right length can match.
    if (raw[i].length === lower.length && raw[i].toLowerCase() === lower) seen++;
  }
  if (seen > 1)
    throw new IdempotencyKeyInvalidException(headerName, 'the header was sent more than once');

  const value: unknown = request.headers?.[lower];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') {
    throw new IdempotencyKeyInvalidException(headerName, 'the header was sent more than once');
  }
  return checkKey(value, (reason) => new IdempotencyKeyInvalidException(headerName, reason));
}

/**
 * Checks a key that did not come from an HTTP header: what a `key` resolver returned, or a
 * message header (`source` names it in the error).
 */
export function checkResolvedKey(value: unknown, source: string): string | undefined {
  const invalid = (reason: string) => new IdempotencyKeyInvalidException(source, reason, true);
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw invalid(`it is a ${typeof value}, not a string`);
  return checkKey(value, invalid);
}

function checkKey(value: string, invalid: (reason: string) => Error): string {
  if (value.length === 0) throw invalid('it is empty');
  if (value.length > MAX_KEY_LENGTH) {
    throw invalid(`it is longer than ${MAX_KEY_LENGTH} characters`);
  }
  if (!PRINTABLE_ASCII.test(value)) throw invalid('it must be printable ASCII');
  return value;
}

/** How many request headers Node keeps (`server.maxHeadersCount`; 0 keeps them all). */
function headerLimit(socket: { server?: { maxHeadersCount?: number | null } } | undefined): number {
  const max = socket?.server?.maxHeadersCount;
  if (max === 0) return Infinity;
  return typeof max === 'number' && max > 0 ? max : NODE_DEFAULT_HEADER_LIMIT;
}
