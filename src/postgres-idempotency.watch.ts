// Duplicates in one process that wait for the same in-flight record share one watch: one
// subscription to its notification and one statement marking it as waited for, however
// many wait. In a storm that is one mark per record and process instead of one per
// duplicate, on a pool the duplicates are all queueing for.
import type { InFlightRecord } from './idempotency-store.js';
import type { PostgresIdempotencyListener } from './postgres-idempotency.listener.js';

class Watch {
  users = 0;
  /** Notified, its connection lost, or found settled: waiters claim again. */
  settled = false;
  /** True once listening with the record marked; false if it had settled already. */
  armed!: Promise<boolean>;
  readonly woken: Promise<void>;
  wake!: () => void;
  unsubscribe?: () => void;

  constructor() {
    this.woken = new Promise((resolve) => (this.wake = resolve));
  }
}

export class SettledWatches {
  private readonly watches = new Map<string, Watch>();

  constructor(
    private readonly listener: PostgresIdempotencyListener,
    private readonly channel: string,
    /** Marks the record as waited for; false when it is no longer in progress. */
    private readonly mark: (record: InFlightRecord) => Promise<boolean>,
  ) {}

  /**
   * Waits until the record may have settled, or `until` resolves. Rejects when it cannot
   * listen or mark (the caller then polls).
   *
   * Joining a watch that is armed and not yet woken is safe: its mark made every later
   * completion notify, and a notification is never missed by a joiner, because the watch
   * stays woken once woken and leaves the map at that moment (later waiters open a new one
   * and mark again, which finds a settled record at once).
   */
  async wait(record: InFlightRecord, payload: string, until: Promise<void>): Promise<void> {
    const id = `${payload}\n${record.fingerprint.toString('base64')}`;
    let watch = this.watches.get(id);
    if (!watch || watch.settled) watch = this.open(id, record, payload);
    watch.users++;
    try {
      const armed = await Promise.race([watch.armed, until.then(() => false)]);
      if (armed) await Promise.race([watch.woken, until]);
    } finally {
      if (--watch.users === 0) this.close(id, watch);
    }
  }

  private open(id: string, record: InFlightRecord, payload: string): Watch {
    const watch = new Watch();
    this.watches.set(id, watch);
    // Subscribe first, then mark: a completion that sees the mark finds us listening.
    watch.armed = this.listener
      .subscribe(this.channel, payload, () => this.settle(id, watch))
      .then(async (unsubscribe) => {
        watch.unsubscribe = unsubscribe;
        if (watch.users === 0) {
          unsubscribe(); // everyone left while it subscribed
          return false;
        }
        const inProgress = await this.mark(record);
        if (!inProgress) this.settle(id, watch);
        return inProgress;
      });
    watch.armed.catch(() => this.settle(id, watch));
    return watch;
  }

  private settle(id: string, watch: Watch): void {
    watch.settled = true;
    watch.wake();
    if (this.watches.get(id) === watch) this.watches.delete(id);
  }

  private close(id: string, watch: Watch): void {
    if (this.watches.get(id) === watch) this.watches.delete(id);
    watch.settled = true;
    watch.unsubscribe?.();
  }
}
