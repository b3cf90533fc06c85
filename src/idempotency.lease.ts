// Lease renewal for `renewLease: true`: while the handler runs, its record's lease is
// extended every leaseMs / 3, so only a process that stopped running loses its key.
import type { ClaimedRecord, IdempotencyStore } from './idempotency-store.js';

/** What the engine hears from the renewals (it logs and reports them). */
export interface LeaseRenewals {
  renewed(storeMs: number): void;
  /** Another request took the record over: renewing stops. */
  lost(): void;
  /** A renewal failed; it is retried at the next tick, the lease still has two thirds left. */
  failed(started: number, error: unknown): void;
}

/** Starts renewing; returns the function that stops it. */
export function keepLeaseAlive(
  store: IdempotencyStore,
  record: ClaimedRecord,
  { leaseMs, statementTimeoutMs }: { leaseMs: number; statementTimeoutMs: number },
  renewals: LeaseRenewals,
): () => void {
  let stopped = false;
  const timer = setInterval(() => {
    const started = performance.now();
    store.renew(record, leaseMs, { timeoutMs: statementTimeoutMs }).then(
      (owned) => {
        // A renewal that answers after the record was settled finds it completed: not a loss.
        if (stopped) return;
        if (owned) return renewals.renewed(performance.now() - started);
        clearInterval(timer);
        renewals.lost();
      },
      (error: unknown) => stopped || renewals.failed(started, error),
    );
  }, leaseMs / 3);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
