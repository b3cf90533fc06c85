// Lease renewal for `renewLease: true`: while the handler runs, its record's lease is
// extended every leaseMs / 3, so only a process that stopped running loses its key.
import type { Logger } from '@nestjs/common';
import type { ClaimedRecord, IdempotencyStore } from './idempotency-store.js';

/** Starts renewing; returns the function that stops it. */
export function keepLeaseAlive(
  store: IdempotencyStore,
  record: ClaimedRecord,
  { leaseMs, statementTimeoutMs }: { leaseMs: number; statementTimeoutMs: number },
  logger: Logger,
): () => void {
  const timer = setInterval(() => {
    store.renew(record, leaseMs, { timeoutMs: statementTimeoutMs }).then(
      (owned) => {
        if (owned) return;
        clearInterval(timer);
        logger.warn(`Stopped renewing the lease of key "${record.key}": it was taken over.`);
      },
      // A failed renewal is retried at the next tick; the lease still has two thirds left.
      (error: unknown) =>
        logger.warn(`Could not renew the lease of key "${record.key}": ${String(error)}`),
    );
  }, leaseMs / 3);
  timer.unref();
  return () => clearInterval(timer);
}
