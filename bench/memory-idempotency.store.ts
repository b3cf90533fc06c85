// The benchmark's limit target: an IdempotencyStore that keeps records in a Map of this one
// process, with no SQL at all. Never shipped (bench/ is not in the package); it shows how fast
// the module can go on this stack when the store costs nothing, so the report can say how
// close the Postgres store gets. Same claim rules as PostgresIdempotencyStore, one process only.
import {
  IdempotencyStore,
  type ClaimedRecord,
  type ClaimRequest,
  type ClaimResult,
  type StoredResponse,
} from '../src/index.js';

interface MemoryRecord {
  fingerprint: Buffer;
  state: 'in_progress' | 'completed';
  token: string;
  lockedUntil: number;
  expiresAt: number;
  response?: StoredResponse;
}

export class MemoryIdempotencyStore extends IdempotencyStore {
  private readonly records = new Map<string, MemoryRecord>();
  private nextToken = 0;

  async claim(request: ClaimRequest): Promise<ClaimResult> {
    const { scope, key, fingerprint, leaseMs, retentionMs } = request;
    const id = recordId(scope, key);
    const now = Date.now();
    const existing = this.records.get(id);
    if (!existing || claimable(existing, fingerprint, now)) {
      const token = String(++this.nextToken);
      this.records.set(id, {
        fingerprint,
        state: 'in_progress',
        token,
        lockedUntil: now + leaseMs,
        expiresAt: now + retentionMs,
      });
      return { outcome: 'claimed', record: { scope, key, token } };
    }
    if (!existing.fingerprint.equals(fingerprint)) return { outcome: 'mismatch' };
    if (existing.state === 'completed')
      return { outcome: 'completed', response: existing.response! };
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
    owned.response = response;
    owned.lockedUntil = 0;
    owned.expiresAt = Date.now() + retentionMs;
    return true;
  }

  async renew(record: ClaimedRecord, leaseMs: number): Promise<boolean> {
    const owned = this.owned(record);
    if (owned) owned.lockedUntil = Date.now() + leaseMs;
    return owned !== undefined;
  }

  async release(record: ClaimedRecord): Promise<boolean> {
    const owned = this.owned(record);
    if (owned) this.records.delete(recordId(record.scope, record.key));
    return owned !== undefined;
  }

  async purgeExpired(batchSize: number): Promise<number> {
    const now = Date.now();
    let deleted = 0;
    for (const [id, record] of this.records) {
      if (deleted >= batchSize) break;
      if (record.expiresAt <= now && (record.state === 'completed' || record.lockedUntil <= now)) {
        this.records.delete(id);
        deleted++;
      }
    }
    return deleted;
  }

  private owned(record: ClaimedRecord): MemoryRecord | undefined {
    const found = this.records.get(recordId(record.scope, record.key));
    return found?.token === record.token && found.state === 'in_progress' ? found : undefined;
  }
}

function recordId(scope: string, key: string): string {
  return `${scope}\u0000${key}`;
}

/** The Postgres claim statement's takeover rule: retention passed, or a dead holder's lease. */
function claimable(record: MemoryRecord, fingerprint: Buffer, now: number): boolean {
  const expired =
    record.expiresAt <= now && (record.state === 'completed' || record.lockedUntil <= now);
  const abandoned =
    record.state === 'in_progress' &&
    record.lockedUntil <= now &&
    record.fingerprint.equals(fingerprint);
  return expired || abandoned;
}
