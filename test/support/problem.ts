// Assertions shared by the end-to-end tests.
import type { TestResponse } from './http.js';

/** An RFC 9457 problem with the given status and code; returns its Retry-After, if any. */
export function expectProblem(
  response: TestResponse,
  status: number,
  code: string,
): number | undefined {
  expect({ status: response.status, body: response.text }).toMatchObject({ status });
  expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(response.json).toMatchObject({
    status,
    code,
    type: expect.any(String),
    title: expect.any(String),
    detail: expect.any(String),
  });
  const retryAfter = response.headers['retry-after'];
  return retryAfter === undefined ? undefined : Number(retryAfter);
}

/** A problem that must carry a whole-second Retry-After of at least 1; returns it. */
export function expectRetryable(response: TestResponse, status: number, code: string): number {
  const retryAfter = expectProblem(response, status, code);
  expect(response.headers['retry-after']).toMatch(/^\d+$/);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  return retryAfter!;
}

/** A replay of `original`: 409, the same bytes and content type, marked as replayed. */
export function expectReplayOf(response: TestResponse, original: TestResponse): void {
  expect({ status: response.status, body: response.text }).toEqual({
    status: 409,
    body: original.text,
  });
  expect(response.body.equals(original.body)).toBe(true);
  expect(response.headers['content-type']).toBe(original.headers['content-type']);
  expect(response.headers['idempotent-replayed']).toBe('true');
  expect(response.headers['x-idempotency-original-status']).toBe(String(original.status));
}

/** Counts responses by status, for failure messages and logs. */
export function statusCounts(responses: TestResponse[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const { status } of responses) counts[status] = (counts[status] ?? 0) + 1;
  return counts;
}
