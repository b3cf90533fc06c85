// The multi-row forms of the claim and complete statements, which the store's batchers send
// when calls of one kind arrive while one of them is already in flight (see
// postgres-statement.batcher.ts). Each input row carries its position (`ord`), and each row
// back names the position it answers, so one statement serves many callers.
//
// Two rules keep them safe beside each other and beside the single-row statements:
// - Claims insert rows in the order they come in, which the batcher sorts by (scope, key):
//   two claim batches that share keys lock them in the same order and cannot deadlock.
//   A complete batch's UPDATE locks in ctid order (its TID scan sorts them), but only rows
//   its own tokens still own, which no other batch can hold; a deadlock would anyway
//   reject the batch and run its rows alone.
// - Every lookup of the table is a unique-index probe per input row (a LATERAL subquery the
//   planner cannot flatten, and a TID scan for the UPDATE), and the statements are unnamed:
//   planned for each batch at the table's current size. A named statement's cached generic
//   plan is the trap here: planned while the table is small, it keeps its sequential scans
//   until statistics change, and costs grow with the table (200 ms for 8 rows on a table
//   grown to 200k rows without an ANALYZE). Planning costs a fraction of a batch's time; a
//   lone call still runs the single, named statement.
import type { SqlResult } from './postgres-idempotency.store.js';

export interface BatchStatementText {
  name: string;
  text: string;
}

/**
 * A condition that is always true and turns off the WAL flush wait of the statement's own
 * transaction (`durability: 'asynchronous'`): `set_config(..., true)` lasts until that
 * transaction ends, and the commit reads the setting before it is reset. The statements place
 * it where it is evaluated whenever they write; a statement that writes nothing commits
 * nothing to flush.
 */
export const ASYNCHRONOUS_COMMIT = `set_config('synchronous_commit', 'off', true) IS NOT NULL`;

/** Splits a batch's result into one single-statement-shaped result per input row. */
export function splitByOrd(result: SqlResult, count: number): SqlResult[] {
  const parts: SqlResult[] = Array.from({ length: count }, () => ({ rows: [], rowCount: 0 }));
  for (const row of result.rows as { ord: string | number }[]) {
    const part = parts[Number(row.ord) - 1];
    part.rows.push(row);
    part.rowCount = part.rows.length;
  }
  return parts;
}

/** pg parses a statement without a name on every run, and Postgres plans it for its values. */
const UNNAMED = '';

/** `asynchronous`: each statement's commit does not wait for the WAL flush (`durability`). */
export function buildBatchStatements(table: string, channel: string, asynchronous = false) {
  const ms = (column: string) => `${column} * interval '1 millisecond'`;
  // Evaluated for every row the statement writes (see ASYNCHRONOUS_COMMIT).
  const relaxed = (prefix: string) => (asynchronous ? `${prefix} ${ASYNCHRONOUS_COMMIT}` : '');
  /*
   * New keys are inserted; for every other row the record as it stands comes back, for the
   * caller to replay, answer 423 or 422. Unlike the single claim, a batch takes nothing
   * over: a row that could be taken over (claimable) goes back to its caller, who then
   * takes it over with the single claim statement. Takeovers are rare (expired retention,
   * a crashed process), and leaving them out means the batch locks only the rows it inserts.
   * No row for a position means a concurrent claim inserted the key after this statement's
   * snapshot: its caller looks again, as with the single statement.
   */
  const claim = `
        WITH input AS MATERIALIZED (
          SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::float8[], $5::float8[],
                               $6::bigint[])
                   WITH ORDINALITY AS i(scope, idempotency_key, fingerprint, lease_ms,
                                        retention_ms, token, ord)
        ), inserted AS (
          INSERT INTO ${table}
            (scope, idempotency_key, fingerprint, state, fencing_token, locked_until, expires_at)
          SELECT scope, idempotency_key, fingerprint, 'in_progress', token,
                 now() + ${ms('lease_ms')}, now() + ${ms('retention_ms')}
            FROM input${relaxed(' WHERE')} ORDER BY ord
          ON CONFLICT (scope, idempotency_key) DO NOTHING
          RETURNING scope, idempotency_key, fencing_token
        )
        SELECT i.ord,
               CASE WHEN n.fencing_token IS NOT NULL THEN 'claimed' ELSE 'existing' END AS outcome,
               n.fencing_token::text AS token, r.state, r.fingerprint = i.fingerprint AS same_request,
               (r.expires_at <= now() AND (r.state = 'completed' OR r.locked_until <= now()))
                 OR (r.state = 'in_progress' AND r.locked_until <= now()
                     AND r.fingerprint = i.fingerprint) AS claimable,
               GREATEST(0, EXTRACT(EPOCH FROM (r.locked_until - clock_timestamp())) * 1000)
                 AS lease_left_ms,
               r.response_status, r.response_headers, r.response_body
          FROM input AS i
          LEFT JOIN inserted AS n
            ON n.scope = i.scope AND n.idempotency_key = i.idempotency_key
          LEFT JOIN LATERAL (
            SELECT x.state, x.fingerprint, x.expires_at, x.locked_until, x.response_status,
                   x.response_headers, x.response_body
              FROM ${table} AS x
             WHERE n.fencing_token IS NULL
               AND x.scope = i.scope AND x.idempotency_key = i.idempotency_key
            OFFSET 0
          ) AS r ON true
         WHERE n.fencing_token IS NOT NULL OR r.state IS NOT NULL`;
  /*
   * Completes every row still owned by its token. The rows are found first, one unique-index
   * probe per input row in input order; the UPDATE then reaches them by ctid (a TID scan over
   * the array of them: a join on ctid alone would scan the table). A row changed
   * since this statement's snapshot (a renewal racing the completion) is missed and answers
   * false: the batcher's caller confirms every false with the single complete statement,
   * which follows the row to its newest version.
   */
  const complete = (returning: string) => `
        WITH input AS MATERIALIZED (
          SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[], $5::text[],
                               $6::bytea[], $7::float8[])
                   WITH ORDINALITY AS i(scope, idempotency_key, token, status, headers, body,
                                        retention_ms, ord)
        ), owned AS MATERIALIZED (
          SELECT i.*, x.ctid AS row_id
            FROM input AS i
           CROSS JOIN LATERAL (
             SELECT ctid FROM ${table} AS r
              WHERE r.scope = i.scope AND r.idempotency_key = i.idempotency_key
                AND r.fencing_token = i.token AND r.state = 'in_progress'
             OFFSET 0
           ) AS x
           ORDER BY i.ord
        ), done AS (
          UPDATE ${table} AS r
             SET state = 'completed', response_status = o.status,
                 response_headers = o.headers::jsonb, response_body = o.body,
                 completed_at = now(), locked_until = NULL,
                 expires_at = now() + ${ms('o.retention_ms')}
            FROM owned AS o
           WHERE r.ctid = ANY (ARRAY(SELECT row_id FROM owned)) AND r.ctid = o.row_id
             AND r.fencing_token = o.token AND r.state = 'in_progress'${relaxed(' AND')}
          RETURNING ${returning}
        )`;
  return {
    claim: { name: UNNAMED, text: claim },
    complete: { name: UNNAMED, text: `${complete('o.ord')} SELECT ord FROM done` },
    /** complete, and a notification per completed row that someone waits for. */
    completeNotifying: {
      name: UNNAMED,
      text: `${complete('o.ord, r.scope, r.idempotency_key, r.has_waiters')}
        SELECT ord, CASE WHEN has_waiters THEN pg_notify('${channel}',
                 encode(sha256(convert_to(scope || E'\\n' || idempotency_key, 'UTF8')), 'hex'))
               END
          FROM done`,
    },
  };
}
