// The batchers of a Postgres store on a pool: one per batched statement (claim, complete,
// and complete with notifications). Replays and 423s are claims, so they batch too. Renew,
// release and the rest stay single: they are rare next to claims and completions. A store
// working inside a transaction has none: its statements must run on the transaction's
// connection, one by one.
import { buildBatchStatements, splitByOrd } from './postgres-batch.statements.js';
import type { SqlExecutor } from './postgres-idempotency.store.js';
import { StatementBatcher, type BatcherLimits } from './postgres-statement.batcher.js';

/**
 * How many statements of a kind may be out at once: half the pool each for claims and
 * completions (at least two). Below that, every call goes out alone at once, as unbatched;
 * batches form only once a kind holds its half of the pool, where the Node thread's fixed
 * cost per statement is what binds. A smaller limit makes bigger batches at high concurrency
 * but queues requests behind it at low concurrency while pool connections sit idle (measured:
 * with two per kind, new keys at 10 connections fell to 0.6x of unbatched).
 * 64 rows keep a batch's parameters small.
 */
export function batchLimitsFor(poolSize: number | undefined): BatcherLimits {
  return { maxInFlight: Math.max(2, Math.floor((poolSize ?? 4) / 2)), maxRows: 64 };
}

export interface StoreBatchers {
  claim: StatementBatcher;
  complete: StatementBatcher;
  /** Replaced (completeNotifyingBatcher) once the store knows the table's channel. */
  completeNotifying: StatementBatcher;
  /** The channel completeNotifying notifies on. */
  channel: string;
}

interface Names {
  table: string;
  channel: string;
  claim: { name: string; text: string };
  claimResettingWaiters: { name: string; text: string };
  complete: { name: string; text: string };
}

type Statement = { name: string; text: string };

/** Scope and key identify a record; the newline cannot occur in either (printable keys). */
const identity = (row: unknown[]) => `${row[0] as string}\n${row[1] as string}`;

/** The values of each row, column by column: one array parameter per column. */
function columns(rows: unknown[][]): unknown[][] {
  return rows[0].map((_, column) => rows.map((row) => row[column]));
}

function completeBatcher(
  executor: SqlExecutor,
  single: Statement,
  multi: Statement,
  limits: BatcherLimits,
): StatementBatcher {
  return new StatementBatcher(
    executor,
    {
      single,
      batch: (rows) => ({ ...multi, values: columns(rows) }),
      split: splitByOrd,
      identity,
      // A batch may miss a row that changed after its snapshot (see the statement).
      recheck: (result) => result.rowCount !== 1,
    },
    limits,
  );
}

/** The batcher of completions that notify on `channel` (`single`: the store's statement). */
export function completeNotifyingBatcher(
  executor: SqlExecutor,
  table: string,
  single: Statement,
  channel: string,
  limits: BatcherLimits,
  asynchronous = false,
): StatementBatcher {
  const batch = buildBatchStatements(table, channel, asynchronous);
  return completeBatcher(executor, single, batch.completeNotifying, limits);
}

/**
 * completeNotifying notifies on the channel of the table as spelled (sql.channel) until the
 * store replaces it with the table's own (completeNotifyingBatcher).
 */
export function storeBatchers(
  executor: SqlExecutor,
  sql: Names & { completeNotifying: Statement },
  limits: BatcherLimits,
  asynchronous = false,
  /** Whether the table has has_waiters: a lone claim then clears it on a takeover. */
  resetsWaiters: () => boolean = () => false,
): StoreBatchers {
  const batch = buildBatchStatements(sql.table, sql.channel, asynchronous);
  const split = splitByOrd;
  const complete = (single: Statement, multi: Statement) =>
    completeBatcher(executor, single, multi, limits);
  return {
    channel: sql.channel,
    claim: new StatementBatcher(
      executor,
      {
        // Read when sent: a batch takes nothing over, but a batch of one runs the single claim.
        get single() {
          return resetsWaiters() ? sql.claimResettingWaiters : sql.claim;
        },
        batch: (rows) => ({ ...batch.claim, values: columns(rows) }),
        split,
        identity,
      },
      limits,
    ),
    complete: complete(sql.complete, batch.complete),
    completeNotifying: complete(sql.completeNotifying, batch.completeNotifying),
  };
}
