// Reads the key header and rejects malformed keys (CONTRACT: empty, over 255 characters,
// not printable ASCII, or the header sent more than once). Keys from a `key` resolver or a
// message header get the same checks.
import { MAX_KEY_LENGTH } from './idempotency.constants.js';
import { IdempotencyKeyInvalidException } from './idempotency.exceptions.js';

const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

/** Returns the key, `undefined` when the header is absent, or throws a 400. */
export function readIdempotencyKey(request: any, headerName: string): string | undefined {
  const lower = headerName.toLowerCase();
  // Node joins repeated headers into one value, so repetition is only visible in rawHeaders.
  const raw: string[] = request.rawHeaders ?? request.raw?.rawHeaders ?? [];
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].toLowerCase() === lower) seen++;
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
