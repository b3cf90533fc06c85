// An IdempotencyStore held in memory, for unit tests of applications (through
// IdempotencyTestingModule) and as a second implementation of the store contract. One
// process only: it is not a production store.
import { randomUUID } from 'node:crypto';
import {
  IdempotencyStore,
  type ClaimedRecord,
  type ClaimRequest,
  type ClaimResult,
  type IdempotencyRecordInfo,
  type InvalidateOptions,
  type InvalidateResult,
  type StoredResponse,
} from '../idempotency-store.js';

interface MemoryRecord {
  fingerprint: Buffer;
  state: 'in_progress' | 'completed';
  token: string;
  /** While in progress: when the lease passes (ms since the epoch). */
  lockedUntil: number;
  expiresAt: number;
  response?: StoredResponse;
  /** When the current claim was made, and when it completed (for inspect()). */
  createdAt: number;
  completedAt?: number;
}

export interface InMemoryIdempotencyStoreOptions {
  /**
   * The clock, in milliseconds since the epoch. Give your own to move time in a test
   * (leases passing, records expiring) without waiting.
   * @default Date.now
   * @example let now = 0; new InMemoryIdempotencyStore({ now: () => now });
   */
  now?: () => number;
}

/**
 * Follows the same lifecycle as the Postgres store: atomic claims, leases, fencing tokens,
 * expiry enforced on read, a mismatch reported before the in-flight state. Every method
 * completes synchronously inside one event-loop turn, which is what makes a claim atomic.
 * @example Test.createTestingModule({ imports: [IdempotencyModule.forRoot({ store: new InMemoryIdempotencyStore() })] })
 */
export class InMemoryIdempotencyStore extends IdempotencyStore {
  private readonly records = new Map<string, MemoryRecord>();
  private readonly now: () => number;

  constructor(options: InMemoryIdempotencyStoreOptions = {}) {
    super();
    this.now = options.now ?? Date.now;
  }

  /** How many records the store holds (expired ones too, until purged). */
  get size(): number {
    return this.records.size;
  }

  /** Forgets every record. */
  clear(): void {
    this.records.clear();
  }

  async claim(request: ClaimRequest): Promise<ClaimResult> {
    const { scope, key, fingerprint, leaseMs, retentionMs } = request;
    const now = this.now();
    const id = recordId(scope, key);
    const existing = this.records.get(id);
    const sameRequest = existing?.fingerprint.equals(fingerprint) ?? false;
    if (!existing || isClaimable(existing, now, sameRequest)) {
      const token = randomUUID();
      this.records.set(id, {
        fingerprint: Buffer.from(fingerprint),
        state: 'in_progress',
        token,
        lockedUntil: now + leaseMs,
        expiresAt: now + retentionMs,
        createdAt: now,
      });
      const record = { scope, key, token };
      return existing?.state === 'in_progress'
        ? { outcome: 'claimed', record, takenOver: true }
        : { outcome: 'claimed', record };
    }
    if (!sameRequest) return { outcome: 'mismatch' };
    if (existing.state === 'completed') {
      return { outcome: 'completed', response: copyResponse(existing.response!) };
    }
    return { outcome: 'in_progress', leaseLeftMs: Math.max(0, existing.lockedUntil - now) };
  }

  async complete(
    record: ClaimedRecord,
    response: StoredResponse,
    retentionMs: number,
  ): Promise<boolean> {
    const owned = this.owned(record);
    if (!owned) return false;
    owned.state = 'completed';
    owned.response = copyResponse(response);
    owned.completedAt = this.now();
    owned.expiresAt = owned.completedAt + retentionMs;
    return true;
  }

  async renew(record: ClaimedRecord, leaseMs: number): Promise<boolean> {
    const owned = this.owned(record);
    if (!owned) return false;
    owned.lockedUntil = this.now() + leaseMs;
    return true;
  }

  async release(record: ClaimedRecord): Promise<boolean> {
    if (!this.owned(record)) return false;
    this.records.delete(recordId(record.scope, record.key));
    return true;
  }

  async purgeExpired(batchSize: number): Promise<number> {
    const now = this.now();
    const expired = [...this.records]
      .filter(([, record]) => record.expiresAt <= now && !isLeaseLive(record, now))
      .sort(([, a], [, b]) => a.expiresAt - b.expiresAt)
      .slice(0, batchSize);
    for (const [id] of expired) this.records.delete(id);
    return expired.length;
  }

  override async inspect(scope: string, key: string): Promise<IdempotencyRecordInfo | undefined> {
    const record = this.records.get(recordId(scope, key));
    if (!record) return undefined;
    const now = this.now();
    const completed = record.state === 'completed';
    return {
      scope,
      key,
      state: record.state,
      fingerprint: record.fingerprint.toString('hex'),
      fencingToken: record.token,
      createdAt: new Date(record.createdAt),
      ...(record.completedAt === undefined ? {} : { completedAt: new Date(record.completedAt) }),
      expiresAt: new Date(record.expiresAt),
      ...(completed ? {} : { leaseExpiresAt: new Date(record.lockedUntil) }),
      leasePassed: !completed && record.lockedUntil <= now,
      expired: record.expiresAt <= now && !isLeaseLive(record, now),
      ...(completed
        ? {
            response: {
              status: record.response!.status,
              headers: { ...record.response!.headers },
              bodyBytes: record.response!.body.length,
            },
          }
        : {}),
    };
  }

  override async invalidate(
    scope: string,
    key: string,
    options: InvalidateOptions = {},
  ): Promise<InvalidateResult> {
    const id = recordId(scope, key);
    const record = this.records.get(id);
    if (!record) return { outcome: 'missing' };
    if (record.state === 'in_progress' && options.inProgress !== true) {
      return { outcome: 'refused', state: 'in_progress' };
    }
    this.records.delete(id);
    return { outcome: 'deleted', state: record.state };
  }

  /** The record, if `record.token` still holds it in flight. */
  private owned(record: ClaimedRecord): MemoryRecord | undefined {
    const stored = this.records.get(recordId(record.scope, record.key));
    return stored?.state === 'in_progress' && stored.token === record.token ? stored : undefined;
  }
}

function recordId(scope: string, key: string): string {
  return JSON.stringify([scope, key]);
}

function isLeaseLive(record: MemoryRecord, now: number): boolean {
  return record.state === 'in_progress' && record.lockedUntil > now;
}

/**
 * Expired and not running: anyone may start anew. A lapsed lease (its process presumed
 * dead): only the same request takes it over, a different one is still a mismatch.
 */
function isClaimable(record: MemoryRecord, now: number, sameRequest: boolean): boolean {
  if (record.expiresAt <= now && !isLeaseLive(record, now)) return true;
  return record.state === 'in_progress' && record.lockedUntil <= now && sameRequest;
}

function copyResponse(response: StoredResponse): StoredResponse {
  return {
    status: response.status,
    headers: { ...response.headers },
    body: Buffer.from(response.body),
  };
}
