// Captures the response exactly as the HTTP adapter writes it (after every other interceptor,
// the serializer and the exception filters have had their say), holds it back until the record
// is settled, then sends exactly what it captured: the bytes sent are the bytes stored. Works
// on the Node ServerResponse under both Express and Fastify.
//
// While it is held, the response behaves towards the code writing it as a sent one does in
// Node: the first writeHead(), write() or end() fixes the status and headers (later header
// changes throw ERR_HTTP_HEADERS_SENT and `headersSent` is true), and after end()
// `writableEnded` is true and further writes are dropped. So a second reply (Nest replying to a
// passthrough handler that already sent, Fastify's reply.send() after a raw end()) changes
// nothing, as without the module, instead of going out in place of the held one.
import {
  OutgoingMessage,
  validateHeaderName,
  validateHeaderValue,
  type OutgoingHttpHeader,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import type { StoredResponse } from './idempotency-store.js';

export type CapturedResponse = StoredResponse;

/** What to send instead of the captured response (when its record could not be settled). */
export interface ReplacementResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The ServerResponse methods the capture stands in for while it holds the response. */
const PATCHED = [
  'writeHead',
  'write',
  'end',
  'flushHeaders',
  'setHeader',
  'appendHeader',
  'removeHeader',
] as const;
type Patched = Pick<ServerResponse, (typeof PATCHED)[number]>;

/** Where a held response keeps what its state getters report. */
const HOLD = Symbol('idempotency.hold');
interface HoldState {
  held: boolean;
  headSent: boolean;
  ended: boolean;
}
type HeldResponse = ServerResponse & { [HOLD]?: HoldState };

const nodeHeadersSent = Object.getOwnPropertyDescriptor(
  OutgoingMessage.prototype,
  'headersSent',
)!.get!;
const nodeWritableEnded = Object.getOwnPropertyDescriptor(
  OutgoingMessage.prototype,
  'writableEnded',
)!.get!;

/**
 * `headersSent` and `writableEnded` report a held response as sent, as Node's would, and are
 * Node's own once it is released. The same two functions for every response: a closure per
 * response would give each its own V8 shape and make Node's code several times slower on it.
 */
const STATE_GETTERS: PropertyDescriptorMap = {
  headersSent: {
    configurable: true,
    get(this: HeldResponse) {
      const state = this[HOLD];
      return state?.held ? state.headSent : nodeHeadersSent.call(this);
    },
  },
  writableEnded: {
    configurable: true,
    get(this: HeldResponse) {
      const state = this[HOLD];
      return state?.held ? state.ended : nodeWritableEnded.call(this);
    },
  },
};

/**
 * Holds `response` from now on. Once the response is complete (end() was called), `settle`
 * gets what was written (status, the headers named in `storedHeaders`, the body) and resolves
 * to a replacement to send instead, or to nothing to send the captured response as it is.
 */
export function holdResponse(
  response: ServerResponse,
  storedHeaders: readonly string[],
  settle: (captured: CapturedResponse) => Promise<ReplacementResponse | undefined>,
): void {
  // Node's methods, or the wrappers middleware such as compression put on the instance.
  const original = Object.fromEntries(PATCHED.map((name) => [name, response[name]])) as Patched;
  const chunks: Buffer[] = [];
  let head: { status: number; message: string | undefined } | undefined;
  let headArgs: unknown[] | undefined;
  let headHeaders: OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined;
  const state: HoldState = { held: true, headSent: false, ended: false };
  (response as HeldResponse)[HOLD] = state;
  Object.defineProperties(response, STATE_GETTERS);

  const fixHead = () => {
    head ??= { status: response.statusCode, message: response.statusMessage || undefined };
    state.headSent = true;
  };
  const notAfterHead = (verb: string) => {
    if (head) throw headersSentError(verb);
  };
  // Put back by assignment, not `delete`, which would turn the response into a slow
  // dictionary-mode object for the rest of its life.
  const release = () => {
    state.held = false;
    Object.assign(response, original);
  };

  const patch: Patched = {
    writeHead: function (this: ServerResponse, status: number, ...rest: unknown[]) {
      notAfterHead('write');
      const message = typeof rest[0] === 'string' ? rest[0] : undefined;
      const headers = (typeof rest[0] === 'string' ? rest[1] : rest[0]) as
        OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined;
      const code = Math.trunc(Number(status));
      if (!(code >= 100 && code <= 999)) {
        throw Object.assign(new RangeError(`Invalid status code: ${status}`), {
          code: 'ERR_HTTP_INVALID_STATUS_CODE',
        });
      }
      validateHeaders(headers);
      // Passed on as given at delivery, so Node merges them with the headers set before
      // exactly as it would have; the stored headers read them from here meanwhile.
      headArgs = [code, ...rest];
      headHeaders = headers;
      response.statusCode = code;
      if (message !== undefined) response.statusMessage = message;
      fixHead();
      return this;
    } as Patched['writeHead'],

    write: function (this: ServerResponse, chunk: unknown, encoding?: unknown, callback?: unknown) {
      const done = typeof encoding === 'function' ? encoding : callback;
      const buffer = toBuffer(chunk, encoding);
      if (state.ended) {
        writeAfterEnd(response, done);
        return true;
      }
      fixHead();
      chunks.push(buffer);
      if (typeof done === 'function') process.nextTick(done as () => void);
      return true;
    } as Patched['write'],

    end: function (this: ServerResponse, chunk?: unknown, encoding?: unknown, callback?: unknown) {
      if (typeof chunk === 'function') [callback, chunk] = [chunk, undefined];
      if (typeof encoding === 'function') [callback, encoding] = [encoding, undefined];
      const done = typeof callback === 'function' ? (callback as () => void) : undefined;
      if (state.ended) {
        // As Node: a late chunk is an error for its callback; a bare end() waits for 'finish'.
        if (chunk) writeAfterEnd(response, done);
        else if (done) response.once('finish', done);
        return this;
      }
      if (chunk) chunks.push(toBuffer(chunk, encoding));
      fixHead();
      state.ended = true;
      const { status, message } = head!;
      // Node sends no body for these, whatever was written; neither is one stored.
      const bodiless =
        status < 200 || status === 204 || status === 304 || response.req?.method === 'HEAD';
      const body = bodiless ? Buffer.alloc(0) : Buffer.concat(chunks);
      const deliver = (replacement?: ReplacementResponse) => {
        release();
        try {
          if (replacement) return sendReplacement(response, replacement, done);
          response.statusCode = status;
          if (message !== undefined) response.statusMessage = message;
          if (headArgs) (response.writeHead as (...args: unknown[]) => void)(...headArgs);
          response.end(bodiless ? undefined : body, done);
        } catch (error) {
          // Nothing here may throw into a promise chain nobody awaits (the process would
          // die): a response that cannot be sent is cut off, as Node does with a broken one.
          response.destroy(error as Error);
        }
      };
      const headers = pickHeaders(response, storedHeaders, headHeaders);
      settle({ status, headers, body }).then(deliver, () => deliver());
      return this;
    } as Patched['end'],

    flushHeaders: function () {
      fixHead();
    },

    setHeader: function (
      this: ServerResponse,
      name: string,
      value: number | string | readonly string[],
    ) {
      notAfterHead('set');
      return original.setHeader.call(response, name, value);
    } as Patched['setHeader'],

    appendHeader: function (this: ServerResponse, name: string, value: string | readonly string[]) {
      notAfterHead('append');
      return original.appendHeader.call(response, name, value);
    } as Patched['appendHeader'],

    removeHeader: function (name: string) {
      notAfterHead('remove');
      original.removeHeader.call(response, name);
    },
  };
  Object.assign(response, patch);
}

/** Throws what Node's writeHead() throws for these headers, when the handler calls it. */
function validateHeaders(headers: OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined): void {
  if (!headers) return;
  const pairs: Array<[unknown, unknown]> = [];
  if (Array.isArray(headers)) {
    const flat = Array.isArray(headers[0]) ? headers.flat() : headers;
    if (flat.length % 2 !== 0) {
      throw Object.assign(new TypeError("The argument 'headers' is invalid"), {
        code: 'ERR_INVALID_ARG_VALUE',
      });
    }
    for (let i = 0; i < flat.length; i += 2) pairs.push([flat[i], flat[i + 1]]);
  } else {
    for (const [name, value] of Object.entries(headers))
      if (value !== undefined) pairs.push([name, value]);
  }
  for (const [name, value] of pairs) {
    validateHeaderName(String(name));
    validateHeaderValue(String(name), value as string);
  }
}

/** The chunk as Node's write() takes it: a string (in `encoding`), a Buffer or a Uint8Array. */
function toBuffer(chunk: unknown, encoding: unknown): Buffer {
  if (typeof chunk === 'string') {
    return Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  }
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
  // The errors Node's write() throws, so the handler fails as it would without the module.
  if (chunk === null) {
    throw Object.assign(new TypeError('May not write null values to stream'), {
      code: 'ERR_STREAM_NULL_VALUES',
    });
  }
  throw Object.assign(
    new TypeError(
      `The "chunk" argument must be of type string or an instance of Buffer or Uint8Array. Received ${typeof chunk}`,
    ),
    { code: 'ERR_INVALID_ARG_TYPE' },
  );
}

function headersSentError(verb: string): Error {
  return Object.assign(new Error(`Cannot ${verb} headers after they are sent to the client`), {
    code: 'ERR_HTTP_HEADERS_SENT',
  });
}

/**
 * A write after end() is dropped and reported to its callback, as Node does. Node also emits
 * 'error' on the response, which kills the process when nobody listens, so that is passed on
 * only to listeners the application added, and only once the held response has gone out:
 * Fastify destroys a response that errs, which must not cut off the response it still holds.
 */
function writeAfterEnd(response: ServerResponse, callback: unknown): void {
  const error = Object.assign(new Error('write after end'), {
    code: 'ERR_STREAM_WRITE_AFTER_END',
  });
  if (typeof callback === 'function') process.nextTick(() => callback(error));
  response.once('finish', () => {
    if (response.listenerCount('error') > 0) response.emit('error', error);
  });
}

/** The headers in `names` that go out: those set on the response, then writeHead()'s. */
function pickHeaders(
  response: ServerResponse,
  names: readonly string[],
  headHeaders: OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined,
): Record<string, string> {
  const values = new Map<string, OutgoingHttpHeader>();
  for (const name of names) {
    const value = response.getHeader(name);
    if (value !== undefined) values.set(name, value);
  }
  if (Array.isArray(headHeaders)) {
    const flat = (Array.isArray(headHeaders[0]) ? headHeaders.flat() : headHeaders) as string[];
    const given = new Map<string, string[]>();
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const name = String(flat[i]).toLowerCase();
      given.set(name, [...(given.get(name) ?? []), String(flat[i + 1])]);
    }
    for (const [name, value] of given) if (names.includes(name)) values.set(name, value);
  } else if (headHeaders) {
    for (const [name, value] of Object.entries(headHeaders)) {
      const lower = name.toLowerCase();
      if (value !== undefined && names.includes(lower)) values.set(lower, value);
    }
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of values) {
    headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return headers;
}

function sendReplacement(
  response: ServerResponse,
  replacement: ReplacementResponse,
  callback: (() => void) | undefined,
): void {
  for (const name of response.getHeaderNames()) response.removeHeader(name);
  const body = Buffer.from(replacement.body);
  response.statusMessage = undefined as unknown as string;
  response.writeHead(replacement.status, {
    ...replacement.headers,
    'content-length': String(body.length),
  });
  response.end(body, callback);
}
