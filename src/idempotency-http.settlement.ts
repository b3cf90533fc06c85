// What becomes of a claimed record once its HTTP response is written: stored for replays,
// released so that a retry runs the handler again, or held until its lease passes. A 2xx or
// 3xx is stored. An error frees the key (or is stored, with `storeErrors`) only when the
// handler produced it; an error written by something else after the handler succeeded, or
// while it still runs, holds the key, since the handler's effects may have happened.
import type { Settlement } from './idempotency.engine.js';
import type { ResolvedOptions } from './idempotency.options.js';
import type { CapturedResponse } from './idempotency-response.js';

/** 2xx and 3xx: what a handler answers when it did what was asked (a redirect included). */
export function isSuccessStatus(status: number): boolean {
  return status >= 200 && status < 400;
}

/** What the route handler itself did, as opposed to what was finally written. */
export class HandlerOutcome {
  private state: 'running' | 'failed' | 'answered' | 'abandoned' = 'running';
  private status?: number;
  /** Made only when someone waits: almost no response is written before its handler ends. */
  private done?: Promise<void>;
  private finish?: () => void;

  /** Returned (or completed), with the response's status at that moment. */
  answered(status: number): void {
    this.settle('answered', status);
  }

  /** Threw (a pipe that runs before it included). */
  failed(): void {
    this.settle('failed');
  }

  /** Torn down before it finished: an outer interceptor (a timeout) answered instead. */
  abandoned(): void {
    this.settle('abandoned');
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /** Returned or threw: its code runs no more (a handler torn down may still be running). */
  get ended(): boolean {
    return this.state === 'answered' || this.state === 'failed';
  }

  /** Resolves once the handler has finished or was torn down. */
  finished(): Promise<void> {
    if (this.state !== 'running') return Promise.resolve();
    return (this.done ??= new Promise((resolve) => (this.finish = resolve)));
  }

  /** Threw: whatever status an exception filter then wrote, the handler failed. */
  get threw(): boolean {
    return this.state === 'failed';
  }

  /** Whether an error response is the handler's own: it threw, or answered with an error. */
  get producedError(): boolean {
    return this.state === 'failed' || (this.state === 'answered' && !isSuccessStatus(this.status!));
  }

  private settle(state: 'answered' | 'failed' | 'abandoned', status?: number): void {
    if (this.state !== 'running') return;
    this.state = state;
    this.status = status;
    this.finish?.();
  }
}

/**
 * The settlement for a plain route, or `undefined` while it cannot be known yet: an error was
 * written while the handler still runs (a passthrough handler that sent its own 400 and has
 * not returned, or a timeout middleware writing 503 around it). Ask again once
 * `handler.finished()` resolves.
 */
export function settlementOf(
  captured: CapturedResponse,
  handler: HandlerOutcome,
  options: ResolvedOptions,
): Settlement | undefined {
  // A success written after the handler threw is an exception filter's rendering of its
  // error (`200 { ok: false }`, a redirect to an error page), not a success to store.
  if (isSuccessStatus(captured.status) && !handler.threw) {
    return { action: 'store', response: captured };
  }
  if (handler.producedError) {
    return options.storeErrors(captured.status)
      ? { action: 'store', response: captured }
      : { action: 'release' };
  }
  if (handler.running) return undefined;
  return {
    action: 'hold',
    reason: `answered ${captured.status} although its handler did not fail (or had not finished)`,
  };
}

/**
 * The settlement for a `transactional` route. Its writes are rolled back unless a success is
 * stored, so releasing is always safe; a stored error (`storeErrors`) keeps none of them.
 */
export function transactionalSettlementOf(
  captured: CapturedResponse,
  handler: HandlerOutcome,
  options: ResolvedOptions,
): Settlement & { discardWrites?: boolean } {
  if (isSuccessStatus(captured.status) && !handler.threw) {
    return { action: 'store', response: captured };
  }
  if (handler.producedError && options.storeErrors(captured.status)) {
    return { action: 'store', response: captured, discardWrites: true };
  }
  return { action: 'release' };
}
