// Tracks responses whose records are still being stored, so shutdown can wait for them
// before the DataSource closes (a deploy must not lose a completed result), and releases
// still being retried in the background, which shutdown cuts short with one last attempt.
import { Injectable } from '@nestjs/common';

/** A release retried in the background (see IdempotencyEngine.retryInBackground). */
export interface BackgroundRetry {
  /** Resolves once it succeeded or gave up. */
  readonly finished: Promise<void>;
  /** Makes the next attempt at once (after the one in flight, if any) and the last one. */
  lastAttempt(): void;
}

@Injectable()
export class IdempotencySettlements {
  private readonly pending = new Set<Promise<unknown>>();
  private readonly retries = new Set<BackgroundRetry>();
  private draining = false;

  track<T>(settlement: Promise<T>): Promise<T> {
    this.pending.add(settlement);
    const forget = () => this.pending.delete(settlement);
    settlement.then(forget, forget);
    return settlement;
  }

  /**
   * Tracks a background release. Shutdown does not wait out its backoff (up to the lease):
   * it makes its last attempt at once, bounded by statementTimeoutMs, and waits for that.
   */
  trackRetry(retry: BackgroundRetry): void {
    this.retries.add(retry);
    void retry.finished.then(() => this.retries.delete(retry));
    if (this.draining) retry.lastAttempt();
  }

  /**
   * Resolves once every tracked settlement has finished, and every background release has
   * made its last attempt.
   */
  async drain(): Promise<void> {
    this.draining = true;
    while (this.pending.size > 0 || this.retries.size > 0) {
      for (const retry of this.retries) retry.lastAttempt();
      await Promise.allSettled([
        ...this.pending,
        ...[...this.retries].map((retry) => retry.finished),
      ]);
    }
  }
}
