// What makes two requests "the same" (CONTRACT.md, fingerprint): SHA-256 of the method, the
// path as requested, the query with its parameters sorted by name (each name's values in
// their order) and the body: JSON by value with keys sorted, any other body by its bytes.
// computeFingerprint() takes those parts; fingerprintHttpRequest() reads them from a request.
import { IdempotencyRequestUnsupportedException } from './idempotency.exceptions.js';
import {
  digestOf,
  NotJsonError,
  type FingerprintEncoder,
} from './idempotency-fingerprint.encoder.js';

export interface FingerprintInput {
  /** HTTP method, case-insensitive. */
  method: string;
  /** Request target as received, path and query (`/x/p1/bookings?b=2&a=1`). */
  url: string;
  /** The body as the body parser left it: a JSON value, a string, a Buffer or nothing. */
  body?: unknown;
  /** The body's bytes when the app keeps them (`rawBody: true`): used for non-JSON bodies. */
  rawBody?: Buffer;
  /** The request's Content-Type header. */
  contentType?: string;
}

/** A request body, as the fingerprint sees it. */
export type FingerprintBody =
  | { kind: 'none' }
  /** A parsed JSON body: compared by value, keys sorted; by `raw` if it holds anything else. */
  | { kind: 'json'; value: unknown; maxNodes: number; raw?: Buffer; contentType: string }
  /** Bytes nothing parsed, or kept by the app: compared byte for byte. */
  | { kind: 'bytes'; contentType: string; bytes: Buffer }
  /** A text body the parser decoded, without its bytes. */
  | { kind: 'text'; contentType: string; text: string }
  /** A non-JSON body parsed into JSON values (a form), without its bytes. */
  | { kind: 'parsed'; contentType: string; value: unknown; maxNodes: number }
  /** A multipart body's parts, byte for byte, without the boundary a client picks per send. */
  | { kind: 'multipart'; contentType: string; parts: Buffer[] }
  /** Uploads an upload interceptor parsed: its fields, and each file's metadata and hash. */
  | { kind: 'upload'; value: unknown };

const enum Kind {
  None = 0x20,
  Json,
  Bytes,
  Text,
  Parsed,
  Multipart,
  Upload,
  /** A call payload as JSON.stringify sees it (it held objects that are not JSON values). */
  JsonView,
}

/** Values a parser can make of a body of unknown size before it is taken for a cycle. */
const UNKNOWN_SIZE_MAX_NODES = 1 << 24;

/**
 * The fingerprint of a request from its parts: 32 bytes of SHA-256. A JSON body
 * (`application/json`, `*+json`, or no Content-Type) is compared by value, so key order and
 * whitespace do not matter; any other body by `rawBody` when given, else by what the parser
 * made of it. Throws `IdempotencyRequestUnsupportedException` for a body that is not JSON
 * values (a Date, a class instance, a cycle) and has no `rawBody`.
 * @example
 * const fingerprint = computeFingerprint({
 *   method: 'POST',
 *   url: '/x/partners/p1/bookings?dry=1',
 *   body: { product: 'travel' },
 *   contentType: 'application/json',
 * });
 */
export function computeFingerprint(input: FingerprintInput): Buffer {
  return fingerprintOf(input.method, input.url, bodyOf(input));
}

/**
 * Fingerprint of a call that is not an HTTP request: its kind (`graphql`, `rpc`), what it
 * calls (the mutation field, the message pattern) and its payload: JSON values compared as
 * JSON bodies are, a Buffer byte for byte. A payload holding other objects (a Date from a
 * custom scalar, a class instance) is compared as JSON.stringify sees it.
 */
export function computeCallFingerprint(kind: string, operation: string, payload: unknown): Buffer {
  const call = (write: (encoder: FingerprintEncoder) => void) =>
    digestOf((encoder) => {
      encoder.string(kind);
      encoder.string(operation);
      write(encoder);
    });
  if (Buffer.isBuffer(payload)) {
    return call((encoder) => {
      encoder.tag(Kind.Bytes);
      encoder.bytes(payload);
    });
  }
  try {
    return call((encoder) => {
      encoder.tag(Kind.Json);
      encoder.json(payload ?? null, UNKNOWN_SIZE_MAX_NODES);
    });
  } catch (error) {
    if (!(error instanceof NotJsonError)) throw error;
  }
  let view: unknown;
  try {
    view = JSON.parse(JSON.stringify(payload) ?? 'null');
  } catch (error) {
    throw new IdempotencyRequestUnsupportedException(
      `This call's payload cannot be compared: ${(error as Error).message}.`,
    );
  }
  return call((encoder) => {
    encoder.tag(Kind.JsonView);
    encoder.json(view, UNKNOWN_SIZE_MAX_NODES);
  });
}

export function fingerprintOf(method: string, url: string, body: FingerprintBody): Buffer {
  try {
    return digestRequest(method, url, body);
  } catch (error) {
    if (!(error instanceof NotJsonError)) throw error;
    if (body.kind === 'json' && body.raw !== undefined) {
      return digestRequest(method, url, {
        kind: 'bytes',
        contentType: body.contentType,
        bytes: body.raw,
      });
    }
    throw new IdempotencyRequestUnsupportedException(
      `The body parser made ${error.message} of this request's body, which cannot be compared by value. Keep the raw body (NestFactory.create(AppModule, { rawBody: true })) or parse the body into JSON values.`,
    );
  }
}

function digestRequest(method: string, url: string, body: FingerprintBody): Buffer {
  return digestOf((encoder) => {
    const queryAt = url.indexOf('?');
    encoder.string(method.toUpperCase());
    encoder.string(queryAt === -1 ? url : url.slice(0, queryAt));
    writeQuery(encoder, queryAt === -1 ? '' : url.slice(queryAt + 1));
    writeBody(encoder, body);
  });
}

/** `application/json`, `application/*+json` (any type, any parameters), or none. */
export function isJsonContentType(contentType: string | undefined): boolean {
  return contentType === undefined || JSON_MEDIA_TYPE.test(contentType);
}

const JSON_MEDIA_TYPE = /^[^;]*[/+]json\s*(?:;|$)/i;

/** Bodies of known size: JSON.parse makes at most one value per byte. */
export function maxNodesFor(size: number | undefined): number {
  return size === undefined ? UNKNOWN_SIZE_MAX_NODES : size + 64;
}

function bodyOf({ body, rawBody, contentType }: FingerprintInput): FingerprintBody {
  const type = contentType ?? '';
  if (Buffer.isBuffer(body)) return { kind: 'bytes', contentType: type, bytes: body };
  if (isJsonContentType(contentType) && body !== undefined) {
    const maxNodes = maxNodesFor(rawBody?.length);
    return { kind: 'json', value: body, maxNodes, raw: rawBody, contentType: type };
  }
  if (rawBody !== undefined) return { kind: 'bytes', contentType: type, bytes: rawBody };
  if (body === undefined || body === null) return { kind: 'none' };
  if (typeof body === 'string') return { kind: 'text', contentType: type, text: body };
  return { kind: 'parsed', contentType: type, value: body, maxNodes: UNKNOWN_SIZE_MAX_NODES };
}

function writeBody(encoder: FingerprintEncoder, body: FingerprintBody): void {
  switch (body.kind) {
    case 'none':
      return encoder.tag(Kind.None);
    case 'json':
      encoder.tag(Kind.Json);
      return encoder.json(body.value, body.maxNodes);
    case 'bytes':
      encoder.tag(Kind.Bytes);
      encoder.string(body.contentType);
      return encoder.bytes(body.bytes);
    case 'text':
      encoder.tag(Kind.Text);
      encoder.string(body.contentType);
      return encoder.string(body.text);
    case 'parsed':
      encoder.tag(Kind.Parsed);
      encoder.string(body.contentType);
      return encoder.json(body.value, body.maxNodes);
    case 'multipart':
      encoder.tag(Kind.Multipart);
      encoder.string(body.contentType);
      encoder.number(body.parts.length);
      for (const part of body.parts) encoder.bytes(part);
      return;
    case 'upload':
      encoder.tag(Kind.Upload);
      return encoder.json(body.value, UNKNOWN_SIZE_MAX_NODES);
  }
}

/**
 * Parameters sorted by name, each name's values in their order, every parameter as it was
 * sent (not decoded). "Name" is what any query parser groups by: the decoded name up to its
 * first `[` or `.` (`qs` reads `a[]=1&a=2` as one array). A query whose names do not decode
 * cleanly, or with more parameters than parsers read (1,000), is kept as sent: sorting it
 * could reorder values a parser groups together.
 */
function writeQuery(encoder: FingerprintEncoder, query: string): void {
  if (query === '') return encoder.number(0);
  const pairs = query.split('&');
  const names = pairs.length <= 1_000 ? pairs.map(groupName) : undefined;
  if (names === undefined || names.includes(undefined)) {
    encoder.number(-1);
    return encoder.string(query);
  }
  const order = pairs.map((_, i) => i);
  // Array.prototype.sort is stable: a name's values keep their order.
  order.sort((a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0));
  encoder.number(pairs.length);
  for (const i of order) encoder.string(pairs[i]);
}

function groupName(pair: string): string | undefined {
  const equals = pair.indexOf('=');
  const name = equals === -1 ? pair : pair.slice(0, equals);
  let decoded: string;
  try {
    decoded = decodeURIComponent(name.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
  const end = decoded.search(/[[.]/);
  return end === -1 ? decoded : decoded.slice(0, end);
}
