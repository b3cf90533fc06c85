// Issue 12, HTTP: the `key` option names another header for one route, or reads the key
// from the request itself; a resolved key is checked like the header (400 when malformed or
// missing where required). Under Express and Fastify.
import { Body, Controller, Post, type ExecutionContext } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { INestApplication } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { send } from '../support/http.js';
import { expectProblem } from '../support/problem.js';
import { ADAPTERS, dropTable, RunCounter, uniqueTableName } from '../support/test-app.js';
import { createAdapterApp, listenOnLoopback, testIdempotencyModule } from '../support/nest-app.js';

const operationId = (context: ExecutionContext) =>
  context.switchToHttp().getRequest().body?.operationId;

@Controller('transfers')
class TransfersController {
  constructor(private readonly runs: RunCounter) {}

  @Post('by-header')
  @Idempotent({ key: 'Idempotency-Key' })
  byHeader(@Body() body: unknown) {
    this.runs.hit('by-header');
    return { run: this.runs.count('by-header'), body };
  }

  @Post('by-body')
  @Idempotent({ key: operationId, required: true })
  byBody(@Body() body: unknown) {
    this.runs.hit('by-body');
    return { run: this.runs.count('by-body'), body };
  }
}

describe.each(ADAPTERS)('the key option under %s', (adapter) => {
  const tableName = uniqueTableName('idem_key');
  let app: INestApplication;
  let url: string;
  let runs: RunCounter;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [testIdempotencyModule(tableName)],
      controllers: [TransfersController],
      providers: [RunCounter],
    }).compile();
    app = createAdapterApp(moduleRef, adapter);
    url = await listenOnLoopback(app);
    runs = app.get(RunCounter);
  });
  afterAll(async () => {
    await app?.close();
    await dropTable(tableName);
  });

  it('a header name: that header carries the key, the module default does not', async () => {
    const key = randomUUID();
    const post = (header: string) =>
      send(url, '/transfers/by-header', { headers: [[header, key]], body: { amount: 1 } });
    const first = await post('idempotency-key');
    expect(first.status).toBe(201);
    const again = await post('Idempotency-Key');
    expect(again.status).toBe(409);
    expect(again.text).toBe(first.text);
    // The module's header is just another header on this route: it runs untracked.
    expect((await post('x-idempotency-key')).status).toBe(201);
    expect(runs.count('by-header')).toBe(2);
  });

  it('a resolver: the key from the body; malformed or missing is a 400 and nothing runs', async () => {
    const id = randomUUID();
    const post = (body: object) => send(url, '/transfers/by-body', { body });
    const first = await post({ operationId: id, amount: 5 });
    expect(first.status).toBe(201);
    const again = await post({ amount: 5, operationId: id });
    expect(again.status).toBe(409);
    expect(again.text).toBe(first.text);
    expectProblem(await post({ operationId: '', amount: 5 }), 400, 'idempotency_key_invalid');
    expectProblem(await post({ operationId: 7, amount: 5 }), 400, 'idempotency_key_invalid');
    const missing = await post({ amount: 5 });
    expectProblem(missing, 400, 'idempotency_key_missing');
    expect(missing.json.detail).toMatch(/key/);
    expect(runs.count('by-body')).toBe(1);
  });
});
