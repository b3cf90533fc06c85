// @Idempotent() on a controller and again on a method: the route runs with the two merged,
// option by option (method over controller), so the document must describe the merged
// options too, not the method's alone.
import { Controller, Post, type INestApplication } from '@nestjs/common';
import { ApiBadRequestResponse, ApiHeader, DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { Test } from '@nestjs/testing';
import { Idempotent } from '../../src/index.js';
import { IdempotencyTestingModule } from '../../src/testing/index.js';
import { send } from '../support/http.js';
import { expectProblem } from '../support/problem.js';

@Controller('orders')
@Idempotent({ required: true, key: 'x-order-key' })
class OrdersController {
  @Post()
  @Idempotent({ replayStatus: 'original' })
  create(): { id: string } {
    return { id: 'o1' };
  }
}

describe('OpenAPI of a route with @Idempotent() on its class and its method', () => {
  let app: INestApplication;
  let document: any;
  let url: string;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyTestingModule.forRoot()],
      controllers: [OrdersController],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
    url = await app.getUrl();
    document = SwaggerModule.createDocument(app, new DocumentBuilder().build());
  });
  afterAll(() => app?.close());

  it('the route enforces the merged options: the class key header, required', async () => {
    const response = await send(url, '/orders', { body: {} });
    expectProblem(response, 400, 'idempotency_key_missing');
  });

  it('documents the merged options: the class key header, required; no 409', () => {
    const op = document.paths['/orders'].post;
    const headers = (op.parameters ?? []).filter((p: any) => p.in === 'header');
    expect(headers.map((p: any) => [p.name, p.required])).toEqual([['x-order-key', true]]);
    expect(Object.keys(op.responses).sort()).toEqual(['201', '400', '422', '423', '503']);
    expect(
      op.responses['400'].content['application/problem+json'].schema.properties.code.enum,
    ).toContain('idempotency_key_missing');
  });
});

@Controller('invoices')
@ApiBadRequestResponse({ description: 'The body failed validation.' })
@ApiHeader({ name: 'X-Idempotency-Key', required: true, description: 'Our own words.' })
class InvoicesController {
  @Post()
  @Idempotent()
  create(): { id: string } {
    return { id: 'i1' };
  }
}

describe('OpenAPI of a route whose controller declares a 400 and the key header', () => {
  let app: INestApplication;
  let document: any;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyTestingModule.forRoot()],
      controllers: [InvoicesController],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    document = SwaggerModule.createDocument(app, new DocumentBuilder().build());
  });
  afterAll(() => app?.close());

  it("keeps the controller's own 400, as declared", () => {
    const op = document.paths['/invoices'].post;
    expect(op.responses['400']).toEqual({ description: 'The body failed validation.' });
  });

  it('documents the key header once, as the controller declares it', () => {
    const op = document.paths['/invoices'].post;
    const headers = (op.parameters ?? []).filter((p: any) => p.in === 'header');
    expect(headers).toHaveLength(1);
    expect(headers[0]).toMatchObject({ required: true, description: 'Our own words.' });
  });
});
