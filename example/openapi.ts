// The example's OpenAPI document, served at /docs (Swagger UI) and /docs-json. The
// idempotency parts (the key header, the 409 replay, 423, 422, 400 and 503 problems) come
// from IdempotencyModule, which documents every @Idempotent() route when @nestjs/swagger is
// installed: nothing here mentions them.
import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule, type OpenAPIObject } from '@nestjs/swagger';

/** Where the example serves Swagger UI; the JSON document is at `${DOCS_PATH}-json`. */
export const DOCS_PATH = 'docs';

export function createBookingsDocument(app: INestApplication): OpenAPIObject {
  const config = new DocumentBuilder()
    .setTitle('Bookings (nest-idempotency-pg example)')
    .setDescription(
      'Send x-idempotency-key with every booking; a retry with the same key gets the stored answer (409).',
    )
    .addBearerAuth()
    .build();
  return SwaggerModule.createDocument(app, config);
}

export function serveBookingsDocs(app: INestApplication): OpenAPIObject {
  const document = createBookingsDocument(app);
  SwaggerModule.setup(DOCS_PATH, app, document);
  return document;
}
