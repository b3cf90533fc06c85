// Captures the response exactly as the HTTP adapter writes it (after every other interceptor,
// the serializer and the exception filters have had their say) and holds it back until the
// record is settled. Works on the Node ServerResponse under both Express and Fastify.
import type { ServerResponse } from 'node:http';
import type { StoredResponse } from './idempotency-store.js';

/**
 * Headers worth replaying; everything else (Date, ETag, Content-Length...) is per-response.
 * Content-Encoding comes along because the body is stored as sent: compressed, if a
 * compression hook ran before the bytes reached the socket.
 */
const STORED_HEADERS = ['content-type', 'location', 'content-encoding', 'vary'];

export type CapturedResponse = StoredResponse;

/** What to send instead of the captured response (when its record could not be settled). */
export interface ReplacementResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Buffers writeHead/write/end of `response` until `settle` resolves, then sends either the
 * captured response or the replacement that `settle` returns.
 */
export function holdResponse(
  response: ServerResponse,
  settle: (captured: CapturedResponse) => Promise<ReplacementResponse | undefined>,
): void {
  const { writeHead, write, end } = response;
  const chunks: Buffer[] = [];
  let head: unknown[] | undefined;

  const restore = () => {
    response.writeHead = writeHead;
    response.write = write;
    response.end = end;
  };
  const toBuffer = (chunk: unknown, encoding?: unknown): Buffer =>
    Buffer.isBuffer(chunk)
      ? chunk
      : chunk instanceof Uint8Array
        ? Buffer.from(chunk)
        : Buffer.from(
            String(chunk),
            typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8',
          );

  response.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    head = args;
    return this;
  } as ServerResponse['writeHead'];

  response.write = function (chunk: unknown, encoding?: unknown, callback?: unknown) {
    if (chunk != null) chunks.push(toBuffer(chunk, encoding));
    const done = typeof encoding === 'function' ? encoding : callback;
    if (typeof done === 'function') process.nextTick(done as () => void);
    return true;
  } as ServerResponse['write'];

  response.end = function (
    this: ServerResponse,
    chunk?: unknown,
    encoding?: unknown,
    callback?: unknown,
  ) {
    if (typeof chunk === 'function') [callback, chunk] = [chunk, undefined];
    if (typeof encoding === 'function') [callback, encoding] = [encoding, undefined];
    if (chunk != null) chunks.push(toBuffer(chunk, encoding));
    restore();
    const body = Buffer.concat(chunks);
    const status = typeof head?.[0] === 'number' ? head[0] : response.statusCode;
    const headHeaders = (typeof head?.[1] === 'object' ? head[1] : head?.[2]) as
      Record<string, unknown> | undefined;
    const headers: Record<string, string> = {};
    for (const name of STORED_HEADERS) {
      const value = findHeader(headHeaders, name) ?? response.getHeader(name);
      if (value !== undefined) headers[name] = String(value);
    }
    const send = () => {
      if (head) writeHead.apply(response, head as Parameters<ServerResponse['writeHead']>);
      (end as (body: Buffer, cb?: () => void) => void).call(response, body, callback as () => void);
    };
    settle({ status, headers, body }).then(
      (replacement) => (replacement ? sendReplacement(response, replacement, callback) : send()),
      () => send(),
    );
    return this;
  } as ServerResponse['end'];
}

function findHeader(headers: Record<string, unknown> | undefined, name: string): unknown {
  if (!headers) return undefined;
  for (const key of Object.keys(headers)) if (key.toLowerCase() === name) return headers[key];
  return undefined;
}

function sendReplacement(
  response: ServerResponse,
  replacement: ReplacementResponse,
  callback: unknown,
): void {
  for (const name of response.getHeaderNames()) response.removeHeader(name);
  const body = Buffer.from(replacement.body);
  response.writeHead(replacement.status, {
    ...replacement.headers,
    'content-length': String(body.length),
  });
  response.end(body, callback as () => void);
}
