// Coalesces concurrent calls of one statement into one multi-row statement. Under load the
// Node thread, not Postgres, is what binds, and most of its cost per statement is fixed
// (a socket write, pg's parsing, a commit): one statement for many callers pays it once.
//
// No timer: a call that finds no statement of its kind in flight goes out at once, alone,
// as the single statement it always was, so an idle server answers as fast as before. Calls
// that arrive while statements are in flight queue, and leave together as soon as one
// returns (or on the next turn of the event loop, while fewer than `maxInFlight` are out).
//
// Each caller keeps its own contract: it is answered within its own `timeoutMs`, with the
// statement's fate for its own row when it gave up (StatementTimeoutError's aftermath); a
// key seen twice waits for the next batch (a statement must not write one row twice); and a
// batch the server rejects is run again row by row, so one bad row fails only its caller.
import type { SqlExecutor, SqlResult, SqlStatement } from './postgres-idempotency.store.js';
import {
  deadlineAfter,
  isServerError,
  remaining,
  StatementTimeoutError,
  type StatementAftermath,
} from './postgres-statement.runner.js';

export interface BatchedStatement {
  /** The single-row statement: sent for a batch of one, and to retry a failed batch's rows. */
  single: { name: string; text: string };
  /** The multi-row statement for these rows (each row: the single statement's values). */
  batch(rows: unknown[][]): { name: string; text: string; values: unknown[] };
  /** One single-statement-shaped result per row, in the order given to `batch`. */
  split(result: SqlResult, count: number): SqlResult[];
  /** Rows with the same identity never share a batch; batches are sorted by it (lock order). */
  identity(row: unknown[]): string;
  /** Whether a row's answer from a batch must be confirmed by the single statement. */
  recheck?(result: SqlResult): boolean;
}

export interface BatcherLimits {
  /** Statements of this kind out at once (each holds a pool connection). */
  maxInFlight: number;
  /** Rows in one statement. */
  maxRows: number;
}

interface Call {
  values: unknown[];
  identity: string;
  timeoutMs?: number;
  deadline?: number;
  timer?: NodeJS.Timeout;
  /** What the call is waiting for once sent: its own row's result. */
  sent?: Promise<SqlResult>;
  answered: boolean;
  resolve(result: SqlResult): void;
  reject(error: unknown): void;
}

/** Counts of what a batcher sent, for tests and the bench. */
export interface BatcherCounters {
  calls: number;
  statements: number;
  batches: number;
  retriedRows: number;
}

export class StatementBatcher {
  readonly counters: BatcherCounters = { calls: 0, statements: 0, batches: 0, retriedRows: 0 };
  private queue: Call[] = [];
  /** Rows of a failed or doubtful batch, to run alone: they take their turn like any statement. */
  private retries: Call[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly executor: SqlExecutor,
    private readonly statement: BatchedStatement,
    readonly limits: BatcherLimits,
  ) {}

  /** Runs the single statement with `values`, possibly within a batch; same result shape. */
  query(values: unknown[], timeoutMs?: number): Promise<SqlResult> {
    this.counters.calls++;
    return new Promise<SqlResult>((resolve, reject) => {
      const call: Call = {
        values,
        identity: this.statement.identity(values),
        timeoutMs,
        deadline: deadlineAfter(timeoutMs),
        answered: false,
        resolve,
        reject,
      };
      if (timeoutMs !== undefined) call.timer = setTimeout(() => this.expire(call), timeoutMs);
      this.queue.push(call);
      if (this.inFlight === 0) this.pump();
      else if (this.inFlight < this.limits.maxInFlight && !this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  private pump(): void {
    while (this.inFlight < this.limits.maxInFlight) {
      const retry = this.retries.shift();
      if (retry) {
        if (!retry.answered) this.send([retry]);
      } else if (this.queue.length > 0) {
        this.send(this.take());
      } else {
        return;
      }
    }
  }

  /** The next batch: queued calls in arrival order, one per identity, sorted by identity. */
  private take(): Call[] {
    const seen = new Set<string>();
    const batch: Call[] = [];
    const rest: Call[] = [];
    for (const call of this.queue) {
      if (batch.length < this.limits.maxRows && !seen.has(call.identity)) {
        seen.add(call.identity);
        batch.push(call);
      } else {
        rest.push(call);
      }
    }
    this.queue = rest;
    return batch.sort((a, b) => (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0));
  }

  private send(calls: Call[]): void {
    this.inFlight++;
    this.counters.statements++;
    const done = () => {
      this.inFlight--;
      this.pump();
    };
    if (calls.length === 1) {
      const [call] = calls;
      call.sent = this.runSingle(call);
      call.sent.then(
        (result) => this.answer(call, result),
        (error) => this.fail(call, error),
      );
      void call.sent.then(done, done);
      return;
    }
    this.counters.batches++;
    const sql = this.statement.batch(calls.map((call) => call.values));
    const running = this.execute({ ...sql, timeoutMs: this.boundOf(calls) });
    const parts = running.then((result) => this.statement.split(result, calls.length));
    calls.forEach((call, index) => {
      call.sent = parts.then(
        (results) => results[index],
        (error: unknown) => {
          // The statement's own timeout carries an aftermath: the caller's is its row's.
          if (error instanceof StatementTimeoutError) {
            throw rowTimeout(error, call, index, this.statement, calls.length);
          }
          throw error;
        },
      );
      // Read by expire() or batchFailed() when needed; never an unhandled rejection.
      call.sent.catch(() => undefined);
    });
    parts.then(
      (results) =>
        calls.forEach((call, index) =>
          this.statement.recheck?.(results[index])
            ? this.retry(call)
            : this.answer(call, results[index]),
        ),
      (error: unknown) => this.batchFailed(calls, error),
    );
    void running.then(done, done);
  }

  /**
   * The server rejected the whole statement (one bad row, a deadlock, a conflict): nothing
   * of it was applied, so each row still awaited runs again alone, and only a bad row fails.
   * Any other failure (a lost or terminated connection, a timeout) may have applied it:
   * every caller gets the error, as it would have from its own statement.
   */
  private batchFailed(calls: Call[], error: unknown): void {
    if (!isStatementError(error)) {
      for (const call of calls) void call.sent!.catch((own: unknown) => this.fail(call, own));
      return;
    }
    for (const call of calls) this.retry(call);
  }

  /**
   * Runs a batched row again with the single statement, unless its caller gave up. Queued
   * behind `maxInFlight` like everything else: a rejected batch of 64 rows must not send 64
   * statements at once and starve the pool.
   */
  private retry(call: Call): void {
    if (call.answered) return;
    this.counters.retriedRows++;
    this.retries.push(call);
    this.pump();
  }

  private runSingle(call: Call): Promise<SqlResult> {
    const timeoutMs = remaining(call.deadline);
    return this.execute({ ...this.statement.single, values: call.values, timeoutMs });
  }

  /** An executor that throws (a DataSource closed meanwhile) fails the call, not the process. */
  private async execute(statement: SqlStatement): Promise<SqlResult> {
    return this.executor.query(statement);
  }

  /** The batch is bounded by its most patient caller; each caller by its own timer. */
  private boundOf(calls: Call[]): number | undefined {
    let latest = 0;
    for (const call of calls) {
      if (call.deadline === undefined) return undefined;
      latest = Math.max(latest, call.deadline);
    }
    return remaining(latest);
  }

  private answer(call: Call, result: SqlResult): void {
    if (call.answered) return;
    call.answered = true;
    clearTimeout(call.timer);
    call.resolve(result);
  }

  private fail(call: Call, error: unknown): void {
    if (call.answered) return;
    call.answered = true;
    clearTimeout(call.timer);
    call.reject(error);
  }

  /** A caller's own bound passed: answer it now, with what became of its row. */
  private expire(call: Call): void {
    if (call.answered) return;
    const index = this.queue.indexOf(call);
    if (index >= 0) this.queue.splice(index, 1);
    const aftermath: Promise<StatementAftermath> = call.sent
      ? call.sent.then(
          (result) => ({ applied: true, result }),
          (error: unknown) =>
            error instanceof StatementTimeoutError
              ? error.aftermath
              : error instanceof Error && isServerError(error)
                ? { applied: false }
                : { applied: 'unknown' },
        )
      : Promise.resolve({ applied: false });
    this.fail(
      call,
      new StatementTimeoutError(
        call.timeoutMs!,
        aftermath,
        call.sent ? 'Postgres' : 'a pool connection',
      ),
    );
  }
}

/** The batch's timeout, as seen by the caller of row `index`: its own bound and row. */
function rowTimeout(
  error: StatementTimeoutError,
  call: Call,
  index: number,
  statement: BatchedStatement,
  count: number,
): StatementTimeoutError {
  const aftermath = error.aftermath.then((late): StatementAftermath =>
    late.applied === true
      ? { applied: true, result: statement.split(late.result, count)[index] }
      : late,
  );
  return new StatementTimeoutError(call.timeoutMs ?? error.timeoutMs, aftermath, 'Postgres');
}

/** An ERROR the server raised for the statement: its transaction rolled back, nothing applied. */
function isStatementError(error: unknown): boolean {
  return (
    error instanceof Error &&
    isServerError(error) &&
    (error as { severity?: unknown }).severity === 'ERROR'
  );
}
