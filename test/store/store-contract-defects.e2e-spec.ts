// The store contract must catch the mistakes a new store is likely to make: each defective
// store below fails the case written for its defect (and the correct store passes it).
import { randomUUID } from 'node:crypto';
import type {
  ClaimedRecord,
  ClaimRequest,
  ClaimResult,
  IdempotencyStore,
  InvalidateOptions,
  StoredResponse,
} from '../../src/index.js';
import { InMemoryIdempotencyStore, idempotencyStoreContract } from '../../src/testing/index.js';

/** Looks the key up, then writes it a round trip later: two racing claims both win. */
class SelectThenInsertStore extends InMemoryIdempotencyStore {
  private readonly known = new Set<string>();
  override async claim(request: ClaimRequest): Promise<ClaimResult> {
    const id = `${request.scope}\0${request.key}`;
    const seen = this.known.has(id);
    await new Promise((resolve) => setImmediate(resolve));
    if (seen) return super.claim(request);
    this.known.add(id);
    await super.claim(request);
    return {
      outcome: 'claimed',
      record: { scope: request.scope, key: request.key, token: randomUUID() },
    };
  }
}

/** Completes whatever token it is given: a process whose lease was taken over overwrites. */
class UnfencedStore extends InMemoryIdempotencyStore {
  override async complete(record: ClaimedRecord, response: StoredResponse, retentionMs: number) {
    await super.complete(record, response, retentionMs);
    return true;
  }
}

/** Answers 423 for a running key before comparing fingerprints. */
class InFlightFirstStore extends InMemoryIdempotencyStore {
  private readonly running = new Set<string>();
  override async claim(request: ClaimRequest): Promise<ClaimResult> {
    const id = `${request.scope}\0${request.key}`;
    const result = await super.claim(request);
    if (result.outcome === 'claimed') this.running.add(id);
    if (result.outcome === 'mismatch' && this.running.has(id)) {
      return { outcome: 'in_progress', leaseLeftMs: 1_000 };
    }
    return result;
  }
}

/** Never sees time pass: leases never lapse and records never expire. */
class FrozenClockStore extends InMemoryIdempotencyStore {
  constructor() {
    super({ now: () => 0 });
  }
}

/** Deletes whatever it is asked to, running or not: a live owner's key runs twice. */
class InvalidateAnythingStore extends InMemoryIdempotencyStore {
  override invalidate(scope: string, key: string, options: InvalidateOptions = {}) {
    return super.invalidate(scope, key, { ...options, inProgress: true });
  }
}

/** Written before inspect() and invalidate() existed: only the abstract methods. */
class OlderStore extends InMemoryIdempotencyStore {
  constructor() {
    super();
    const base = Object.getPrototypeOf(InMemoryIdempotencyStore.prototype) as IdempotencyStore;
    this.inspect = base.inspect;
    this.invalidate = base.invalidate;
  }
}

const caseNamed = (cases: ReturnType<typeof idempotencyStoreContract>, start: string) => {
  const found = cases.find((c) => c.name.startsWith(start));
  if (!found) throw new Error(`no contract case "${start}"`);
  return found;
};

describe.each([
  [
    'a select-then-insert claim',
    () => new SelectThenInsertStore(),
    '20 claims racing for one new key',
  ],
  [
    'no fencing on complete',
    () => new UnfencedStore(),
    'complete, renew and release refuse a token',
  ],
  [
    '423 before 422',
    () => new InFlightFirstStore(),
    'reports a mismatch before the in-flight state',
  ],
  ['no leases', () => new FrozenClockStore(), 'a lapsed lease is taken over by the same request'],
  ['no expiry', () => new FrozenClockStore(), 'an expired completed record starts anew'],
  [
    'an invalidate that ignores inProgress',
    () => new InvalidateAnythingStore(),
    'invalidate refuses an in-progress record unless asked',
  ],
  ['no inspect()', () => new OlderStore(), 'inspect shows a completed record'],
  ['no invalidate()', () => new OlderStore(), 'invalidate deletes a completed record'],
])('a store with %s', (_defect, createDefective, caseName) => {
  it(`fails "${caseName}"`, async () => {
    await expect(
      caseNamed(idempotencyStoreContract(createDefective, { shortMs: 50 }), caseName).run(),
    ).rejects.toThrow();
  });

  it('while the correct store passes it', async () => {
    await caseNamed(
      idempotencyStoreContract(() => new InMemoryIdempotencyStore(), { shortMs: 50 }),
      caseName,
    ).run();
  });
});
