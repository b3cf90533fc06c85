// What makes two requests "the same": SHA-256 of method, path as requested, normalized query
// and the body in canonical form (RFC 8785 JSON canonicalization: key order and whitespace
// do not matter).
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';

export interface FingerprintInput {
  method: string;
  /** Request target as received, path and query (`/x/p1/bookings?b=2&a=1`). */
  url: string;
  /** The parsed body, as the body parser left it. */
  body: unknown;
  /** The raw body bytes, when the app keeps them (`rawBody: true`). */
  rawBody?: Buffer;
  /** The request's Content-Type header. */
  contentType?: string;
}

export function computeFingerprint(input: FingerprintInput): Buffer {
  const queryAt = input.url.indexOf('?');
  const path = queryAt === -1 ? input.url : input.url.slice(0, queryAt);
  const query = queryAt === -1 ? '' : normalizeQuery(input.url.slice(queryAt + 1));
  return createHash('sha256')
    .update(`${input.method.toUpperCase()}\n${path}\n${query}\n`)
    .update(canonicalBody(input))
    .digest();
}

/**
 * Fingerprint of a call that is not an HTTP request: its kind (`graphql`, `rpc`), what it
 * calls (the mutation field, the message pattern) and its payload in canonical JSON (raw
 * bytes when the payload is a Buffer).
 */
export function computeCallFingerprint(kind: string, operation: string, payload: unknown): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : (canonicalize(payload ?? null) ?? '');
  return createHash('sha256').update(`${kind}\n${operation}\n`).update(body).digest();
}

/** Sorts parameters by name, then value, so `?b=2&a=1` equals `?a=1&b=2`. */
function normalizeQuery(query: string): string {
  const params = [...new URLSearchParams(query)];
  params.sort(([ak, av], [bk, bv]) => (ak === bk ? compare(av, bv) : compare(ak, bk)));
  return new URLSearchParams(params).toString();
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function canonicalBody({ body, rawBody, contentType }: FingerprintInput): Buffer | string {
  const isJson = !contentType || /[/+]json\b/i.test(contentType);
  // Non-JSON bodies are compared byte for byte when the raw bytes are available.
  if (!isJson && rawBody) return rawBody;
  if (body === undefined || body === null) return rawBody ?? '';
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return body;
  return canonicalize(body) ?? '';
}
