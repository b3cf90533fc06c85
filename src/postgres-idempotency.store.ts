// The Postgres implementation of IdempotencyStore. Every method is one SQL statement, so a
// new key costs two round trips (claim, complete) and a replay or a 423 costs one; under
// load, concurrent claims and completions share multi-row statements (postgres-store.batchers).
// No row lock or transaction is held while the handler runs: the lease column does that job.
import { createHash, randomFillSync } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { DEFAULT_TABLE_NAME, WAIT_POLL_MS } from './idempotency.constants.js';
import {
  canonicalTableSpelling,
  idempotencyTableNames,
  settledChannel,
} from './idempotency-table.js';
import { isPgPool, poolExecutor, type PgPool } from './postgres-pool.executor.js';
import { guardedPoolOf } from './postgres-pool.guard.js';
import { ASYNCHRONOUS_COMMIT } from './postgres-batch.statements.js';
import {
  batchLimitsFor,
  completeNotifyingBatcher,
  storeBatchers,
  type StoreBatchers,
} from './postgres-store.batchers.js';
import type { StatementBatcher } from './postgres-statement.batcher.js';
import { deadlineAfter, remaining, StatementTimeoutError } from './postgres-statement.runner.js';
import {
  IdempotencyStore,
  IdempotencyStoreTimeoutError,
  type ClaimedRecord,
  type ClaimRequest,
  type ClaimResult,
  type IdempotencyRecordInfo,
  type InFlightRecord,
  type InvalidateOptions,
  type InvalidateResult,
  type StoreCallOptions,
  type StoredResponse,
} from './idempotency-store.js';
import type { PostgresIdempotencyListener } from './postgres-idempotency.listener.js';
import { SettledWatches } from './postgres-idempotency.watch.js';

/**
 * What the store needs to run a statement: a pg Pool, a pg Client or a TypeORM QueryRunner.
 * An executor honours `timeoutMs` (see runStatement), or the store's calls are unbounded.
 */
export interface SqlExecutor {
  query(statement: SqlStatement): Promise<SqlResult>;
}

export interface SqlStatement {
  /** Name of the server-side prepared statement (parsed once per connection). */
  name: string;
  text: string;
  values: unknown[];
  /**
   * Fail with StatementTimeoutError after this many milliseconds, counted from the moment
   * the statement asks for a connection. Unbounded when absent.
   */
  timeoutMs?: number;
}

export interface SqlResult {
  rows: any[];
  rowCount: number | null;
}

interface ClaimRow {
  outcome: 'claimed' | 'existing';
  token: string | null;
  state: 'in_progress' | 'completed' | null;
  same_request: boolean | null;
  claimable: boolean | null;
  lease_left_ms: number | null;
  response_status: number | null;
  response_headers: Record<string, string> | null;
  response_body: Buffer | null;
}

/**
 * How often a claim is retried when a concurrent claim changed the row between the
 * statement's snapshot and its write (the statement then sees neither its own claim nor the
 * other one's). One retry almost always settles it.
 */
const MAX_CLAIM_ATTEMPTS = 5;

export interface PostgresIdempotencyStoreOptions {
  /**
   * Wakes duplicates waiting for a record (`waitInFlightMs`) as soon as it settles. Without
   * one they poll. Whoever creates it closes it (`listener.close()`).
   */
  listener?: PostgresIdempotencyListener;
  /**
   * Sends concurrent claims and completions as one multi-row statement per batch. Calls
   * only wait for a statement of their kind already in flight, never for a timer, so a
   * lone request costs what it did unbatched. Off for a store inside a transaction.
   * @default true
   */
  batching?: boolean;
  /**
   * `'asynchronous'`: claims and completions commit with `synchronous_commit = off` (each
   * statement sets it for its own transaction only), so they do not wait for the WAL flush.
   * A database crash then loses the last moments of them (about 3 x `wal_writer_delay`,
   * 600 ms by default): a retry of such a request runs its handler again. Never applies to a
   * store inside a transaction (`withExecutor`): a transactional route's commit stays durable.
   * Build such a store on a pool: on a client or query runner inside a transaction of yours,
   * the setting would apply to that whole transaction's commit.
   * @default 'synchronous'
   */
  durability?: IdempotencyDurability;
  /**
   * Connections of the pool the statements run on: batching lets half of them each carry
   * claims and completions before calls queue into batches. Read from the pool or the
   * DataSource when the store is built from one.
   * @default the pool's `max`, else 4
   */
  poolSize?: number;
}

/** Whether claims and completions wait for the WAL flush at commit (`synchronous_commit`). */
export type IdempotencyDurability = 'synchronous' | 'asynchronous';

/**
 * Whether the table has the has_waiters column (AddIdempotencyWaiters migration), and the
 * channel its settled records notify on.
 */
interface WaitersColumn {
  present?: boolean;
  /**
   * From the table's identity in the catalog, not from tableName as spelled: instances that
   * reach one table as `public.t` and as `t` must hear each other.
   */
  channel?: string;
  probing?: Promise<boolean>;
  /** The store on the pool, never a transaction's: the probe must not touch a transaction. */
  store: PostgresIdempotencyStore;
}

export class PostgresIdempotencyStore extends IdempotencyStore {
  private readonly sql: ReturnType<typeof buildStatements>;
  private readonly executor: SqlExecutor;
  private readonly listener?: PostgresIdempotencyListener;
  private waitersColumn: WaitersColumn;
  private notifying?: ReturnType<typeof notifyingStatements>;
  private readonly asynchronous: boolean;
  private readonly batchLimits?: ReturnType<typeof batchLimitsFor>;
  private watches?: SettledWatches;
  /** Absent when batching is off (and inside a transaction). */
  readonly batchers?: StoreBatchers;

  /**
   * @param executor runs the statements: a pg Pool (its statements are then bounded by
   *   `timeoutMs` and its clients guarded, as with a DataSource), or any SqlExecutor.
   */
  constructor(
    executor: SqlExecutor,
    private readonly tableName?: string,
    options: PostgresIdempotencyStoreOptions = {},
  ) {
    super();
    this.executor = isPgPool(executor) ? poolExecutor(() => executor) : executor;
    const asynchronous = options.durability === 'asynchronous';
    this.asynchronous = asynchronous;
    this.sql = statementsFor(tableName, asynchronous);
    this.listener = options.listener;
    this.waitersColumn = { store: this };
    if (options.batching !== false) {
      const poolSize = options.poolSize ?? (isPgPool(executor) ? poolMax(executor) : undefined);
      const limits = batchLimitsFor(poolSize);
      this.batchLimits = limits;
      // Notifying, until the first completion looks the table up, on the channel as spelled.
      const { completeNotifying } = notifyingStatements(tableName, asynchronous, this.sql.channel);
      this.batchers = storeBatchers(
        this.executor,
        { ...this.sql, completeNotifying },
        limits,
        asynchronous,
        () => this.resetsWaiters(),
      );
    }
  }

  /**
   * The same table, its statements run through another executor (a transaction): one by
   * one, and synchronous whatever this store's durability, since they commit with it.
   */
  withExecutor(executor: SqlExecutor): PostgresIdempotencyStore {
    const store = new PostgresIdempotencyStore(executor, this.tableName, {
      listener: this.listener,
      batching: false,
    });
    store.waitersColumn = this.waitersColumn;
    return store;
  }

  /**
   * The channel that completing or releasing a waited-for record notifies: derived from the
   * table's schema and name as the catalog has them, once the store has looked them up (its
   * first completion, release or wait); until then, from the name as configured.
   */
  get notificationChannel(): string {
    return this.waitersColumn.channel ?? this.sql.channel;
  }

  /** Runs statements on the pg pool behind a TypeORM Postgres DataSource. */
  static fromDataSource(
    dataSource: DataSource,
    tableName?: string,
    options: PostgresIdempotencyStoreOptions = {},
  ): PostgresIdempotencyStore {
    return new PostgresIdempotencyStore(dataSourceExecutor(dataSource), tableName, {
      poolSize: dataSourcePoolSize(dataSource),
      ...options,
    });
  }

  async claim(request: ClaimRequest): Promise<ClaimResult> {
    const { scope, key, fingerprint, leaseMs, retentionMs, timeoutMs } = request;
    // The attempts share one time bound.
    const deadline = deadlineAfter(timeoutMs);
    // A takeover clears has_waiters where the table has it. Known once the first completion,
    // release or wait of the store probed the table (no round trip of its own here); until
    // then, a takeover leaves the mark, which costs at most a needless notification.
    const single = this.resetsWaiters() ? this.sql.claimResettingWaiters : this.sql.claim;
    for (let attempt = 1; attempt <= MAX_CLAIM_ATTEMPTS; attempt++) {
      const token = newFencingToken();
      const values = [scope, key, fingerprint, leaseMs, retentionMs, token];
      let rows: ClaimRow[];
      // The first attempt may share a batch; a batch takes nothing over, so an attempt after
      // it (a takeover, or a race) runs the single statement.
      const batcher = attempt === 1 ? this.batchers?.claim : undefined;
      try {
        ({ rows } = await this.run(single, values, remaining(deadline), batcher));
      } catch (error) {
        if (!(error instanceof IdempotencyStoreTimeoutError)) throw error;
        const aftermath = (error.cause as StatementTimeoutError).aftermath;
        throw new IdempotencyStoreTimeoutError(
          error.timeoutMs,
          {
            record: { scope, key, token },
            applied: aftermath.then((late) =>
              late.applied === true ? late.result.rows[0]?.outcome === 'claimed' : late.applied,
            ),
          },
          { cause: error.cause },
        );
      }
      const row = rows[0];
      if (!row || (row.outcome === 'existing' && row.claimable)) continue; // raced: look again
      if (row.outcome === 'claimed') {
        const record = { scope, key, token: String(row.token) };
        // `state` is the record's state as the claim found it: in progress means a lapsed lease
        // (only the single statement takes over; a batch's claimed rows have none).
        return row.state === 'in_progress'
          ? { outcome: 'claimed', record, takenOver: true }
          : { outcome: 'claimed', record };
      }
      if (!row.same_request) return { outcome: 'mismatch' };
      if (row.state === 'completed') {
        return {
          outcome: 'completed',
          response: {
            status: Number(row.response_status),
            headers: row.response_headers ?? {},
            body: row.response_body ?? Buffer.alloc(0),
          },
        };
      }
      return { outcome: 'in_progress', leaseLeftMs: Number(row.lease_left_ms) };
    }
    throw new Error(`Could not claim idempotency key after ${MAX_CLAIM_ATTEMPTS} attempts`);
  }

  async complete(
    record: ClaimedRecord,
    response: StoredResponse,
    retentionMs: number,
    call: StoreCallOptions = {},
  ): Promise<boolean> {
    const values = [
      record.scope,
      record.key,
      record.token,
      response.status,
      JSON.stringify(response.headers),
      response.body,
      retentionMs,
    ];
    // The first call of a process also probes the table: both share the call's bound.
    const deadline = deadlineAfter(call.timeoutMs);
    const notifying = (await this.hasWaitersColumn(call.timeoutMs)) && this.notifyingSql();
    const statement = notifying ? notifying.completeNotifying : this.sql.complete;
    const batcher = notifying ? this.batchers?.completeNotifying : this.batchers?.complete;
    const { rowCount } = await this.run(statement, values, remaining(deadline), batcher);
    return rowCount === 1;
  }

  async renew(
    record: ClaimedRecord,
    leaseMs: number,
    call: StoreCallOptions = {},
  ): Promise<boolean> {
    const values = [record.scope, record.key, record.token, leaseMs];
    const { rowCount } = await this.run(this.sql.renew, values, call.timeoutMs);
    return rowCount === 1;
  }

  async release(record: ClaimedRecord, call: StoreCallOptions = {}): Promise<boolean> {
    const values = [record.scope, record.key, record.token];
    // The first call of a process also probes the table: both share the call's bound.
    const deadline = deadlineAfter(call.timeoutMs);
    const notifying = (await this.hasWaitersColumn(call.timeoutMs)) && this.notifyingSql();
    const statement = notifying ? notifying.releaseNotifying : this.sql.release;
    const { rowCount } = await this.run(statement, values, remaining(deadline));
    return rowCount === 1;
  }

  async purgeExpired(batchSize: number, call: StoreCallOptions = {}): Promise<number> {
    const { rowCount } = await this.run(this.sql.purge, [batchSize], call.timeoutMs);
    return rowCount ?? 0;
  }

  override async inspect(
    scope: string,
    key: string,
    call: StoreCallOptions = {},
  ): Promise<IdempotencyRecordInfo | undefined> {
    const { rows } = await this.run(this.sql.inspect, [scope, key], call.timeoutMs);
    return rows[0] && recordInfo(scope, key, rows[0]);
  }

  override async invalidate(
    scope: string,
    key: string,
    options: InvalidateOptions = {},
  ): Promise<InvalidateResult> {
    const values = [scope, key, options.inProgress === true];
    const { rows } = await this.run(this.sql.invalidate, values, options.timeoutMs);
    const { deleted, found } = rows[0] as { deleted: string | null; found: string | null };
    if (deleted) return { outcome: 'deleted', state: deleted as 'in_progress' | 'completed' };
    // Found but not deleted: it is in progress, or became so since the statement began.
    return found ? { outcome: 'refused', state: 'in_progress' } : { outcome: 'missing' };
  }

  /**
   * Checks that the table exists with the columns the statements use; throws an error that
   * says how to create it otherwise. Run at start-up when the module does not migrate.
   */
  async checkTable(call: StoreCallOptions = {}): Promise<void> {
    try {
      await this.run(this.sql.check, [], call.timeoutMs);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code !== '42P01' && code !== '42703' && code !== '3F000') throw error;
      const table = this.tableName ?? DEFAULT_TABLE_NAME;
      // Both migrations: the second one's column is optional, but a table created now should
      // have it (without it, waiting duplicates poll instead of being notified).
      const migrations =
        table === DEFAULT_TABLE_NAME
          ? 'CreateIdempotencyRecords1764403200000 and AddIdempotencyWaiters1795910400000'
          : `createIdempotencyRecordsMigration('${table}') and createIdempotencyWaitersMigration('${table}')`;
      throw new Error(
        `IdempotencyModule: table "${table}" ${code === '42703' ? 'lacks columns the module needs' : 'does not exist'} (${(error as Error).message}). Run the migrations ${migrations} (add both to your DataSource's migrations), or set runMigrations: true to create it on start-up.`,
        { cause: error },
      );
    }
  }

  /**
   * Runs one statement, or its row in a batch when a batcher is given; a statement that
   * outlives its bound becomes the store's timeout.
   */
  private async run(
    statement: { name: string; text: string },
    values: unknown[],
    timeoutMs: number | undefined,
    batcher?: StatementBatcher,
  ): Promise<SqlResult> {
    try {
      return batcher
        ? await batcher.query(values, timeoutMs)
        : await this.executor.query({ ...statement, values, timeoutMs });
    } catch (error) {
      if (error instanceof StatementTimeoutError) {
        throw new IdempotencyStoreTimeoutError(error.timeoutMs, undefined, { cause: error });
      }
      throw error;
    }
  }

  /**
   * Waits for the record's notification, at most the poll bound or `timeoutMs`. Waiters of
   * one record share a watch (SettledWatches): it subscribes, then marks the record as
   * waited for (one statement), which is what makes completing or releasing it notify. Row
   * locking orders the mark and the completion: either the completion sees the mark and
   * notifies a listener that is already subscribed, or the mark finds the record settled
   * and the caller claims again at once. Without a listener, or on a table without the
   * column, it polls instead.
   */
  override async awaitSettled(
    record: InFlightRecord,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<void> {
    if (!this.listener || !(await this.hasWaitersColumn(WAIT_POLL_MS))) {
      return super.awaitSettled(record, timeoutMs, signal);
    }
    this.watches ??= new SettledWatches(this.listener, this.notificationChannel, (inFlight) =>
      this.markWaited(inFlight),
    );
    // Everything, subscribing included, ends by the bound: a listening connection that
    // stalls must not hold a waiter past it.
    const timer = abortableTimer(Math.min(timeoutMs, WAIT_POLL_MS), signal);
    try {
      await this.watches.wait(record, settledPayload(record.scope, record.key), timer.done);
    } catch {
      // Cannot listen or mark right now (the listener logs why): poll meanwhile.
      await Promise.race([super.awaitSettled(record, timeoutMs, signal), timer.done]);
    } finally {
      timer.cancel();
    }
  }

  /** One statement, bounded like the wait it serves (shared: by the poll bound). */
  private async markWaited({ scope, key, fingerprint }: InFlightRecord): Promise<boolean> {
    const values = [scope, key, fingerprint];
    const { rows } = await this.run(this.sql.markWaited, values, WAIT_POLL_MS);
    return rows.length > 0;
  }

  /** Whether a claim clears has_waiters on a takeover: the column is known to be there. */
  private resetsWaiters(): boolean {
    return this.waitersColumn.present === true;
  }

  /**
   * Probed once per store (one catalog query): a table created before the has_waiters
   * column existed keeps working, with plain statements and polling waits. The same query
   * finds the table's schema and name, for its notification channel.
   */
  private async hasWaitersColumn(timeoutMs?: number): Promise<boolean> {
    const column = this.waitersColumn;
    if (column.present !== undefined) return column.present;
    column.probing ??= column.store.run(this.sql.probeTable, [this.sql.table], timeoutMs).then(
      ({ rows }) => {
        const row = rows[0] as { present?: boolean; schema?: string; name?: string } | undefined;
        if (row?.schema && row.name) {
          column.channel = settledChannel(canonicalTableSpelling(row.schema, row.name));
        }
        return (column.present = row?.present === true);
      },
      (error: unknown) => {
        column.probing = undefined;
        throw error;
      },
    );
    return column.probing;
  }

  /** The statements that notify, on the channel the probe found (hasWaitersColumn). */
  private notifyingSql(): ReturnType<typeof notifyingStatements> {
    const channel = this.notificationChannel;
    if (this.notifying?.channel !== channel) {
      this.notifying = notifyingStatements(this.tableName, this.asynchronous, channel);
      if (this.batchers && this.batchLimits && this.batchers.channel !== channel) {
        this.batchers.completeNotifying = completeNotifyingBatcher(
          this.executor,
          this.sql.table,
          this.notifying.completeNotifying,
          channel,
          this.batchLimits,
          this.asynchronous,
        );
        this.batchers.channel = channel;
      }
    }
    return this.notifying;
  }
}

/** A row of the inspect statement, as IdempotencyStore.inspect() returns it. */
function recordInfo(scope: string, key: string, row: any): IdempotencyRecordInfo {
  const completed = row.state === 'completed';
  return {
    scope,
    key,
    state: row.state,
    fingerprint: row.fingerprint,
    fencingToken: row.token,
    createdAt: row.created_at,
    ...(row.completed_at ? { completedAt: row.completed_at } : {}),
    expiresAt: row.expires_at,
    ...(completed ? {} : { leaseExpiresAt: row.locked_until }),
    leasePassed: row.lease_passed === true,
    expired: row.expired === true,
    ...(completed
      ? {
          response: {
            status: Number(row.response_status),
            headers: row.response_headers ?? {},
            bodyBytes: Number(row.body_bytes ?? 0),
          },
        }
      : {}),
  };
}

/** What a settled record's notification carries: a digest of its scope and key. */
export function settledPayload(scope: string, key: string): string {
  // Keys are printable ASCII, so the last newline separates scope from key unambiguously.
  return createHash('sha256').update(`${scope}\n${key}`, 'utf8').digest('hex');
}

/** Resolves after `ms`, or at once when `signal` aborts; cancel() clears it. */
function abortableTimer(ms: number, signal: AbortSignal) {
  let cancel = () => undefined as void;
  const done = new Promise<void>((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', finish);
      resolve();
    };
    const timer = setTimeout(finish, ms);
    signal.addEventListener('abort', finish, { once: true });
    cancel = finish;
    if (signal.aborted) finish();
  });
  return { done, cancel };
}

/** Uses the pg Pool of a TypeORM Postgres DataSource directly: named prepared statements. */
export function dataSourceExecutor(dataSource: DataSource): SqlExecutor {
  if (dataSource.options.type !== 'postgres') {
    throw new Error(
      `IdempotencyModule needs a Postgres DataSource, got "${dataSource.options.type}".`,
    );
  }
  return poolExecutor(() => guardedPoolOf<PgPool>(dataSource));
}

const tokenPool = Buffer.alloc(8 * 256);
let tokenOffset = tokenPool.length;

/**
 * A fresh random 63-bit token per claim. Tokens are only compared for equality, so random
 * serves as well as a sequence, and a replay stays a read-only statement: a sequence's
 * nextval() would write WAL on every claim attempt, replays and 423s included.
 */
function newFencingToken(): string {
  // One call into the CSPRNG per 256 tokens: a call per claim showed up in profiles.
  if (tokenOffset === tokenPool.length) {
    randomFillSync(tokenPool);
    tokenOffset = 0;
  }
  const token = tokenPool.readBigUInt64BE(tokenOffset) >> 1n;
  tokenOffset += 8;
  return token.toString();
}

const statementCache = new Map<string, ReturnType<typeof buildStatements>>();

function statementsFor(
  tableName: string | undefined,
  asynchronous: boolean,
): ReturnType<typeof buildStatements> {
  // undefined (the default table) and '' (an invalid name, refused when built) stay apart.
  const cacheKey = JSON.stringify([asynchronous, tableName ?? null]);
  let statements = statementCache.get(cacheKey);
  if (!statements) {
    statements = buildStatements(tableName, asynchronous);
    statementCache.set(cacheKey, statements);
  }
  return statements;
}

function buildStatements(tableName: string | undefined, asynchronous: boolean) {
  const { table, raw } = idempotencyTableNames(tableName);
  const prefix = statementPrefix(raw);
  // The claim and completions in asynchronous form: other names, since other texts.
  const relaxed = asynchronous ? '_async' : '';
  const { complete, release } = settleTexts(table, asynchronous);
  // The channel of the name as configured, until the store has looked the table up.
  const channel = settledChannel(raw);
  const claim = (resetWaiters: string) => `
        WITH inserted AS (
          INSERT INTO ${table} AS r
            (scope, idempotency_key, fingerprint, state, fencing_token, locked_until, expires_at)
          VALUES ($1, $2, $3, 'in_progress', $6::bigint,
                  now() + ${ms('$4')}, now() + ${ms('$5')})
          ON CONFLICT (scope, idempotency_key) DO NOTHING
          RETURNING fencing_token
        ), taken AS (
          UPDATE ${table} AS r
             SET fingerprint = $3, state = 'in_progress',
                 fencing_token = $6::bigint,
                 locked_until = now() + ${ms('$4')}, expires_at = now() + ${ms('$5')},
                 created_at = now(), completed_at = NULL,${resetWaiters}
                 response_status = NULL, response_headers = NULL, response_body = NULL
           WHERE r.scope = $1 AND r.idempotency_key = $2
             AND NOT EXISTS (SELECT 1 FROM inserted)
             AND ((r.expires_at <= now() AND (r.state = 'completed' OR r.locked_until <= now()))
                  OR (r.state = 'in_progress' AND r.locked_until <= now() AND r.fingerprint = $3))
          -- The subquery reads the statement's snapshot: the state before this takeover.
          RETURNING fencing_token, (SELECT p.state FROM ${table} AS p
                                     WHERE p.scope = $1 AND p.idempotency_key = $2) AS previous_state
        )
        SELECT 'claimed' AS outcome, fencing_token::text AS token, NULL AS state,
               NULL::boolean AS same_request, NULL::boolean AS claimable, NULL::float8 AS lease_left_ms,
               NULL::smallint AS response_status, NULL::jsonb AS response_headers, NULL::bytea AS response_body
          FROM inserted
        UNION ALL
        SELECT 'claimed', fencing_token::text, previous_state, NULL, NULL, NULL, NULL, NULL, NULL FROM taken
        UNION ALL
        SELECT 'existing', NULL, r.state, r.fingerprint = $3,
               (r.expires_at <= now() AND (r.state = 'completed' OR r.locked_until <= now()))
                 OR (r.state = 'in_progress' AND r.locked_until <= now() AND r.fingerprint = $3),
               -- clock_timestamp(): now() is when this statement began, which can be before
               -- the holder's claim committed, and would overstate the lease left.
               GREATEST(0, EXTRACT(EPOCH FROM (r.locked_until - clock_timestamp())) * 1000),
               r.response_status, r.response_headers, r.response_body
          FROM ${table} AS r
         WHERE r.scope = $1 AND r.idempotency_key = $2
           AND NOT EXISTS (SELECT 1 FROM inserted) AND NOT EXISTS (SELECT 1 FROM taken)${
             // A branch of no rows that every run evaluates, whichever of the others writes.
             asynchronous
               ? `
        UNION ALL
        SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE NOT (${ASYNCHRONOUS_COMMIT})`
               : ''
           }`;
  return {
    table,
    channel,
    /*
     * One atomic statement. `inserted` claims a new key; `taken` takes over a record whose
     * retention expired (unless its lease is still live: a request still running is never
     * taken over) or whose lease passed (a crashed process). Otherwise the existing row
     * comes back for the caller to replay, answer 423 or answer 422. An UPDATE re-checks its
     * WHERE on the newest row version, so two takeovers cannot both win.
     */
    claim: { name: `${prefix}_claim${relaxed}`, text: claim('') },
    /**
     * claim, on a table with has_waiters: a takeover also clears the mark, which belonged to
     * the previous owner's waiters. Left set, the new owner's completion or release would
     * notify though nobody waits for it (and a mark made for this owner sets it again).
     */
    claimResettingWaiters: {
      name: `${prefix}_claim_reset_waiters${relaxed}`,
      text: claim(' has_waiters = false,'),
    },
    complete: { name: `${prefix}_complete${relaxed}`, text: complete },
    /*
     * Oldest expired records first, in one bounded batch. SKIP LOCKED lets several instances
     * sweep at once without waiting on each other or on a claim that is taking a row over.
     */
    purge: {
      name: `${prefix}_purge`,
      text: `
        DELETE FROM ${table}
         WHERE ctid IN (
           SELECT ctid FROM ${table}
            WHERE expires_at <= now()
              AND (state = 'completed' OR locked_until <= now())
            ORDER BY expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED)`,
    },
    /* Every column the statements use, so a table from another version fails here too. */
    check: {
      name: `${prefix}_check`,
      text: `
        SELECT scope, idempotency_key, fingerprint, state, fencing_token, locked_until,
               response_status, response_headers, response_body, created_at, completed_at,
               expires_at
          FROM ${table} LIMIT 0`,
    },
    renew: {
      name: `${prefix}_renew`,
      text: `
        UPDATE ${table} SET locked_until = now() + ${ms('$4')}
         WHERE scope = $1 AND idempotency_key = $2 AND fencing_token = $3::bigint
           AND state = 'in_progress'`,
    },
    release: { name: `${prefix}_release`, text: release },
    /*
     * Marks an in-flight record as waited for; a row back means a completion or release
     * will notify. Only the first waiter writes: later ones find the mark (a read), so a
     * storm of duplicates costs one row update, not one per duplicate. No row back (the
     * record settled, was taken over or changed request) sends the caller to claim again;
     * so does a mark that raced another waiter's, which is rare and harmless.
     */
    markWaited: {
      name: `${prefix}_mark_waited`,
      text: `
        WITH marked AS (
          UPDATE ${table} SET has_waiters = true
           WHERE scope = $1 AND idempotency_key = $2 AND fingerprint = $3
             AND state = 'in_progress' AND locked_until > now() AND NOT has_waiters
          RETURNING 1
        )
        SELECT 1 FROM marked
        UNION ALL
        SELECT 1 FROM ${table}
         WHERE scope = $1 AND idempotency_key = $2 AND fingerprint = $3
           AND state = 'in_progress' AND locked_until > now() AND has_waiters
           AND NOT EXISTS (SELECT 1 FROM marked)`,
    },
    /* Operators' look-up (IdempotencyKeys.lookup): expiry and lease judged by the server's clock. */
    inspect: {
      name: `${prefix}_inspect`,
      text: `
        SELECT state, encode(fingerprint, 'hex') AS fingerprint, fencing_token::text AS token,
               created_at, completed_at, expires_at, locked_until,
               state = 'in_progress' AND locked_until <= now() AS lease_passed,
               expires_at <= now() AND (state = 'completed' OR locked_until <= now()) AS expired,
               response_status, response_headers, octet_length(response_body) AS body_bytes
          FROM ${table}
         WHERE scope = $1 AND idempotency_key = $2`,
    },
    /*
     * Operators' delete: a completed record, or ($3) one in progress. The DELETE re-checks
     * the state on the newest row version, so a record claimed anew meanwhile stays.
     */
    invalidate: {
      name: `${prefix}_invalidate`,
      text: `
        WITH found AS (
          SELECT state FROM ${table} WHERE scope = $1 AND idempotency_key = $2
        ), gone AS (
          DELETE FROM ${table}
           WHERE scope = $1 AND idempotency_key = $2 AND (state = 'completed' OR $3::boolean)
          RETURNING state
        )
        SELECT (SELECT state FROM gone) AS deleted, (SELECT state FROM found) AS found`,
    },
    /* Whether the table has has_waiters, and its schema and name as the catalog has them. */
    probeTable: {
      name: `${prefix}_probe_table`,
      text: `
        SELECT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = c.oid AND attname = 'has_waiters'
                          AND NOT attisdropped) AS present,
               n.nspname AS schema, c.relname AS name
          FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE c.oid = to_regclass($1)`,
    },
  };
}

/** Prepared statement names must be unique per text on a connection. */
function statementPrefix(raw: string): string {
  return `idem_${createHash('sha1').update(raw).digest('hex').slice(0, 8)}`;
}

const ms = (param: string) => `${param}::float8 * interval '1 millisecond'`;

/** Completing and releasing a record: the single-row statements, with or without a notification. */
function settleTexts(table: string, asynchronous: boolean) {
  const andRelaxed = asynchronous ? `\n           AND ${ASYNCHRONOUS_COMMIT}` : '';
  const complete = `
        UPDATE ${table}
           SET state = 'completed', response_status = $4, response_headers = $5::jsonb,
               response_body = $6, completed_at = now(), locked_until = NULL,
               expires_at = now() + ${ms('$7')}
         WHERE scope = $1 AND idempotency_key = $2 AND fencing_token = $3::bigint
           AND state = 'in_progress'${andRelaxed}`;
  const release = `
        DELETE FROM ${table}
         WHERE scope = $1 AND idempotency_key = $2 AND fencing_token = $3::bigint
           AND state = 'in_progress'`;
  return { complete, release };
}

const notifyingCache = new Map<string, ReturnType<typeof buildNotifyingStatements>>();

function notifyingStatements(
  tableName: string | undefined,
  asynchronous: boolean,
  channel: string,
) {
  const cacheKey = JSON.stringify([asynchronous, tableName ?? null, channel]);
  let statements = notifyingCache.get(cacheKey);
  if (!statements) {
    statements = buildNotifyingStatements(tableName, asynchronous, channel);
    notifyingCache.set(cacheKey, statements);
  }
  return statements;
}

/**
 * Completing and releasing a record, with a notification on `channel` in the same statement
 * when someone waits for it. Notifications of settled records: one channel per table, the
 * record in the payload (as settledPayload computes it). Only records marked as waited for
 * notify: NOTIFY takes a global lock at commit, which no completion should pay for when
 * nobody waits.
 */
function buildNotifyingStatements(
  tableName: string | undefined,
  asynchronous: boolean,
  channel: string,
) {
  const { table, raw } = idempotencyTableNames(tableName);
  // The channel is in the text: a name per channel (in practice, one per table and process).
  const prefix = `${statementPrefix(raw)}${channel.slice(5, 13)}`;
  const relaxed = asynchronous ? '_async' : '';
  const { complete, release } = settleTexts(table, asynchronous);
  const notifyIfWaited = (rows: string) => `
        SELECT CASE WHEN ${rows}.has_waiters THEN pg_notify('${channel}',
                 encode(sha256(convert_to($1::text || E'\\n' || $2::text, 'UTF8')), 'hex')) END
          FROM ${rows}`;
  return {
    channel,
    completeNotifying: {
      name: `${prefix}_complete_notifying${relaxed}`,
      text: `WITH done AS (${complete}
         RETURNING has_waiters)${notifyIfWaited('done')}`,
    },
    releaseNotifying: {
      name: `${prefix}_release_notifying`,
      text: `WITH gone AS (${release}
         RETURNING has_waiters)${notifyIfWaited('gone')}`,
    },
  };
}

/** pg's default pool size when none is set. */
const PG_DEFAULT_POOL_SIZE = 10;

function poolMax(pool: object): number {
  return (pool as { options?: { max?: number } }).options?.max ?? PG_DEFAULT_POOL_SIZE;
}

/** The pool size a TypeORM Postgres DataSource gives its pg Pool (poolSize, else extra.max). */
function dataSourcePoolSize(dataSource: DataSource): number {
  const options = dataSource.options as { poolSize?: number; extra?: { max?: number } };
  return options.poolSize ?? options.extra?.max ?? PG_DEFAULT_POOL_SIZE;
}
