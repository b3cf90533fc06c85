// CONTRACT.md's fingerprint, end to end under Express and Fastify: two requests a handler
// could tell apart never share a fingerprint (query order, bodies no parser read, uploads in
// either interceptor order), any body JSON.parse accepts is fingerprinted rather than
// answered with a 500, and what cannot be fingerprinted is refused with a problem.
import { createHash, randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { gzipSync } from 'node:zlib';
import { ADAPTERS, type AdapterName } from '../support/test-app.js';
import { send, type TestResponse } from '../support/http.js';
import { expectProblem, expectReplayOf } from '../support/problem.js';
import { createFingerprintApp, type FingerprintApp } from './fingerprint-app.js';

const sha = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');
const keyed = (key: string, contentType?: string): Array<[string, string]> => [
  ['x-idempotency-key', key],
  ...(contentType ? [['content-type', contentType] as [string, string]] : []),
];

type Field = string | { filename: string; content: string };

/** A multipart POST as browsers and fetch send it: a new boundary on every send. */
async function upload(
  url: string,
  path: string,
  fields: Record<string, Field>,
  key?: string,
): Promise<TestResponse> {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (typeof value === 'string') form.append(name, value);
    else form.append(name, new Blob([value.content]), value.filename);
  }
  const response = await fetch(url + path, {
    method: 'POST',
    body: form,
    headers: key ? { 'x-idempotency-key': key } : {},
  });
  const body = Buffer.from(await response.arrayBuffer());
  const text = body.toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return {
    status: response.status,
    headers: Object.fromEntries(response.headers),
    body,
    text,
    json,
  };
}

/** A POST whose body is sent chunked (no Content-Length), in pieces. */
function sendChunked(
  url: string,
  path: string,
  headers: Record<string, string>,
  pieces: string[],
): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(path, url), { method: 'POST', headers }, (res) => {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    for (const piece of pieces) req.write(piece);
    req.end();
  });
}

describe.each(ADAPTERS)('fingerprint under %s', (adapter: AdapterName) => {
  let t: FingerprintApp;
  beforeAll(async () => {
    t = await createFingerprintApp(adapter);
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => t.runs.reset());

  describe('the query', () => {
    it('tells apart the same values in another order: the handler sees another array', async () => {
      const key = randomUUID();
      const first = await send(t.url, '/fp/query?ids=1&ids=2', { headers: keyed(key), body: {} });
      expect(first.status).toBe(201);
      expect(first.json).toEqual({ run: 1, query: { ids: ['1', '2'] } });
      const other = await send(t.url, '/fp/query?ids=2&ids=1', { headers: keyed(key), body: {} });
      expectProblem(other, 422, 'idempotency_key_reused');
      expect(t.runs.count('query')).toBe(1);
    });

    it('replays the same parameters sent in another order of names', async () => {
      const key = randomUUID();
      const first = await send(t.url, '/fp/query?b=2&a=1', { headers: keyed(key), body: {} });
      const again = await send(t.url, '/fp/query?a=1&b=2', { headers: keyed(key), body: {} });
      expect(first.status).toBe(201);
      expectReplayOf(again, first);
      expect(t.runs.count('query')).toBe(1);
    });
  });

  describe('JSON that JSON.parse accepts', () => {
    const nested = (open: string, inner: string, close: string, depth: number) =>
      open.repeat(depth) + inner + close.repeat(depth);
    it.each([
      ['a number beyond float range', '{"amount":1e400}'],
      ['a lone surrogate', '{"name":"\\ud800"}'],
      ['1,850 nested arrays', nested('[', '', ']', 1_850)],
      ['4,100 nested objects', nested('{"a":', '1', '}', 4_100)],
      ['20,000 nested arrays', nested('[', '', ']', 20_000)],
    ])('gets the handler’s answer, as without a key, then a replay: %s', async (_what, text) => {
      const body = Buffer.from(text);
      const plain = await send(t.url, '/fp/json', { body });
      const key = randomUUID();
      const first = await send(t.url, '/fp/json', { headers: keyed(key), body });
      const again = await send(t.url, '/fp/json', { headers: keyed(key), body });
      expect({ status: first.status, body: first.json }).toEqual({
        status: plain.status,
        body: { ...plain.json, run: 2 },
      });
      expect(first.status).toBe(201);
      expect(first.json.type).toBe(text.startsWith('[') ? 'array' : 'object');
      expectReplayOf(again, first);
      expect(t.runs.count('json')).toBe(2);
    });

    it('answers a compressed JSON body as without a key; inflated, however many values', async () => {
      const body = gzipSync(JSON.stringify(new Array(20_000).fill([0])));
      const headers: Array<[string, string]> = [
        ['content-type', 'application/json'],
        ['content-encoding', 'gzip'],
      ];
      const plain = await send(t.url, '/fp/json', { headers, body });
      const keyedHeaders = [...keyed(randomUUID()), ...headers];
      const first = await send(t.url, '/fp/json', { headers: keyedHeaders, body });
      const again = await send(t.url, '/fp/json', { headers: keyedHeaders, body });
      if (adapter === 'fastify') {
        // Fastify does not inflate request bodies: its parser rejects them, key or not.
        expect([plain.status, first.status, again.status]).toEqual([400, 400, 400]);
        expect(t.runs.count('json')).toBe(0);
        return;
      }
      expect([plain.json, first.json]).toEqual([
        { run: 1, type: 'array' },
        { run: 2, type: 'array' },
      ]);
      expect(first.status).toBe(201);
      expectReplayOf(again, first);
      expect(t.runs.count('json')).toBe(2);
    });

    it('tells apart strings that differ only in a lone surrogate', async () => {
      const key = randomUUID();
      const first = await send(t.url, '/fp/json', { headers: keyed(key), body: '["\\ud800"]' });
      const other = await send(t.url, '/fp/json', { headers: keyed(key), body: '["\\ud801"]' });
      expect(first.status).toBe(201);
      expectProblem(other, 422, 'idempotency_key_reused');
      expect(t.runs.count('json')).toBe(1);
    });
  });

  describe('bodies the handler reads as bytes', () => {
    it.each([
      'text/plain',
      'application/octet-stream',
      'application/vnd.api+json',
      'application/x-unread',
    ])(
      '%s: the same bytes replay, other bytes are another request, the handler gets them all',
      async (contentType) => {
        const key = randomUUID();
        const headers = keyed(key, contentType);
        const first = await send(t.url, '/fp/body', { headers, body: '{"n":1}' });
        expect(first.status).toBe(201);
        expect(first.json).toMatchObject({ run: 1, sha: sha('{"n":1}') });
        const again = await send(t.url, '/fp/body', { headers, body: '{"n":1}' });
        expectReplayOf(again, first);
        const other = await send(t.url, '/fp/body', { headers, body: '{"n":2}' });
        expectProblem(other, 422, 'idempotency_key_reused');
        expect(t.runs.count('body')).toBe(1);
      },
    );

    it('reads a chunked body no parser read, and hands all of it to the handler', async () => {
      const key = randomUUID();
      const headers = { 'x-idempotency-key': key, 'content-type': 'application/x-unread' };
      const pieces = ['x'.repeat(70_000), 'y'.repeat(70_000)];
      const first = await sendChunked(t.url, '/fp/body', headers, pieces);
      expect(first).toEqual({
        status: 201,
        json: { run: 1, parsed: false, size: 140_000, sha: sha(pieces.join('')) },
      });
      const other = await sendChunked(t.url, '/fp/body', headers, ['x'.repeat(140_000)]);
      expect(other.status).toBe(422);
      expect(other.json.code).toBe('idempotency_key_reused');
      expect(t.runs.count('body')).toBe(1);
    });

    it('tells forms apart by their fields', async () => {
      const key = randomUUID();
      const headers = keyed(key, 'application/x-www-form-urlencoded');
      const first = await send(t.url, '/fp/body', { headers, body: 'a=1&b=2' });
      expect(first.status).toBe(201);
      expect(first.json).toMatchObject({ run: 1, form: { a: '1', b: '2' } });
      expectReplayOf(await send(t.url, '/fp/body', { headers, body: 'a=1&b=2' }), first);
      const other = await send(t.url, '/fp/body', { headers, body: 'a=2&b=1' });
      expectProblem(other, 422, 'idempotency_key_reused');
      expect(t.runs.count('body')).toBe(1);
    });
  });

  describe('uploads', () => {
    const file = (content: string) => ({ filename: 'a.txt', content });

    it.each([
      ['parsed before the check', '/fp/upload/parsed-first', 'parsed-first'],
      ['read by the check, then parsed', '/fp/upload/checked-first', 'checked-first'],
      ['stored on disk', '/fp/upload/disk', 'disk'],
      ['under @Idempotent() on the class', '/fp/class/upload', 'class-upload'],
    ])(
      '%s: the same form replays (new boundary), another file or field is another request',
      async (_what, path, route) => {
        const key = randomUUID();
        const content = 'first file '.repeat(5_000);
        const first = await upload(t.url, path, { title: 'T', file: file(content) }, key);
        expect(first.status).toBe(201);
        expect(first.json).toEqual({
          run: 1,
          title: 'T',
          file: { field: 'file', name: 'a.txt', size: content.length, sha: sha(content) },
        });
        expectReplayOf(await upload(t.url, path, { title: 'T', file: file(content) }, key), first);
        const otherFile = await upload(t.url, path, { title: 'T', file: file('second file') }, key);
        expectProblem(otherFile, 422, 'idempotency_key_reused');
        const otherField = await upload(t.url, path, { title: 'U', file: file(content) }, key);
        expectProblem(otherField, 422, 'idempotency_key_reused');
        expect(t.runs.count(route)).toBe(1);
      },
    );

    it('tells apart files swapped between fields', async () => {
      const key = randomUUID();
      const first = await upload(
        t.url,
        '/fp/upload/fields',
        { a: file('one'), b: file('two') },
        key,
      );
      expect(first.status).toBe(201);
      const swapped = await upload(
        t.url,
        '/fp/upload/fields',
        { a: file('two'), b: file('one') },
        key,
      );
      expectProblem(swapped, 422, 'idempotency_key_reused');
      expect(t.runs.count('fields')).toBe(1);
    });

    it('refuses with 413 a body it would have to buffer past its limit, and keeps serving', async () => {
      const key = randomUUID();
      const boundary = 'big';
      const body = Buffer.concat([
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big"\r\n\r\n`,
        ),
        Buffer.alloc(10 * 1024 * 1024 + 1, 97),
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]);
      const headers = keyed(key, `multipart/form-data; boundary=${boundary}`);
      const refused = await send(t.url, '/fp/upload/checked-first', { headers, body });
      expectProblem(refused, 413, 'idempotency_body_too_large');
      expect(refused.json.detail).toMatch(/@Idempotent\(\) written above @UseInterceptors/);
      const small = await upload(t.url, '/fp/upload/checked-first', { file: file('ok') }, key);
      expect(small.status).toBe(201);
      expect(t.runs.count('checked-first')).toBe(1);
    });
  });
});

describe.each(ADAPTERS)('requests the fingerprint refuses under %s', (adapter: AdapterName) => {
  let t: FingerprintApp;
  beforeAll(async () => {
    t = await createFingerprintApp(adapter);
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => t.runs.reset());

  it.each([
    ['a body something is still streaming', '/fp/refused/streaming', /@Idempotent\(\) below/],
    ['a body read and thrown away', '/fp/refused/discarded', /neither what was parsed/],
  ])('%s: 500 with what to change, the handler does not run', async (_what, path, detail) => {
    const plain = await send(t.url, path, {
      headers: [['content-type', 'application/x-unread']],
      body: 'abc',
    });
    expect(plain.status).toBe(201);
    const refused = await send(t.url, path, {
      headers: keyed(randomUUID(), 'application/x-unread'),
      body: 'abc',
    });
    expectProblem(refused, 500, 'idempotency_unsupported_request');
    expect(refused.json.detail).toMatch(detail);
    expect(t.runs.count('refused')).toBe(1);
  });

  it('a body parsed into Dates, without its bytes: 500 rather than a guess', async () => {
    const body = '{"at":"2026-01-01T00:00:00Z"}';
    const headers = keyed(randomUUID(), 'application/x-dated');
    const plain = await send(t.url, '/fp/refused/dated', {
      headers: [['content-type', 'application/x-dated']],
      body,
    });
    expect(plain.json).toEqual({ run: 1, date: true });
    const refused = await send(t.url, '/fp/refused/dated', { headers, body });
    expectProblem(refused, 500, 'idempotency_unsupported_request');
    expect(refused.json.detail).toMatch(/an instance of Date/);
    expect(t.runs.count('dated')).toBe(1);
  });

  it('a client that stops sending: nothing is claimed, a retry with the body runs', async () => {
    const key = randomUUID();
    await new Promise<void>((resolve) => {
      const req = httpRequest(new URL('/fp/body', t.url), {
        method: 'POST',
        headers: {
          'x-idempotency-key': key,
          'content-type': 'application/x-unread',
          'content-length': '100000',
        },
      });
      req.on('error', () => resolve());
      req.write('x'.repeat(1_000), () => setTimeout(() => req.destroy(), 100));
    });
    const retry = await send(t.url, '/fp/body', {
      headers: keyed(key, 'application/x-unread'),
      body: 'x'.repeat(100_000),
    });
    expect(retry.status).toBe(201);
    expect(retry.json).toMatchObject({ run: 1, size: 100_000 });
    expect(t.runs.count('body')).toBe(1);
  });
});

describe.each(ADAPTERS)('fingerprint under %s with rawBody: true', (adapter: AdapterName) => {
  let t: FingerprintApp;
  beforeAll(async () => {
    t = await createFingerprintApp(adapter, { rawBody: true });
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => t.runs.reset());

  it.each([
    ['text/plain', 'one', 'two'],
    ['application/octet-stream', 'one', 'two'],
    ['application/x-www-form-urlencoded', 'a=1&b=2', 'b=2&a=1'],
  ])('%s: compared byte for byte', async (contentType, body, other) => {
    const key = randomUUID();
    const headers = keyed(key, contentType);
    const first = await send(t.url, '/fp/body', { headers, body });
    expect(first.status).toBe(201);
    expectReplayOf(await send(t.url, '/fp/body', { headers, body }), first);
    expectProblem(
      await send(t.url, '/fp/body', { headers, body: other }),
      422,
      'idempotency_key_reused',
    );
    expect(t.runs.count('body')).toBe(1);
  });

  it('compares a body parsed into Dates by its bytes', async () => {
    const key = randomUUID();
    const headers = keyed(key, 'application/x-dated');
    const body = '{"at":"2026-01-01T00:00:00Z"}';
    const first = await send(t.url, '/fp/refused/dated', { headers, body });
    expect(first.json).toEqual({ run: 1, date: true });
    expectReplayOf(await send(t.url, '/fp/refused/dated', { headers, body }), first);
    const other = await send(t.url, '/fp/refused/dated', {
      headers,
      body: '{"at":"2026-01-02T00:00:00Z"}',
    });
    expectProblem(other, 422, 'idempotency_key_reused');
    expect(t.runs.count('dated')).toBe(1);
  });

  it('still compares JSON by value: key order and whitespace do not matter', async () => {
    const key = randomUUID();
    const first = await send(t.url, '/fp/json', { headers: keyed(key), body: '{"a":1,"b":[1,2]}' });
    const again = await send(t.url, '/fp/json', {
      headers: keyed(key),
      body: '{ "b": [1, 2], "a": 1 }',
    });
    expect(first.status).toBe(201);
    expect(first.json.type).toBe('object');
    expectReplayOf(again, first);
    expect(t.runs.count('json')).toBe(1);
  });
});
