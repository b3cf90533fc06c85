// The fingerprint of an HTTP request, Express or Fastify, from what the request holds when
// the idempotency check runs: a body a parser read (JSON by value, anything else by its raw
// bytes when kept), uploads an upload interceptor parsed, or a body nobody has read yet,
// which is read and put back. What cannot be compared faithfully is refused, never guessed.
import {
  fingerprintOf,
  isJsonContentType,
  maxNodesFor,
  type FingerprintBody,
} from './idempotency.fingerprint.js';
import { isUnread, readAndRestore, type RequestStream } from './idempotency-body.reader.js';
import { IdempotencyRequestUnsupportedException } from './idempotency.exceptions.js';
import { isMultipart, multipartBody, uploadBody } from './idempotency-multipart.fingerprint.js';

/** Most bytes buffered to fingerprint a body that no parser has read. */
export const DEFAULT_MAX_BUFFERED_BODY_BYTES = 10 * 1024 * 1024;

export interface HttpFingerprintOptions {
  /**
   * Most bytes read to fingerprint a body that no parser has read before the idempotency
   * check (text, binary, or an upload whose interceptor runs after it); a larger one gets
   * 413 `idempotency_body_too_large`.
   * @default 10_485_760 (10 MiB)
   */
  maxBufferedBodyBytes?: number;
  /**
   * Maps the request target as requested (path and query) to the one fingerprinted, for a
   * caller that knows two targets reach the same handler (trailing slashes: see
   * idempotency-http.path.ts).
   * @default the target as requested
   */
  target?: (asRequested: string) => string;
}

/** The parts of an Express request or a Fastify request (whose `raw` is Node's) read here. */
export interface FingerprintableRequest {
  method?: string;
  url?: string;
  originalUrl?: string;
  body?: unknown;
  rawBody?: unknown;
  file?: unknown;
  files?: unknown;
  raw?: RequestStream & NodeRequestHead;
  headers?: NodeRequestHead['headers'];
}

interface NodeRequestHead {
  method?: string;
  url?: string;
  httpVersionMajor?: number;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * The fingerprint of an Express `req` or a Fastify `FastifyRequest`: method, path as
 * requested, query sorted by name, and the body. Throws an `IdempotencyException`
 * (`idempotency_unsupported_request`, `idempotency_body_too_large`,
 * `idempotency_body_incomplete`) for a request it cannot fingerprint faithfully.
 * @example
 * const fingerprint = await fingerprintHttpRequest(context.switchToHttp().getRequest());
 */
export async function fingerprintHttpRequest(
  request: FingerprintableRequest,
  options: HttpFingerprintOptions = {},
): Promise<Buffer> {
  const raw = (request.raw ?? request) as RequestStream & NodeRequestHead;
  const method = request.method ?? raw.method ?? '';
  const asRequested = request.originalUrl ?? request.url ?? raw.url ?? '';
  const url = options.target ? options.target(asRequested) : asRequested;
  const body = await bodyOf(request, raw, options.maxBufferedBodyBytes);
  return fingerprintOf(method, url, body);
}

async function bodyOf(
  request: FingerprintableRequest,
  raw: RequestStream & NodeRequestHead,
  limit = DEFAULT_MAX_BUFFERED_BODY_BYTES,
): Promise<FingerprintBody> {
  const contentType = header(raw, 'content-type') ?? '';
  const length = declaredLength(raw);
  if (length === 0) return { kind: 'none' };
  if (isUnread(raw)) {
    const bytes = await readAndRestore(raw, limit, length);
    return (
      (isMultipart(contentType) ? multipartBody(contentType, bytes) : undefined) ?? {
        kind: 'bytes',
        contentType,
        bytes,
      }
    );
  }
  if (!raw.readableEnded) {
    throw new IdempotencyRequestUnsupportedException(
      'The request body is still being read by something that ran before the idempotency check (a streaming upload interceptor, or middleware reading the stream), so it cannot be fingerprinted. Let the idempotency check run first: write @Idempotent() below @UseInterceptors(...) on the route.',
    );
  }
  if (isMultipart(contentType)) {
    if (isParsedUpload(request)) return uploadBody(request);
    throw new IdempotencyRequestUnsupportedException(
      'The multipart body was read before the idempotency check, but not by an upload interceptor that keeps what it read (request.body, request.file, request.files), so it cannot be fingerprinted. Use FileInterceptor and its kin, or let the idempotency check run first: write @Idempotent() below @UseInterceptors(...) on the route.',
    );
  }
  const { body: parsed, rawBody } = request;
  const bytes = Buffer.isBuffer(rawBody) ? rawBody : undefined;
  if (Buffer.isBuffer(parsed)) return { kind: 'bytes', contentType, bytes: parsed };
  // Parsers inflate a compressed body: only its decoded size bounds what they made of it.
  const size = bytes?.length ?? (header(raw, 'content-encoding') ? undefined : length);
  if (isJsonContentType(contentType) && parsed !== undefined) {
    return { kind: 'json', value: parsed, maxNodes: maxNodesFor(size), raw: bytes, contentType };
  }
  if (bytes !== undefined) return { kind: 'bytes', contentType, bytes };
  if (typeof parsed === 'string') return { kind: 'text', contentType, text: parsed };
  if (typeof parsed === 'object' && parsed !== null) {
    return { kind: 'parsed', contentType, value: parsed, maxNodes: maxNodesFor(size) };
  }
  throw new IdempotencyRequestUnsupportedException(
    'The request body was read before the idempotency check, but neither what was parsed (request.body) nor its bytes (request.rawBody) were kept, so it cannot be fingerprinted. Parse it with a body parser (app.useBodyParser(...)) or let the idempotency check run before whatever reads it.',
  );
}

/** Upload interceptors give a multipart request a body object, even without files. */
function isParsedUpload({ body, file, files }: FingerprintableRequest): boolean {
  return [body, file, files].some((value) => typeof value === 'object' && value !== null);
}

function header(raw: NodeRequestHead, name: string): string | undefined {
  const value = raw.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The body's length as announced: 0 for none, undefined when chunked or not announced. */
function declaredLength(raw: NodeRequestHead): number | undefined {
  if (raw.headers['transfer-encoding'] !== undefined) return undefined;
  const declared = header(raw, 'content-length');
  // HTTP/2 frames the body itself: without Content-Length its length is unknown, not 0.
  if (declared === undefined && (raw.httpVersionMajor ?? 1) >= 2) return undefined;
  const length = Number(declared ?? 0);
  return Number.isSafeInteger(length) && length >= 0 ? length : undefined;
}
