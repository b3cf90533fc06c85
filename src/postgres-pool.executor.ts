// Runs the store's statements on a pg Pool, each bounded by its `timeoutMs` from the moment
// it asks for a connection: a request never waits on an exhausted pool, a locked table or a
// frozen server for longer than that (see runStatement for what happens to the statement).
import type { SqlExecutor, SqlResult, SqlStatement } from './postgres-idempotency.store.js';
import { guardPoolClients, type PgPoolLike } from './postgres-pool.guard.js';
import {
  runStatement,
  StatementTimeoutError,
  type PgClientLike,
  type StatementAftermath,
} from './postgres-statement.runner.js';

/** The parts of a pg Pool used here. */
export interface PgPool extends PgPoolLike {
  connect(
    callback: (
      error: Error | undefined,
      client: PgClientLike,
      done: (error?: Error) => void,
    ) => void,
  ): void;
}

/** Whether `executor` is a pg Pool (as opposed to a client, a query runner or a wrapper). */
export function isPgPool(executor: object): executor is PgPool {
  const candidate = executor as Partial<PgPool> & { idleCount?: unknown };
  return (
    typeof candidate.connect === 'function' &&
    typeof candidate.on === 'function' &&
    typeof candidate.idleCount === 'number'
  );
}

/** An executor on the pool `resolvePool()` returns (looked up per statement: it may change). */
export function poolExecutor(resolvePool: () => PgPool): SqlExecutor {
  return { query: (statement) => runOnPool(resolvePool(), statement) };
}

function runOnPool(pool: PgPool, statement: SqlStatement): Promise<SqlResult> {
  guardPoolClients(pool);
  const { timeoutMs } = statement;
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let waiting = true;
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            waiting = false;
            const nothingSent: StatementAftermath = { applied: false };
            reject(
              new StatementTimeoutError(
                timeoutMs,
                Promise.resolve(nothingSent),
                'a pool connection',
              ),
            );
          }, timeoutMs);
    // pg-pool offers no way to leave its queue: a caller that gave up is remembered, and the
    // connection it is handed later goes straight back.
    pool.connect((error, client, done) => {
      if (!waiting) {
        if (!error) done();
        return;
      }
      waiting = false;
      clearTimeout(timer);
      if (error) return reject(error);
      const remaining =
        timeoutMs === undefined ? undefined : Math.max(1, timeoutMs - (Date.now() - started));
      runStatement(client, { ...statement, timeoutMs: remaining }, done).then(resolve, reject);
    });
  });
}
