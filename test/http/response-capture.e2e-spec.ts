// The capture delivers exactly what it stores, whatever the sequence of writes: each scenario
// runs once without a key (what Node and the adapter send on their own), once with a key, and
// is replayed. The keyed response must equal the unkeyed one (status, message, headers, body
// bytes), the replay must carry those same bytes, and the handler must run once per key.
// Under Express and Fastify, plain and with a compression middleware. With compression, the
// replay's content is compared decoded: the app's middleware encodes each response it sends,
// replays included. The write and end callbacks (and the errors a write throws) are compared
// without it: the capture answers them as Node does, which the middleware does not (express
// `compression` drops write callbacks, for one).
import { All, Controller, Param, Post, Res, type Type } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import { Idempotent } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter } from '../support/test-app.js';

/** 256 KiB that no two offsets of which look alike, so a lost or moved chunk shows. */
const BIG = Buffer.from(Array.from({ length: 256 * 1024 }, (_, i) => (i * 31 + (i >> 8)) % 251));
const TEXT = 'text/plain; charset=utf-8';

type Scenario = (res: any, raw: any, hit: (what: string) => void) => unknown;

/** What each scenario's callbacks and catch blocks saw, in order, across requests. */
const EVENTS = new Map<string, string[]>();
const eventsOf = (scenario: string) =>
  EVENTS.get(scenario) ?? EVENTS.set(scenario, []).get(scenario)!;

/** Each scenario is a handler body; `res` is Express's response or Fastify's reply. */
const SCENARIOS: Record<string, Scenario> = {
  // The reported defect: the adapter's own send() of a large buffer in a passthrough handler.
  'send-256k': (res) => {
    res.send(BIG);
  },
  // Nest replies again with what the handler returned; the handler's answer stands.
  'send-then-return': (res) => {
    res.send('sent by the handler');
    return { nest: 'replies too' };
  },
  'writehead-write-end': (_res, raw) => {
    raw.writeHead(200, { 'content-type': TEXT, 'x-step': 'head' });
    raw.write('a');
    raw.write(Buffer.from('b'));
    raw.write(new Uint8Array([99]));
    raw.end('d');
  },
  'implicit-head': (_res, raw, hit) => {
    raw.statusCode = 202;
    raw.setHeader('content-type', TEXT);
    raw.write('x'.repeat(70_000));
    raw.write('y', 'utf8', () => hit('write-callback'));
    raw.end();
  },
  'end-twice': (_res, raw, hit) => {
    raw.setHeader('content-type', TEXT);
    raw.end('first', () => hit('first-end-callback'));
    raw.end();
    raw.end(() => hit('late-end-callback'));
  },
  'write-after-end': (_res, raw, hit) => {
    raw.on('error', (error: any) => hit(`error-event:${error.code}`));
    raw.setHeader('content-type', TEXT);
    raw.end('first');
    raw.write('late', (error: any) => hit(`write-callback:${error?.code}`));
    raw.end('later', (error: any) => hit(`end-callback:${error?.code}`));
  },
  'header-after-head': (_res, raw, hit) => {
    raw.writeHead(201, { 'content-type': TEXT });
    for (const change of [
      () => raw.setHeader('x-late', 'set'),
      () => raw.appendHeader('x-late', 'appended'),
      () => raw.removeHeader('content-type'),
      () => raw.writeHead(500),
    ]) {
      try {
        change();
      } catch (error: any) {
        hit(`threw:${error.code}`);
      }
    }
    raw.end('head was fixed');
  },
  encodings: (_res, raw) => {
    raw.setHeader('content-type', 'application/octet-stream');
    raw.write('68656c6c6f', 'hex');
    raw.write('IHdvcmxk', 'base64');
    raw.end('\u00e9', 'latin1');
  },
  'empty-end': (_res, raw) => {
    raw.statusCode = 201;
    raw.end();
  },
  'no-content': (_res, raw) => {
    raw.writeHead(204);
    raw.write('dropped by Node');
    raw.end('dropped too');
  },
  'status-message': (_res, raw) => {
    raw.writeHead(200, 'Fine Thanks', { 'content-type': TEXT });
    raw.end('with a reason phrase');
  },
  'array-head': (_res, raw) => {
    raw.writeHead(200, ['content-type', TEXT, 'x-multi', 'one', 'x-multi', 'two']);
    raw.end('headers as an array');
  },
  pipeline: async (_res, raw) => {
    raw.setHeader('content-type', TEXT);
    await pipeline(Readable.from(['piped-1 ', 'piped-2 ', 'piped-3']), raw);
  },
  'flush-headers': (_res, raw, hit) => {
    raw.setHeader('content-type', TEXT);
    raw.flushHeaders();
    try {
      raw.setHeader('x-late', 'after flush');
    } catch (error: any) {
      hit(`threw:${error.code}`);
    }
    raw.end('flushed first');
  },
  // A method wrapped on the response while it is held, as on-headers does: the wrapper runs
  // when the response goes out, as it does without a key.
  'wrapped-while-held': (_res, raw) => {
    const writeHead = raw.writeHead;
    raw.writeHead = function (this: any, ...args: unknown[]) {
      this.setHeader('x-wrapped', 'on the way out');
      return writeHead.apply(this, args);
    };
    raw.setHeader('content-type', TEXT);
    raw.end('wrapped');
  },
  'invalid-chunks': (_res, raw, hit) => {
    raw.setHeader('content-type', TEXT);
    for (const chunk of [null, 42, undefined]) {
      try {
        raw.write(chunk);
      } catch (error: any) {
        hit(`threw:${error.code}`);
      }
    }
    raw.end('after invalid chunks');
  },
};

@Controller('capture')
class CaptureController {
  constructor(private readonly runs: RunCounter) {}

  @Post(':scenario')
  @Idempotent()
  run(@Param('scenario') scenario: string, @Res({ passthrough: true }) res: any) {
    this.runs.hit(scenario);
    return SCENARIOS[scenario](res, res.raw ?? res, (what) => eventsOf(scenario).push(what));
  }

  /** HEAD is never tracked: it reaches the handler untouched, key or not. */
  @All('any/head')
  @Idempotent()
  head() {
    this.runs.hit('head');
    return { head: true };
  }
}

/** What a client can tell apart in a response, framing headers aside. */
function visible(response: TestResponse) {
  const framing = ['date', 'content-length', 'transfer-encoding'];
  return {
    status: response.status,
    statusMessage: response.statusMessage,
    headers: Object.fromEntries(
      Object.entries(response.headers).filter(([name]) => !framing.includes(name)),
    ),
    length: response.body.length,
    start: response.body.subarray(0, 60).toString('base64'),
  };
}

const SETUPS = ADAPTERS.flatMap((adapter) => [
  { adapter, compress: false },
  { adapter, compress: true },
]);

describe.each(SETUPS)('response capture under $adapter (compressed: $compress)', (setup) => {
  let t: RouteApp;
  const encoding: Array<[string, string]> = setup.compress ? [['accept-encoding', 'gzip']] : [];

  beforeAll(async () => {
    t = await createRouteApp(setup.adapter, {
      controllers: [CaptureController as Type],
      compress: setup.compress,
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it.each(Object.keys(SCENARIOS))(
    '%s: the keyed response is the unkeyed one, and the replay carries its bytes',
    async (scenario) => {
      const path = `/capture/${scenario}`;
      const eventsDuring = async (request: () => Promise<TestResponse>) => {
        const mark = eventsOf(scenario).length;
        const response = await request();
        await settleCallbacks();
        return { response, events: eventsOf(scenario).slice(mark).sort() };
      };

      const { response: unkeyed, events: unkeyedEvents } = await eventsDuring(() =>
        send(t.url, path, { headers: encoding, body: {} }),
      );
      const key = randomUUID();
      const headers: Array<[string, string]> = [['x-idempotency-key', key], ...encoding];
      const { response: keyed, events: keyedEvents } = await eventsDuring(() =>
        send(t.url, path, { headers, body: {} }),
      );

      expect(visible(keyed)).toEqual(visible(unkeyed));
      expect(keyed.body.equals(unkeyed.body)).toBe(true);
      if (!setup.compress) expect(keyedEvents).toEqual(unkeyedEvents);

      const replay = await send(t.url, path, { headers, body: {} });
      expect(replay.status).toBe(409);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.headers['x-idempotency-original-status']).toBe(String(keyed.status));
      expect(decoded(replay).equals(decoded(keyed))).toBe(true);
      if (!setup.compress) expect(replay.body.equals(keyed.body)).toBe(true);
      expect(replay.headers['content-type']).toBe(keyed.headers['content-type']);
      expect(t.runs.count(scenario)).toBe(2); // unkeyed + keyed; the replay did not run it
    },
  );

  it('answers the reported case in full: 256 KiB sent with res.send() under a key', async () => {
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    const first = await send(t.url, '/capture/send-256k', { headers, body: {} });
    expect(first.status).toBe(201);
    if (!setup.compress) expect(first.body.equals(BIG)).toBe(true);
    const replay = await send(t.url, '/capture/send-256k', { headers, body: {} });
    expect(replay.status).toBe(409);
    expect(replay.body.equals(first.body)).toBe(true);
  });

  it('leaves HEAD alone, key or not', async () => {
    const before = t.runs.count('head');
    const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
    for (let i = 0; i < 2; i++) {
      const res = await send(t.url, '/capture/any/head', { method: 'HEAD', headers });
      expect(res.status).toBe(200);
      expect(res.body.length).toBe(0);
      expect(res.headers['idempotent-replayed']).toBeUndefined();
    }
    expect(t.runs.count('head') - before).toBe(2);
  });
});

/**
 * The body with its Content-Encoding undone. (Fastify with @fastify/compress sends a
 * passthrough handler's reply.send() as an empty "gzip" body, key or not: nothing to undo.)
 */
function decoded(response: TestResponse): Buffer {
  if (response.body.length === 0) return response.body;
  switch (response.headers['content-encoding']) {
    case 'gzip':
      return gunzipSync(response.body);
    case 'deflate':
      return inflateSync(response.body);
    case 'br':
      return brotliDecompressSync(response.body);
    default:
      return response.body;
  }
}

/** Write and end callbacks run on 'finish', a moment after the client has the response. */
function settleCallbacks(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 50));
}
