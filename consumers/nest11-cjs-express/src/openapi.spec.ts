// With @nestjs/swagger 11 installed, a Nest 11 CommonJS app's OpenAPI document shows what an
// @Idempotent() route answers: the key header, the replay and the problem+json errors, next
// to the route's own 201. Under Jest, which loads the package's CommonJS build.
import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { Test } from '@nestjs/testing';
import { IdempotencyTestingModule } from 'nest-idempotency-pg/testing';
import { BookingsController } from './bookings.controller';

describe('OpenAPI document', () => {
  let app: INestApplication;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyTestingModule.forRoot()],
      controllers: [BookingsController],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
  });
  afterAll(() => app.close());

  it('documents the idempotent route and keeps its 201', () => {
    const document = SwaggerModule.createDocument(app, new DocumentBuilder().build());
    const operation = document.paths['/bookings'].post!;
    expect(Object.keys(operation.responses).sort()).toEqual([
      '201',
      '400',
      '409',
      '422',
      '423',
      '503',
    ]);
    expect(operation.parameters).toContainEqual(
      expect.objectContaining({ name: 'x-idempotency-key', in: 'header', required: false }),
    );
    const replay = operation.responses['409'] as { headers: Record<string, unknown> };
    expect(Object.keys(replay.headers)).toContain('Idempotent-Replayed');
    const locked = operation.responses['423'] as { content: Record<string, unknown> };
    expect(Object.keys(locked.content)).toEqual(['application/problem+json']);
  });
});
