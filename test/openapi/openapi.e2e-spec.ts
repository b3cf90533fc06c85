// With @nestjs/swagger installed, every @Idempotent() route documents its key header, its
// replay and the module's problem+json errors, and keeps its own success response. Checked on
// the example (which serves /docs) and on routes with other options, under Express and
// Fastify; what the document promises is checked against what the example answers.
import { Body, Controller, HttpCode, Post, Put, type INestApplication } from '@nestjs/common';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import {
  ApiBadRequestResponse,
  ApiCreatedResponse,
  ApiHeader,
  ApiOkResponse,
  ApiProperty,
  DocumentBuilder,
  SwaggerModule,
} from '@nestjs/swagger';
import { Test } from '@nestjs/testing';
import { randomBytes, randomUUID } from 'node:crypto';
import { startBookingsApp, type RunningBookingsApp } from '../../example/bookings-app.js';
import { createBookingsDocument } from '../../example/openapi.js';
import { IdempotencyKeys, Idempotent } from '../../src/index.js';
import { IdempotencyTestingModule } from '../../src/testing/index.js';
import { ADAPTERS, dropSchema } from '../support/test-app.js';
import { bookingRequest } from '../support/booking-request.js';
import { send } from '../support/http.js';
import { expectProblem } from '../support/problem.js';

const BOOK = '/x/partners/{partnerId}/instant_booking';
const PROBLEM = 'application/problem+json';

/** The responses of one operation, and its header parameters by name. */
function operation(document: any, path: string, method: string) {
  const op = document.paths[path]?.[method];
  expect(op).toBeDefined();
  const headers = Object.fromEntries(
    (op.parameters ?? [])
      .filter((parameter: any) => parameter.in === 'header')
      .map((parameter: any) => [parameter.name, parameter]),
  );
  return { responses: op.responses as Record<string, any>, headers };
}

function expectProblemResponse(response: any, codes: string[]) {
  const schema = response.content[PROBLEM].schema;
  expect(Object.keys(response.content)).toEqual([PROBLEM]);
  expect(schema.required).toEqual(['type', 'title', 'status', 'detail', 'code']);
  expect(schema.properties.code.enum).toEqual(codes);
}

describe.each(ADAPTERS)('OpenAPI document of the example (%s)', (adapter) => {
  const schema = `openapi_${adapter}_${randomBytes(4).toString('hex')}`;
  let app: RunningBookingsApp;
  let document: any;

  beforeAll(async () => {
    app = await startBookingsApp({
      databaseUrl: process.env.DATABASE_URL!,
      port: 0,
      schema,
      adapter,
      logger: false,
    });
    document = createBookingsDocument(app.app);
  }, 60_000);

  afterAll(async () => {
    if (!app) return;
    try {
      await app.close();
    } finally {
      await dropSchema(schema);
    }
  });

  it('documents the key header: optional on this route, 1 to 255 printable ASCII', () => {
    const { headers } = operation(document, BOOK, 'post');
    expect(headers['x-idempotency-key']).toMatchObject({
      in: 'header',
      required: false,
      schema: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[\\x20-\\x7E]+$' },
    });
  });

  it("keeps the route's own success (200 from @HttpCode) and adds no 201", () => {
    const { responses } = operation(document, BOOK, 'post');
    expect(Object.keys(responses).sort()).toEqual(['200', '400', '409', '422', '423', '503']);
  });

  it('documents the replay (409) with its headers, and 423 and 503 with Retry-After', () => {
    const { responses } = operation(document, BOOK, 'post');
    expect(Object.keys(responses['409'].headers).sort()).toEqual([
      'Idempotent-Replayed',
      'x-idempotency-original-status',
    ]);
    expect(responses['409'].headers['Idempotent-Replayed'].schema).toEqual({
      type: 'string',
      enum: ['true'],
    });
    expect(Object.keys(responses['423'].headers)).toEqual(['Retry-After']);
    expect(Object.keys(responses['503'].headers)).toEqual(['Retry-After']);
  });

  it('documents 400, 422, 423 and 503 as problem+json with their stable codes', () => {
    const { responses } = operation(document, BOOK, 'post');
    expectProblemResponse(responses['400'], [
      'idempotency_key_invalid',
      'idempotency_body_incomplete',
    ]);
    expectProblemResponse(responses['422'], ['idempotency_key_reused']);
    expect(responses['422'].description).toMatch(
      /a conflict the handler answered itself \(its 409/,
    );
    expectProblemResponse(responses['423'], ['idempotency_request_in_flight']);
    expectProblemResponse(responses['503'], [
      'idempotency_store_unavailable',
      'idempotency_lease_lost',
    ]);
  });

  it('documents nothing of the kind on routes that are not idempotent', () => {
    for (const [path, method] of [
      ['/x/partners/{partnerId}/bookings/{id}/redeliver', 'post'],
      ['/x/partners/{partnerId}/bookings', 'get'],
    ]) {
      const { responses, headers } = operation(document, path, method);
      expect(headers).toEqual({});
      expect(Object.keys(responses)).toEqual(['200']);
    }
  });

  it('serves Swagger UI at /docs and the same document at /docs-json', async () => {
    const ui = await send(app.url, '/docs', { method: 'GET' });
    expect(ui.status).toBe(200);
    expect(ui.headers['content-type']).toMatch(/^text\/html/);
    const json = await send(app.url, '/docs-json', { method: 'GET' });
    expect(json.status).toBe(200);
    expect(json.json.paths[BOOK]).toEqual(JSON.parse(JSON.stringify(document.paths[BOOK])));
  });

  it('answers as documented: the replay carries the documented headers, errors the codes', async () => {
    const { responses } = operation(document, BOOK, 'post');
    const path = '/x/partners/ACME01/instant_booking';
    const key = randomUUID();
    const headers: Array<[string, string]> = [
      ['authorization', 'Bearer demo-token-acme'],
      ['x-idempotency-key', key],
    ];
    const first = await send(app.url, path, { headers, body: bookingRequest(42.5) });
    const replay = await send(app.url, path, { headers, body: bookingRequest(42.5) });
    expect(first.status).toBe(200);
    expect(replay.status).toBe(409);
    expect(replay.body.equals(first.body)).toBe(true);
    for (const name of Object.keys(responses['409'].headers)) {
      expect(replay.headers[name.toLowerCase()]).toBeDefined();
    }
    expect(replay.headers['x-idempotency-original-status']).toBe('200');
    const reused = await send(app.url, path, { headers, body: bookingRequest(99) });
    expectProblem(reused, 422, responses['422'].content[PROBLEM].schema.properties.code.enum[0]);
    // One booking: the replay and the refused reuse did not run the handler.
    const count = await send(app.url, '/x/partners/ACME01/bookings', {
      method: 'GET',
      headers: [['authorization', 'Bearer demo-token-acme']],
    });
    expect(count.json).toEqual({ partner_id: 'ACME01', total: 1 });
    // The README's "Which scope": the example's guard makes the partner the owner.
    const record = await app.app.get(IdempotencyKeys).lookup({ key, scope: 'user:ACME01' });
    expect(record).toMatchObject({
      state: 'completed',
      response: { status: 200, bodyBytes: first.body.length },
    });
  });
});

class Receipt {
  @ApiProperty()
  id!: string;
}

@Controller('payments')
class PaymentsController {
  @Post()
  @ApiCreatedResponse({ type: Receipt, description: 'The receipt.' })
  @Idempotent({ required: true })
  pay(@Body() _body: unknown): Receipt {
    return { id: 'r1' };
  }

  @Put(':id')
  @HttpCode(202)
  @Idempotent({ replayStatus: 'original' })
  update(): void {}

  @Post('by-message')
  @Idempotent({ key: () => 'from-the-call' })
  byMessage(): void {}

  @Post('answered-with-200')
  @ApiOkResponse({ type: Receipt })
  @Idempotent()
  answeredWith200(): Receipt {
    return { id: 'r2' };
  }

  @Post('validated')
  @ApiBadRequestResponse({ description: 'The body failed validation.' })
  @ApiHeader({ name: 'Idempotency-Key', required: true, description: 'Our own words.' })
  @Idempotent()
  validated(): void {}
}

/** What the Swagger CLI plugin leaves on a controller in its metadata-file mode. */
@Controller('refunds')
class RefundsController {
  static _OPENAPI_METADATA_FACTORY() {
    return { refund: { summary: 'Refund', status: 201, type: [Receipt] } };
  }

  @Post()
  @Idempotent()
  refund(): Receipt[] {
    return [];
  }
}

describe.each(ADAPTERS)('OpenAPI document of routes with other options (%s)', (adapter) => {
  let app: INestApplication;
  let document: any;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyTestingModule.forRoot({ headerName: 'Idempotency-Key' })],
      controllers: [PaymentsController, RefundsController],
    }).compile();
    app =
      adapter === 'fastify'
        ? moduleRef.createNestApplication(new FastifyAdapter(), { logger: false })
        : moduleRef.createNestApplication({ logger: false });
    document = SwaggerModule.createDocument(app, new DocumentBuilder().build());
  });
  afterAll(() => app.close());

  it('marks a required key as required, under the configured header name', () => {
    const { headers } = operation(document, '/payments', 'post');
    expect(Object.keys(headers)).toEqual(['idempotency-key']);
    expect(headers['idempotency-key'].required).toBe(true);
  });

  it('keeps a declared success response, and the replay has its schema', () => {
    const { responses } = operation(document, '/payments', 'post');
    expect(Object.keys(responses).sort()).toEqual(['201', '400', '409', '422', '423', '503']);
    expect(responses['201'].description).toBe('The receipt.');
    const receipt = { $ref: '#/components/schemas/Receipt' };
    expect(responses['201'].content['application/json'].schema).toEqual(receipt);
    expect(responses['409'].content['application/json'].schema).toEqual(receipt);
    expectProblemResponse(responses['400'], [
      'idempotency_key_missing',
      'idempotency_key_invalid',
      'idempotency_body_incomplete',
    ]);
  });

  it("with replayStatus 'original', the success itself carries the replay headers", () => {
    const { responses } = operation(document, '/payments/{id}', 'put');
    expect(Object.keys(responses).sort()).toEqual(['202', '400', '422', '423', '503']);
    // No replay is a 409 there, so the handler's own 409 goes out as it is.
    expect(responses['422'].description).not.toMatch(/handler answered itself/);
    expect(Object.keys(responses['202'].headers).sort()).toEqual([
      'Idempotent-Replayed',
      'x-idempotency-original-status',
    ]);
  });

  it("leaves the route's own 400 and key header as it declares them", () => {
    const { responses, headers } = operation(document, '/payments/validated', 'post');
    expect(responses['400']).toEqual({ description: 'The body failed validation.' });
    expect(Object.keys(responses).sort()).toEqual(['201', '400', '409', '422', '423', '503']);
    expect(headers['Idempotency-Key']).toMatchObject({
      required: true,
      description: 'Our own words.',
    });
    expect(Object.keys(headers)).toEqual(['Idempotency-Key']);
  });

  it('takes a declared 2xx as the success, whatever the default would be', () => {
    const { responses } = operation(document, '/payments/answered-with-200', 'post');
    expect(Object.keys(responses).sort()).toEqual(['200', '400', '409', '422', '423', '503']);
    const receipt = { $ref: '#/components/schemas/Receipt' };
    expect(responses['409'].content['application/json'].schema).toEqual(receipt);
  });

  it('keeps the success response the CLI plugin inferred, and gives its schema to the replay', () => {
    const { responses } = operation(document, '/refunds', 'post');
    const receipts = { type: 'array', items: { $ref: '#/components/schemas/Receipt' } };
    expect(Object.keys(responses).sort()).toEqual(['201', '400', '409', '422', '423', '503']);
    expect(responses['201'].content['application/json'].schema).toEqual(receipts);
    expect(responses['409'].content['application/json'].schema).toEqual(receipts);
  });

  it('documents no header parameter when a key resolver reads the key', () => {
    const { responses, headers } = operation(document, '/payments/by-message', 'post');
    expect(headers).toEqual({});
    expect(Object.keys(responses).sort()).toEqual(['201', '400', '409', '422', '423', '503']);
  });
});
