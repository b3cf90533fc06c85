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

/** The captured response as it is, but with another status and these headers added. */
export interface Restatus {
  restatus: number;
  headers: Record<string, string>;
}

type Delivery = ReplacementResponse | Restatus | undefined;

/** The ServerResponse methods the capture stands in for while it holds the response. */
type Patched = Pick<
  ServerResponse,
  'writeHead' | 'write' | 'end' | 'flushHeaders' | 'setHeader' | 'appendHeader' | 'removeHeader'
>;

/** Where a held response keeps its state: what it reports, what was written, where it goes. */
const HOLD = Symbol('idempotency.hold');

/**
 * One held response. The methods that stand in for Node's are the same functions for every
 * response and find this through `this[HOLD]`: closures made per response would be seven
 * allocations on every request, for no state the response cannot carry.
 */
class Hold {
  held = true;
  headSent = false;
  ended = false;
  /** The status and message fixed by the first writeHead(), write() or end(). */
  head: { status: number; message: string | undefined } | undefined = undefined;
  /** writeHead()'s arguments, passed on as given at delivery. */
  headArgs: unknown[] | undefined = undefined;
  headHeaders: OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined = undefined;
  readonly chunks: Buffer[] = [];

  constructor(
    /** Node's methods, or the wrappers middleware such as compression put on the instance. */
    readonly original: Patched,
    /** The response's own prototype, when it is held by a prototype in front of it. */
    readonly prototype: object | undefined,
    readonly storedHeaders: readonly string[],
    readonly settle: (captured: CapturedResponse) => Promise<Delivery>,
  ) {}
}
type HeldResponse = ServerResponse & { [HOLD]?: Hold };

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
      const hold = this[HOLD];
      return hold?.held ? hold.headSent : nodeHeadersSent.call(this);
    },
  },
  writableEnded: {
    configurable: true,
    get(this: HeldResponse) {
      const hold = this[HOLD];
      return hold?.held ? hold.ended : nodeWritableEnded.call(this);
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
  settle: (captured: CapturedResponse) => Promise<Delivery>,
): void {
  if (!hasOwnStandIns(response)) {
    // The usual case: one prototype put in front of the response's own (as Express does to
    // every response), rather than nine properties added to each response and seven put back.
    const prototype = Object.getPrototypeOf(response) as object;
    (response as HeldResponse)[HOLD] = new Hold(
      prototype as Patched,
      prototype,
      storedHeaders,
      settle,
    );
    Object.setPrototypeOf(response, heldPrototypeOf(prototype));
    return;
  }
  // Middleware has wrapped some of these methods on the response itself (compression,
  // on-headers): those wrappers are what to stand in for, and to call at delivery.
  const original: Patched = {
    writeHead: response.writeHead,
    write: response.write,
    end: response.end,
    flushHeaders: response.flushHeaders,
    setHeader: response.setHeader,
    appendHeader: response.appendHeader,
    removeHeader: response.removeHeader,
  };
  (response as HeldResponse)[HOLD] = new Hold(original, undefined, storedHeaders, settle);
  Object.defineProperties(response, STATE_GETTERS);
  Object.assign(response, HELD);
}

const METHODS = [
  'writeHead',
  'write',
  'end',
  'flushHeaders',
  'setHeader',
  'appendHeader',
  'removeHeader',
] as const;
const STAND_INS = [...METHODS, 'headersSent', 'writableEnded'];

function hasOwnStandIns(response: ServerResponse): boolean {
  for (const name of STAND_INS) if (Object.hasOwn(response, name)) return true;
  return false;
}

/** For each prototype responses have (Node's, each Express app's), the one that holds them. */
const heldPrototypes = new WeakMap<object, object>();

function heldPrototypeOf(prototype: object): object {
  let held = heldPrototypes.get(prototype);
  if (!held) {
    held = Object.create(prototype, STATE_GETTERS) as object;
    Object.assign(held, HELD);
    heldPrototypes.set(prototype, held);
  }
  return held;
}

/**
 * Gives the response back its own methods. Put back by assignment, not `delete`, which would
 * turn the response into a slow dictionary-mode object for the rest of its life; a method
 * wrapped while the response was held keeps its wrapper (which calls through to the real one).
 */
function release(response: ServerResponse, hold: Hold): void {
  hold.held = false;
  if (hold.prototype) {
    Object.setPrototypeOf(response, hold.prototype);
    return;
  }
  const methods = response as unknown as Record<string, unknown>;
  const held = HELD as unknown as Record<string, unknown>;
  const original = hold.original as unknown as Record<string, unknown>;
  for (const name of METHODS) if (methods[name] === held[name]) methods[name] = original[name];
}

function holdOf(response: ServerResponse): Hold {
  return (response as HeldResponse)[HOLD]!;
}

function fixHead(response: ServerResponse, hold: Hold): void {
  hold.head ??= { status: response.statusCode, message: response.statusMessage || undefined };
  hold.headSent = true;
}

function notAfterHead(hold: Hold, verb: string): void {
  if (hold.head) throw headersSentError(verb);
}

/**
 * What a held response does in place of Node's methods. Once it is released, they are its own
 * methods again: a wrapper put on the response while it was held (on-headers in a handler)
 * calls these, and must reach the real ones.
 */
const HELD: Patched = {
  writeHead: function (this: ServerResponse, status: number, ...rest: unknown[]) {
    const hold = holdOf(this);
    if (!hold.held) return hold.original.writeHead.call(this, status, ...(rest as []));
    notAfterHead(hold, 'write');
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
    hold.headArgs = [code, ...rest];
    hold.headHeaders = headers;
    this.statusCode = code;
    if (message !== undefined) this.statusMessage = message;
    fixHead(this, hold);
    return this;
  } as Patched['writeHead'],

  write: function (this: ServerResponse, chunk: unknown, encoding?: unknown, callback?: unknown) {
    const hold = holdOf(this);
    if (!hold.held)
      return hold.original.write.call(this, chunk, encoding as never, callback as never);
    const done = typeof encoding === 'function' ? encoding : callback;
    const buffer = toBuffer(chunk, encoding);
    if (hold.ended) {
      writeAfterEnd(this, done);
      return true;
    }
    fixHead(this, hold);
    hold.chunks.push(buffer);
    if (typeof done === 'function') process.nextTick(done as () => void);
    return true;
  } as Patched['write'],

  end: function (this: ServerResponse, chunk?: unknown, encoding?: unknown, callback?: unknown) {
    const hold = holdOf(this);
    if (!hold.held)
      return hold.original.end.call(this, chunk, encoding as never, callback as never);
    return endHeld(this, hold, chunk, encoding, callback);
  } as Patched['end'],

  flushHeaders: function (this: ServerResponse) {
    const hold = holdOf(this);
    if (!hold.held) return hold.original.flushHeaders.call(this);
    fixHead(this, hold);
  },

  setHeader: function (
    this: ServerResponse,
    name: string,
    value: number | string | readonly string[],
  ) {
    const hold = holdOf(this);
    if (hold.held) notAfterHead(hold, 'set');
    return hold.original.setHeader.call(this, name, value);
  } as Patched['setHeader'],

  appendHeader: function (this: ServerResponse, name: string, value: string | readonly string[]) {
    const hold = holdOf(this);
    if (hold.held) notAfterHead(hold, 'append');
    return hold.original.appendHeader.call(this, name, value);
  } as Patched['appendHeader'],

  removeHeader: function (this: ServerResponse, name: string) {
    const hold = holdOf(this);
    if (hold.held) notAfterHead(hold, 'remove');
    hold.original.removeHeader.call(this, name);
  },
};

/** end() of a held response: the response is complete, so it is settled, then sent. */
function endHeld(
  response: ServerResponse,
  hold: Hold,
  chunk?: unknown,
  encoding?: unknown,
  callback?: unknown,
): ServerResponse {
  if (typeof chunk === 'function') [callback, chunk] = [chunk, undefined];
  if (typeof encoding === 'function') [callback, encoding] = [encoding, undefined];
  const done = typeof callback === 'function' ? (callback as () => void) : undefined;
  if (hold.ended) {
    // As Node: a late chunk is an error for its callback; a bare end() waits for 'finish'.
    if (chunk) writeAfterEnd(response, done);
    else if (done) response.once('finish', done);
    return response;
  }
  if (chunk) hold.chunks.push(toBuffer(chunk, encoding));
  fixHead(response, hold);
  hold.ended = true;
  const { status, message } = hold.head!;
  // Node sends no body for these, whatever was written; neither is one stored.
  const bodiless =
    status < 200 || status === 204 || status === 304 || response.req?.method === 'HEAD';
  const body = bodiless ? Buffer.alloc(0) : Buffer.concat(hold.chunks);
  const deliver = (delivery?: Delivery) => {
    release(response, hold);
    try {
      if (delivery && 'body' in delivery) return sendReplacement(response, delivery, done);
      let headArgs = hold.headArgs;
      if (delivery) {
        // Another status: the captured reason phrase (its own) goes, as do writeHead's.
        response.statusCode = delivery.restatus;
        for (const [name, value] of Object.entries(delivery.headers)) {
          response.setHeader(name, value);
        }
        if (headArgs) {
          const [, ...rest] = headArgs;
          headArgs = [delivery.restatus, ...(typeof rest[0] === 'string' ? rest.slice(1) : rest)];
        }
      } else {
        response.statusCode = status;
        if (message !== undefined) response.statusMessage = message;
      }
      if (headArgs) (response.writeHead as (...args: unknown[]) => void)(...headArgs);
      response.end(bodiless ? undefined : body, done);
    } catch (error) {
      // Nothing here may throw into a promise chain nobody awaits (the process would
      // die): a response that cannot be sent is cut off, as Node does with a broken one.
      response.destroy(error as Error);
    }
  };
  const headers = pickHeaders(response, hold.storedHeaders, hold.headHeaders);
  hold.settle({ status, headers, body }).then(deliver, () => deliver());
  return response;
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
