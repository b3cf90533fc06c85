// HTTP/2 frames a body with DATA frames: a client need not send Content-Length, and never
// sends Transfer-Encoding. Such a body is still a body: a different one under the same key
// is another request (422), not "no body" replayed (409). Fastify with `http2: true` (h2c).
import { Body, Controller, Post, type INestApplication } from '@nestjs/common';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { randomUUID } from 'node:crypto';
import { connect } from 'node:http2';
import { Idempotent } from '../../src/index.js';
import { testIdempotencyModule } from '../support/nest-app.js';
import { dropTable, uniqueTableName } from '../support/test-app.js';

let runs = 0;

@Controller('h2')
class Http2Controller {
  @Post('charges')
  @Idempotent()
  charge(@Body() body?: { amount: number }) {
    runs++;
    return { charged: body?.amount ?? null };
  }
}

/** POSTs JSON over HTTP/2 without Content-Length, as a streaming client does. */
function post(url: string, key: string, body?: object): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const session = connect(url);
    session.on('error', reject);
    const stream = session.request({
      ':method': 'POST',
      ':path': '/h2/charges',
      ...(body && { 'content-type': 'application/json' }),
      'x-idempotency-key': key,
    });
    let status = 0;
    let text = '';
    stream.on('response', (headers) => (status = Number(headers[':status'])));
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => (text += chunk));
    stream.on('end', () => {
      session.close();
      resolve({ status, text });
    });
    stream.on('error', reject);
    stream.end(body && JSON.stringify(body));
  });
}

describe('fingerprint of an HTTP/2 body without Content-Length (fastify, h2c)', () => {
  const tableName = uniqueTableName('idem_h2');
  let app: INestApplication;
  let url: string;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [testIdempotencyModule(tableName)],
      controllers: [Http2Controller],
    }).compile();
    app = moduleRef.createNestApplication(new FastifyAdapter({ http2: true } as never), {
      logger: false,
    });
    await app.listen(0, '127.0.0.1');
    url = `http://127.0.0.1:${app.getHttpServer().address().port}`;
  });
  afterAll(async () => {
    await app?.close();
    await dropTable(tableName);
  });

  it('answers another amount under the same key with 422, and runs the handler once', async () => {
    const key = randomUUID();
    const first = await post(url, key, { amount: 10 });
    expect(first).toEqual({ status: 201, text: JSON.stringify({ charged: 10 }) });
    const other = await post(url, key, { amount: 1000 });
    expect(other.status).toBe(422);
    expect(runs).toBe(1);
    const retry = await post(url, key, { amount: 10 });
    expect(retry.status).toBe(409);
    expect(retry.text).toBe(first.text);
  });

  it('runs a POST without a body once and replays it', async () => {
    const key = randomUUID();
    const before = runs;
    const first = await post(url, key);
    expect(first).toEqual({ status: 201, text: JSON.stringify({ charged: null }) });
    const retry = await post(url, key);
    expect(retry.status).toBe(409);
    expect(retry.text).toBe(first.text);
    expect(runs - before).toBe(1);
  });
});
