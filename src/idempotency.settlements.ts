// Tracks responses whose records are still being stored, so shutdown can wait for them
// before the DataSource closes (a deploy must not lose a completed result).
import { Injectable } from '@nestjs/common';

@Injectable()
export class IdempotencySettlements {
  private readonly pending = new Set<Promise<unknown>>();

  track<T>(settlement: Promise<T>): Promise<T> {
    this.pending.add(settlement);
    const forget = () => this.pending.delete(settlement);
    settlement.then(forget, forget);
    return settlement;
  }

  /** Resolves once every tracked settlement has finished. */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }
}
