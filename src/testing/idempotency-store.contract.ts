// The store contract as runnable cases, for anyone writing another IdempotencyStore: the
// abstract class's methods plus the lifecycle of CONTRACT.md (atomic claims, leases, fencing
// tokens, expiry on read, a mismatch before the in-flight state), concurrency included.
// Runner-agnostic: each case is `{ name, run }` and throws on failure.
import { strict as assert } from 'node:assert';
import { createHash, randomUUID } from 'node:crypto';
import type {
  ClaimedRecord,
  ClaimRequest,
  ClaimResult,
  IdempotencyStore,
  StoredResponse,
} from '../idempotency-store.js';

/** One case: `run` resolves when the store behaves as the contract says, throws otherwise. */
export interface IdempotencyStoreContractCase {
  name: string;
  run: () => Promise<void>;
}

export interface IdempotencyStoreContractOptions {
  /**
   * The short lease and retention the time-based cases use, in milliseconds; they wait
   * twice as long for it to pass. Raise it for a store whose calls are slow.
   * @default 250
   */
  shortMs?: number;
  /**
   * How many claims race each other in the concurrency cases.
   * @default 20
   */
  concurrency?: number;
}

/**
 * Returns the cases; run each with your test runner. `createStore` must return an empty
 * store each time (a fresh instance, a fresh table): the purge case counts records.
 * @example
 * for (const { name, run } of idempotencyStoreContract(() => new RedisIdempotencyStore(...))) {
 *   it(name, run); // Jest, Vitest or node:test
 * }
 */
export function idempotencyStoreContract(
  createStore: () => IdempotencyStore | Promise<IdempotencyStore>,
  options: IdempotencyStoreContractOptions = {},
): IdempotencyStoreContractCase[] {
  const shortMs = options.shortMs ?? 250;
  const concurrency = options.concurrency ?? 20;
  const cases: IdempotencyStoreContractCase[] = [];
  const contract = (name: string, run: (store: IdempotencyStore) => Promise<void>) =>
    cases.push({ name, run: async () => run(await createStore()) });
  const pass = () => sleep(shortMs * 2);

  contract('claims a new key and hands out a fencing token', async (store) => {
    const request = claimRequest();
    const record = claimed(await store.claim(request));
    assert.deepEqual({ scope: record.scope, key: record.key }, { scope: SCOPE, key: request.key });
    assert.ok(typeof record.token === 'string' && record.token.length > 0, 'a token');
    const other = claimed(await store.claim(claimRequest()));
    assert.notEqual(other.token, record.token, 'each claim gets its own token');
  });

  contract('replays a completed record: status, headers and body bytes', async (store) => {
    const request = claimRequest();
    const record = claimed(await store.claim(request));
    const response = storedResponse(201, Buffer.from([0xff, 0x00, 0xfe, 0x7b]));
    assert.equal(await store.complete(record, response, HOUR), true);
    assertCompleted(await store.claim(request), response);
    assertCompleted(await store.claim(request), response);
  });

  contract('stores and replays an empty body', async (store) => {
    const request = claimRequest();
    const response = storedResponse(204, Buffer.alloc(0));
    assert.equal(await store.complete(claimed(await store.claim(request)), response, HOUR), true);
    assertCompleted(await store.claim(request), response);
  });

  contract('reports a record still in flight, with the lease it has left', async (store) => {
    const request = claimRequest({ leaseMs: 30_000 });
    claimed(await store.claim(request));
    const result = await store.claim(request);
    assert.equal(result.outcome, 'in_progress', describe(result));
    const { leaseLeftMs } = result as Extract<ClaimResult, { outcome: 'in_progress' }>;
    assert.ok(leaseLeftMs > 0 && leaseLeftMs <= 30_000, `leaseLeftMs ${leaseLeftMs}`);
  });

  contract('reports a mismatch for another request with a completed key', async (store) => {
    const request = claimRequest();
    await store.complete(claimed(await store.claim(request)), storedResponse(201), HOUR);
    const other = await store.claim({ ...request, fingerprint: fingerprint('other body') });
    assert.equal(other.outcome, 'mismatch', describe(other));
  });

  contract('reports a mismatch before the in-flight state', async (store) => {
    const request = claimRequest();
    claimed(await store.claim(request));
    const other = await store.claim({ ...request, fingerprint: fingerprint('other body') });
    assert.equal(other.outcome, 'mismatch', describe(other));
  });

  contract('keeps scopes apart: the same key in another scope is a new record', async (store) => {
    const request = claimRequest();
    await store.complete(claimed(await store.claim(request)), storedResponse(201), HOUR);
    const elsewhere = claimed(await store.claim({ ...request, scope: 'tenant-b' }));
    assert.equal(elsewhere.scope, 'tenant-b');
    const differentBody = await store.claim({
      ...request,
      scope: 'tenant-c',
      fingerprint: fingerprint('other body'),
    });
    assert.equal(differentBody.outcome, 'claimed', describe(differentBody));
  });

  contract('release frees the key: the next claim runs, with a new token', async (store) => {
    const request = claimRequest();
    const first = claimed(await store.claim(request));
    assert.equal(await store.release(first), true);
    const second = claimed(await store.claim(request));
    assert.notEqual(second.token, first.token);
    // A released key may be used for a different request too: nothing of it is left.
    assert.equal(await store.release(second), true);
    claimed(await store.claim({ ...request, fingerprint: fingerprint('other body') }));
  });

  contract(
    'complete, renew and release refuse a token that does not hold the record',
    async (store) => {
      const request = claimRequest();
      const record = claimed(await store.claim(request));
      // A well-formed token of the store's own making, held for another key.
      const impostor = { ...record, token: claimed(await store.claim(claimRequest())).token };
      assert.equal(await store.complete(impostor, storedResponse(201), HOUR), false);
      assert.equal(await store.renew(impostor, 60_000), false);
      assert.equal(await store.release(impostor), false);
      const unknown: ClaimedRecord = { scope: SCOPE, key: randomUUID(), token: record.token };
      assert.equal(await store.complete(unknown, storedResponse(201), HOUR), false);
      assert.equal(await store.release(unknown), false);
      assert.equal((await store.claim(request)).outcome, 'in_progress', 'still held by its owner');
    },
  );

  contract('completes once: a second complete is refused and changes nothing', async (store) => {
    const request = claimRequest();
    const record = claimed(await store.claim(request));
    const response = storedResponse(201, Buffer.from('{"first":true}'));
    assert.equal(await store.complete(record, response, HOUR), true);
    assert.equal(await store.complete(record, storedResponse(200, Buffer.from('x')), HOUR), false);
    assert.equal(await store.renew(record, 60_000), false, 'a completed record has no lease');
    assert.equal(await store.release(record), false, 'a completed record is not released');
    assertCompleted(await store.claim(request), response);
  });

  contract(
    'a lapsed lease is taken over by the same request; the old holder is fenced off',
    async (store) => {
      const request = claimRequest({ leaseMs: shortMs });
      const crashed = claimed(await store.claim(request));
      await pass();
      const takeover = claimed(await store.claim(request));
      assert.notEqual(takeover.token, crashed.token, 'a takeover gets a new token');
      assert.equal(await store.complete(crashed, storedResponse(200), HOUR), false);
      assert.equal(await store.renew(crashed, 60_000), false);
      assert.equal(await store.release(crashed), false);
      const winner = storedResponse(201, Buffer.from('{"winner":true}'));
      assert.equal(await store.complete(takeover, winner, HOUR), true);
      assertCompleted(await store.claim(request), winner);
    },
  );

  contract('a lapsed lease is not taken over by a different request', async (store) => {
    const request = claimRequest({ leaseMs: shortMs });
    claimed(await store.claim(request));
    await pass();
    const other = await store.claim({ ...request, fingerprint: fingerprint('other body') });
    assert.equal(other.outcome, 'mismatch', describe(other));
  });

  contract("renew keeps a live holder's record from being taken over", async (store) => {
    const request = claimRequest({ leaseMs: shortMs });
    const record = claimed(await store.claim(request));
    assert.equal(await store.renew(record, 30_000), true);
    await pass();
    assert.equal((await store.claim(request)).outcome, 'in_progress');
    assert.equal(await store.complete(record, storedResponse(201), HOUR), true);
  });

  contract('an expired completed record starts anew, for any request', async (store) => {
    const request = claimRequest();
    const record = claimed(await store.claim(request));
    await store.complete(record, storedResponse(201), shortMs);
    await pass();
    const again = claimed(await store.claim({ ...request, fingerprint: fingerprint('new body') }));
    assert.notEqual(again.token, record.token);
  });

  contract('an expired record whose lease is still live is not taken over', async (store) => {
    const request = claimRequest({ leaseMs: 30_000, retentionMs: shortMs });
    const record = claimed(await store.claim(request));
    await pass();
    assert.equal((await store.claim(request)).outcome, 'in_progress');
    assert.equal(await store.complete(record, storedResponse(201), HOUR), true);
  });

  contract('purgeExpired deletes expired records in batches, never a live one', async (store) => {
    const completeWith = async (retentionMs: number) => {
      const request = claimRequest();
      await store.complete(claimed(await store.claim(request)), storedResponse(201), retentionMs);
      return request;
    };
    const expired = [await completeWith(shortMs), await completeWith(shortMs)];
    // In flight, expired and lapsed: its process is presumed dead, so it may go too.
    claimed(await store.claim(claimRequest({ leaseMs: shortMs, retentionMs: shortMs })));
    const kept = await completeWith(HOUR);
    const running = claimRequest({ leaseMs: 30_000, retentionMs: shortMs });
    claimed(await store.claim(running));
    await pass();
    assert.equal(await store.purgeExpired(2), 2, 'one batch of two');
    assert.equal(await store.purgeExpired(100), 1, 'the rest');
    assert.equal(await store.purgeExpired(100), 0, 'nothing left to purge');
    assertCompleted(await store.claim(kept), storedResponse(201));
    assert.equal((await store.claim(running)).outcome, 'in_progress', 'a live lease stays');
    claimed(await store.claim(expired[0]));
  });

  contract(`${concurrency} claims racing for one new key: exactly one wins`, async (store) => {
    const request = claimRequest();
    const results = await Promise.all(
      Array.from({ length: concurrency }, () => store.claim(request)),
    );
    assert.deepEqual(outcomes(results), { claimed: 1, in_progress: concurrency - 1 });
  });

  contract(
    `${concurrency} claims racing for a lapsed lease: exactly one takes it over`,
    async (store) => {
      const request = claimRequest({ leaseMs: shortMs });
      const crashed = claimed(await store.claim(request));
      await pass();
      const racing = { ...request, leaseMs: 30_000 };
      const results = await Promise.all(
        Array.from({ length: concurrency }, () => store.claim(racing)),
      );
      assert.deepEqual(outcomes(results), { claimed: 1, in_progress: concurrency - 1 });
      const winner = results.find((result) => result.outcome === 'claimed');
      assert.notEqual(claimed(winner!).token, crashed.token);
    },
  );

  contract(`${concurrency} claims racing on different keys: one winner per key`, async (store) => {
    const keys = Array.from({ length: Math.max(2, Math.floor(concurrency / 4)) }, () =>
      randomUUID(),
    );
    const requests = keys.flatMap((key) => Array.from({ length: 4 }, () => claimRequest({ key })));
    const results = await Promise.all(requests.map((request) => store.claim(request)));
    for (const key of keys) {
      const forKey = results.filter((_, index) => requests[index].key === key);
      assert.deepEqual(outcomes(forKey), { claimed: 1, in_progress: 3 }, key);
    }
  });

  contract(
    `${concurrency} racing duplicates of a completed request all get the replay`,
    async (store) => {
      const request = claimRequest();
      const response = storedResponse(201, Buffer.from('{"id":1}'));
      await store.complete(claimed(await store.claim(request)), response, HOUR);
      const results = await Promise.all(
        Array.from({ length: concurrency }, () => store.claim(request)),
      );
      for (const result of results) assertCompleted(result, response);
    },
  );

  contract('inspect finds no record for an unknown key', async (store) => {
    assert.equal(await store.inspect(SCOPE, randomUUID()), undefined);
  });

  contract('inspect shows an in-progress record: fingerprint, token, lease', async (store) => {
    const request = claimRequest({ leaseMs: 30_000 });
    const before = Date.now();
    const record = claimed(await store.claim(request));
    const info = await store.inspect(SCOPE, request.key);
    assert.ok(info, 'a record');
    assert.deepEqual(
      { scope: info.scope, key: info.key, state: info.state, response: info.response },
      { scope: SCOPE, key: request.key, state: 'in_progress', response: undefined },
    );
    assert.equal(info.fingerprint, request.fingerprint.toString('hex'));
    assert.equal(info.fencingToken, record.token);
    assert.equal(info.leasePassed, false);
    assert.equal(info.expired, false);
    assertNear(info.createdAt, before, 'createdAt');
    assertNear(info.leaseExpiresAt, before + 30_000, 'leaseExpiresAt');
    assertNear(info.expiresAt, before + HOUR, 'expiresAt');
    assert.equal(await store.inspect('tenant-b', request.key), undefined, 'scopes stay apart');
  });

  contract('inspect shows a completed record: stored status, headers, body size', async (store) => {
    const request = claimRequest();
    const record = claimed(await store.claim(request));
    const response = storedResponse(201, Buffer.from([0xff, 0x00, 0xfe]));
    assert.equal(await store.complete(record, response, HOUR), true);
    const info = await store.inspect(SCOPE, request.key);
    assert.ok(info, 'a record');
    assert.equal(info.state, 'completed');
    assert.deepEqual(info.response, { status: 201, headers: response.headers, bodyBytes: 3 });
    assert.equal(info.leaseExpiresAt, undefined, 'a completed record has no lease');
    assertNear(info.completedAt, Date.now(), 'completedAt');
    assertNear(info.expiresAt, Date.now() + HOUR, 'expiresAt');
  });

  contract('inspect tells a passed lease and an expired record', async (store) => {
    const lapsed = claimRequest({ leaseMs: shortMs });
    claimed(await store.claim(lapsed));
    const done = claimRequest();
    await store.complete(claimed(await store.claim(done)), storedResponse(201), shortMs);
    await pass();
    const lapsedInfo = await store.inspect(SCOPE, lapsed.key);
    assert.deepEqual([lapsedInfo?.leasePassed, lapsedInfo?.expired], [true, false]);
    const doneInfo = await store.inspect(SCOPE, done.key);
    assert.deepEqual([doneInfo?.leasePassed, doneInfo?.expired], [false, true]);
  });

  contract('invalidate deletes a completed record: the key runs again', async (store) => {
    const request = claimRequest();
    const record = claimed(await store.claim(request));
    await store.complete(record, storedResponse(201), HOUR);
    assert.deepEqual(await store.invalidate(SCOPE, request.key), {
      outcome: 'deleted',
      state: 'completed',
    });
    assert.equal(await store.inspect(SCOPE, request.key), undefined);
    assert.deepEqual(await store.invalidate(SCOPE, request.key), { outcome: 'missing' });
    const again = claimed(await store.claim({ ...request, fingerprint: fingerprint('new body') }));
    assert.notEqual(again.token, record.token);
  });

  contract(
    'invalidate refuses an in-progress record unless asked; then its owner is fenced off',
    async (store) => {
      const request = claimRequest();
      const owner = claimed(await store.claim(request));
      const refused = await store.invalidate(SCOPE, request.key);
      assert.deepEqual(refused, { outcome: 'refused', state: 'in_progress' });
      assert.equal((await store.inspect(SCOPE, request.key))?.fencingToken, owner.token);
      assert.equal((await store.claim(request)).outcome, 'in_progress', 'still held');
      const deleted = await store.invalidate(SCOPE, request.key, { inProgress: true });
      assert.deepEqual(deleted, { outcome: 'deleted', state: 'in_progress' });
      const retry = claimed(await store.claim(request));
      assert.notEqual(retry.token, owner.token);
      assert.equal(await store.complete(owner, storedResponse(200), HOUR), false, 'fenced off');
      assert.equal(await store.complete(retry, storedResponse(201), HOUR), true);
    },
  );

  contract('invalidate leaves other scopes and keys alone', async (store) => {
    const request = claimRequest();
    await store.complete(claimed(await store.claim(request)), storedResponse(201), HOUR);
    const other = { ...request, scope: 'tenant-b' };
    await store.complete(claimed(await store.claim(other)), storedResponse(201), HOUR);
    assert.deepEqual(await store.invalidate('tenant-b', request.key), {
      outcome: 'deleted',
      state: 'completed',
    });
    assertCompleted(await store.claim(request), storedResponse(201));
  });

  return cases;
}

const SCOPE = 'tenant-a';
const HOUR = 3_600_000;

function fingerprint(label: string): Buffer {
  return createHash('sha256').update(label).digest();
}

function claimRequest(overrides: Partial<ClaimRequest> = {}): ClaimRequest {
  return {
    scope: SCOPE,
    key: randomUUID(),
    fingerprint: fingerprint('POST /bookings {"product":"travel"}'),
    leaseMs: 60_000,
    retentionMs: HOUR,
    ...overrides,
  };
}

function storedResponse(status: number, body = Buffer.from('{"ok":true}')): StoredResponse {
  return { status, headers: { 'content-type': 'application/json', location: '/bookings/1' }, body };
}

function claimed(result: ClaimResult): ClaimedRecord {
  assert.equal(result.outcome, 'claimed', describe(result));
  return (result as Extract<ClaimResult, { outcome: 'claimed' }>).record;
}

function assertCompleted(result: ClaimResult, expected: StoredResponse): void {
  assert.equal(result.outcome, 'completed', describe(result));
  const { response } = result as Extract<ClaimResult, { outcome: 'completed' }>;
  assert.equal(response.status, expected.status);
  assert.deepEqual(response.headers, expected.headers);
  assert.ok(Buffer.isBuffer(response.body), 'the body is a Buffer');
  assert.ok(response.body.equals(expected.body), `body ${response.body.toString('hex')}`);
}

/** A time within a few seconds of `expected` (ms since the epoch): stores keep their own clock. */
function assertNear(actual: Date | undefined, expected: number, what: string): void {
  assert.ok(actual instanceof Date, `${what} is a Date`);
  const off = Math.abs(actual.getTime() - expected);
  assert.ok(off < 5_000, `${what} ${actual.toISOString()} is ${off} ms off`);
}

function outcomes(results: ClaimResult[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const { outcome } of results) counts[outcome] = (counts[outcome] ?? 0) + 1;
  return counts;
}

function describe(result: ClaimResult): string {
  return `claim answered ${JSON.stringify(result, (_, value) => (value?.type === 'Buffer' ? '<bytes>' : value))}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
