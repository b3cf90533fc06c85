// Runs one of the module's statements on a pg client within a time bound, and deals with a
// statement that outlives it: the caller is answered at once, the statement is cancelled on
// the server (so a statement waiting on a lock stops waiting and holds no backend), and the
// connection is cut if the server does not answer within a short grace (a frozen server), so
// it never goes back to the pool. Every Postgres executor of the module (the pool's, a
// transaction's, and a batching one) goes through here, so the bound lives in one place.
import { connect } from 'node:net';
import type { SqlStatement, SqlResult } from './postgres-idempotency.store.js';

/** The parts of a pg Client used here. */
export interface PgClientLike {
  query(
    config: { name?: string; text: string; values: unknown[] },
    callback: (error: Error | null, result: SqlResult) => void,
  ): unknown;
  end(): Promise<void>;
  readonly processID: number | null;
  readonly secretKey: number | null;
  readonly host: string;
  readonly port: number;
}

/** What became of a statement after its caller stopped waiting for it. */
export type StatementAftermath =
  /** It never reached the server, or failed or was cancelled there: nothing was applied. */
  | { applied: false }
  /** It completed after all, within the grace period; this is its result. */
  | { applied: true; result: SqlResult }
  /** The connection was cut before the server answered: it may still be applied. */
  | { applied: 'unknown' };

/** A statement (or the wait for a connection to run it on) outlived its time bound. */
export class StatementTimeoutError extends Error {
  constructor(
    readonly timeoutMs: number,
    /** Settles once the statement's fate is known (or cannot be). */
    readonly aftermath: Promise<StatementAftermath>,
    waitingFor: 'a pool connection' | 'Postgres',
  ) {
    super(`Statement timed out after ${timeoutMs} ms waiting for ${waitingFor}`);
    this.name = 'StatementTimeoutError';
  }
}

/** How long a timed-out statement gets to end after its cancel before its connection is cut. */
export const CANCEL_GRACE_MS = 1_000;

/**
 * Runs `statement` on `client`, bounded by `statement.timeoutMs` when set. `handBack` gives
 * the client back once it is free: without an error while it is healthy, with one when it
 * must be closed (its statement failed, or outlived its bound and was cancelled).
 */
export function runStatement(
  client: PgClientLike,
  statement: SqlStatement,
  handBack: (error?: Error) => void,
): Promise<SqlResult> {
  const { name, text, values, timeoutMs } = statement;
  return new Promise((resolve, reject) => {
    let settle: ((aftermath: StatementAftermath) => void) | undefined;
    let state: 'running' | 'answered' | 'timed out' | 'cut' = 'running';
    let graceTimer: NodeJS.Timeout | undefined;
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            state = 'timed out';
            const aftermath = new Promise<StatementAftermath>((done) => (settle = done));
            reject(new StatementTimeoutError(timeoutMs, aftermath, 'Postgres'));
            cancelOnServer(client);
            graceTimer = setTimeout(
              () => {
                state = 'cut';
                const error = new Error(
                  `Statement did not end ${CANCEL_GRACE_MS} ms after its cancel`,
                );
                handBack(error);
                settle!({ applied: 'unknown' });
              },
              Math.min(CANCEL_GRACE_MS, timeoutMs),
            );
          }, timeoutMs);
    client.query({ name, text, values }, (error, result) => {
      // After an error the connection is closed rather than reused, as pool.query does.
      if (state === 'running') {
        state = 'answered';
        clearTimeout(timer);
        handBack(error ?? undefined);
        return error ? reject(error) : resolve(result);
      }
      if (state !== 'timed out') return; // cut: the pool already closed the connection
      state = 'answered';
      clearTimeout(graceTimer);
      // Closed rather than reused: the cancel travels on a connection of its own and may
      // reach the server only now, where it would cancel the next caller's statement.
      handBack(error ?? new Error('The connection of a cancelled statement is not reused'));
      if (!error) settle!({ applied: true, result });
      else settle!(isServerError(error) ? { applied: false } : { applied: 'unknown' });
    });
  });
}

/**
 * Bounds work that is not one statement of ours (TypeORM opening or committing a
 * transaction): rejects with StatementTimeoutError after `timeoutMs` and calls `onTimeout`,
 * which must make the work stop (cut its connection).
 */
export function withinTimeout<T>(
  work: Promise<T>,
  timeoutMs: number | undefined,
  onTimeout: (error: StatementTimeoutError) => void,
): Promise<T> {
  if (timeoutMs === undefined) return work;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const unknown: StatementAftermath = { applied: 'unknown' };
      const error = new StatementTimeoutError(timeoutMs, Promise.resolve(unknown), 'Postgres');
      reject(error);
      onTimeout(error);
    }, timeoutMs);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** An error the server reported for the statement (it carries a SQLSTATE), not a lost link. */
export function isServerError(error: Error): boolean {
  return typeof (error as { code?: unknown }).code === 'string' && 'severity' in error;
}

/**
 * Asks the server to cancel whatever `client`'s backend is running: the protocol's
 * CancelRequest, sent on a connection of its own (the client's is busy). Best effort and
 * bounded; a frozen server simply never acts on it.
 */
export function cancelOnServer(client: PgClientLike): void {
  const { processID, secretKey, host, port } = client;
  if (typeof processID !== 'number' || typeof secretKey !== 'number') return;
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(80877102, 4); // the CancelRequest code
  packet.writeInt32BE(processID, 8);
  packet.writeInt32BE(secretKey, 12);
  const socket = host?.startsWith('/')
    ? connect(`${host}/.s.PGSQL.${port}`)
    : connect(port, host || 'localhost');
  socket.setTimeout(CANCEL_GRACE_MS, () => socket.destroy());
  socket.on('error', () => socket.destroy());
  socket.on('connect', () => socket.end(packet));
  socket.unref();
}

/** When a bound of `timeoutMs` from now passes, or undefined when unbounded. */
export function deadlineAfter(timeoutMs: number | undefined): number | undefined {
  return timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
}

/** Milliseconds left until `deadline` (at least 1), or undefined when unbounded. */
export function remaining(deadline: number | undefined): number | undefined {
  return deadline === undefined ? undefined : Math.max(1, deadline - Date.now());
}
