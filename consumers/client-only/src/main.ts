// Uses the retrying client the way a service calling a Nest API would, against a loopback
// server that answers like the module: 423 while the first request runs, then the result,
// then a 409 replay. Exits non-zero on any surprise; prints `CLIENT OK` otherwise.
import { strict as assert } from 'node:assert';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  IdempotentClient,
  IdempotentRequestError,
  type RetryEvent,
} from 'nest-idempotency-pg/client';

async function main(): Promise<void> {
  const seen = new Map<string, number>();
  const server = createServer((request, response) => {
    const key = String(request.headers['x-idempotency-key']);
    const count = (seen.get(key) ?? 0) + 1;
    seen.set(key, count);
    request.resume();
    if (count === 1) {
      response.writeHead(423, { 'content-type': 'application/problem+json', 'retry-after': '0' });
      response.end(JSON.stringify({ status: 423, code: 'idempotency_request_in_flight' }));
    } else {
      response.writeHead(count === 2 ? 201 : 409, {
        'content-type': 'application/json',
        ...(count === 2 ? {} : { 'idempotent-replayed': 'true' }),
      });
      response.end(JSON.stringify({ booking: 1 }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const retries: RetryEvent[] = [];
    const client = new IdempotentClient({
      baseUrl: `http://127.0.0.1:${port}`,
      retries: 3,
      backoffFactorMs: 10,
      onRetry: (event) => retries.push(event),
    });
    const first = await client.post('/bookings', { product: 'travel' }, { key: 'k-1' });
    assert.equal(first.status, 201);
    assert.equal(first.replayed, false);
    assert.deepEqual(first.json(), { booking: 1 });
    assert.equal(retries.length, 1);
    const again = await client.post('/bookings', { product: 'travel' }, { key: 'k-1' });
    assert.equal(again.status, 409);
    assert.equal(again.replayed, true);
    assert.ok(IdempotentRequestError.prototype instanceof Error);
    console.log(`CLIENT OK (${retries.length} retry, then a replay)`);
  } finally {
    server.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
