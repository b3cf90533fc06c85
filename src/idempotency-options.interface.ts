// The options a user passes to IdempotencyModule.forRoot() and @Idempotent().
import type { ExecutionContext, LoggerService } from '@nestjs/common';
import type { DataSource, DataSourceOptions } from 'typeorm';
import type { IdempotencyStore } from './idempotency-store.js';
import type { IdempotencyDurability } from './postgres-idempotency.store.js';

/**
 * Resolves who owns a key. Two scopes never see each other's records.
 * Return the same string for every request of one principal (a user id, a partner id).
 */
export type IdempotencyScopeResolver = (
  request: any,
  context: ExecutionContext,
) => string | Promise<string>;

/**
 * Reads the idempotency key of one call: from a GraphQL argument, a message field, the
 * transport's own message id... Return `undefined` when the call carries none. The value is
 * checked like the header: 1 to 255 printable ASCII characters.
 */
export type IdempotencyKeyResolver = (context: ExecutionContext) => string | undefined;

/** Status of a replayed response: `409` (the published behaviour) or the original status. */
export type ReplayStatus = 409 | 'original';

/** Options that `@Idempotent()` can override for one route or one controller. */
export interface IdempotentRouteOptions {
  /**
   * Reject requests without a key with `400` instead of running the handler untracked.
   * @default false
   * @example @Idempotent({ required: true })
   */
  required?: boolean;
  /**
   * How long a completed response is kept and replayed, in milliseconds. Expiry is enforced
   * on read: a key older than this runs again.
   * @default 172_800_000 (48 hours)
   * @example @Idempotent({ retentionMs: 24 * 60 * 60 * 1000 })
   */
  retentionMs?: number;
  /**
   * How long an in-flight record stays locked, in milliseconds. It must outlive the slowest
   * handler run: once it passes, the process is presumed dead and the next request with the
   * key takes the record over.
   * @default 60_000
   * @example @Idempotent({ leaseMs: 5 * 60_000 }) // a slow report export
   */
  leaseMs?: number;
  /**
   * Extend the lease every `leaseMs / 3` while the handler runs, so that only a process that
   * died loses its key: `leaseMs` then bounds how long a crash blocks the key, not how long a
   * handler may take. A handler that hangs holds its key as long as its process lives.
   * @default false
   * @example @Idempotent({ leaseMs: 15_000, renewLease: true }) // slow, variable handler
   */
  renewLease?: boolean;
  /**
   * `Retry-After` sent with `423 Locked` and `503`, in whole seconds (Retry-After has no
   * fractions: `1.5` throws at start-up). A 423 never advises waiting longer than the lease
   * has left.
   * @default 1
   * @example @Idempotent({ retryAfterSeconds: 2 })
   */
  retryAfterSeconds?: number;
  /**
   * Status of a replay: `409 Conflict` as published, or `'original'` to repeat the first
   * response's status. Either way the replay carries `Idempotent-Replayed: true` and
   * `x-idempotency-original-status`.
   * @default 409
   * @example @Idempotent({ replayStatus: 'original' })
   */
  replayStatus?: ReplayStatus;
  /**
   * Who owns a key. By default the authenticated principal (`request.user.id`, else
   * `request.user.sub`, as a Passport-style guard sets it); without one, every client shares
   * a single scope. It must return a string (`''` is the one shared scope): if it throws or
   * returns anything else, the request is refused with a 500 problem
   * (`idempotency_scope_unresolved`), the handler does not run, and the log says why.
   * @default (req) => req.user?.id ?? req.user?.sub ?? ''
   * @example @Idempotent({ scope: (req) => req.partner.id })
   */
  scope?: IdempotencyScopeResolver;
  /**
   * HTTP routes: response headers to store and replay besides the default ones, which are
   * those that describe the stored body or the resource the request created:
   * `Content-Type`, `Content-Encoding`, `Content-Language`, `Content-Disposition`, `ETag`,
   * `Last-Modified`, `Cache-Control`, `Vary`, `Location` and `Content-Location`. Anything
   * else is about one
   * exchange and is not replayed (a replay gets the headers your middleware sets on it, such
   * as CORS or a request id). `Set-Cookie`, framing headers (`Content-Length`,
   * `Transfer-Encoding`, `Connection`...) and `Date` are never replayed: naming them throws.
   * A route's list replaces the module's; the defaults always stay.
   * @default [] (the defaults only)
   * @example @Idempotent({ replayHeaders: ['x-booking-reference', 'link'] })
   */
  replayHeaders?: string[];
  /**
   * HTTP routes (GraphQL and message handlers always free the key on an error): also store
   * the error responses the handler itself produced (it threw, or answered 4xx or 5xx; a
   * pipe's validation error counts, as pipes run inside), so that a retry gets the same
   * error instead of running the handler again, as Stripe does. `true` stores every such
   * error; a function chooses by status. A stored error is replayed with its own status (a
   * 409 only ever carries a success), marked `Idempotent-Replayed: true`. Errors the handler
   * did not produce (a timeout interceptor's 408) and this module's own (422, 423, 503...)
   * are never stored. With `transactional`, the handler's writes are rolled back and the
   * error is stored alone.
   * @default false (errors release the key: a retry runs the handler again)
   * @example @Idempotent({ storeErrors: (status) => status >= 400 && status < 500 && status !== 429 })
   */
  storeErrors?: boolean | ((status: number) => boolean);
  /**
   * Run the handler inside a Postgres transaction that also stores the response, so its
   * database writes and the idempotency record commit together or not at all. The handler
   * writes through `IdempotencyTransaction.manager`. Calls to other systems (email, payment
   * APIs) are not covered: pass the idempotency key on to them.
   * @default false
   * @example @Idempotent({ transactional: true })
   */
  transactional?: boolean;
  /**
   * Time bound, in milliseconds, of every store step a keyed request waits for: the claim
   * (all its attempts), opening the transaction of a `transactional` route, and the
   * settlement after the handler (storing the response; on `transactional` routes storing
   * and committing together). Waiting for a pool connection counts. A claim or transaction
   * that hits it answers `503` with `Retry-After`, and the handler does not run; a response
   * that cannot be stored in time is retried in the background (or, `transactional`, rolled
   * back with a `503`). A statement that outlives it is cancelled on the server, and its
   * connection is closed if the server does not answer. Keep it well under `leaseMs`.
   * @default 5_000
   * @example @Idempotent({ statementTimeoutMs: 2_000 })
   */
  statementTimeoutMs?: number;
  /**
   * Where the key comes from. A string names the header that carries it: the request header
   * (HTTP, and GraphQL over HTTP) or the message header (transports that have headers:
   * RabbitMQ, NATS, Kafka, MQTT 5). A function reads it from the call itself: a mutation
   * argument, a message field, the transport's message id. See the README, per context.
   * @default the module's `headerName`
   * @example @Idempotent({ key: (ctx) => ctx.switchToRpc().getData().eventId })
   */
  key?: string | IdempotencyKeyResolver;
  /**
   * Handlers with the same namespace share their keys. By default each context keeps its
   * own: HTTP routes have none (their records keep the bare scope), each GraphQL mutation
   * field has `graphql:<Type>.<field>` and each message handler `rpc:<Class>.<method>`, so
   * two consumers of one event each process it once. Give several handlers one namespace to
   * map them together (`''` joins the HTTP routes).
   * @default per context, as above
   * @example @Idempotent({ namespace: 'payments' })
   */
  namespace?: string;
  /**
   * Message handlers on RabbitMQ with `noAck: false`: the module acknowledges the message
   * once its outcome is final (after the record is stored, and committed with
   * `transactional`; or when a repeat is skipped) and rejects it with requeue when the
   * handler fails or the key is still in flight elsewhere (after `retryAfterSeconds`), so the
   * broker delivers it again. The handler must then not acknowledge it itself.
   * @default false
   * @example @Idempotent({ transactional: true, acknowledge: true })
   */
  acknowledge?: boolean;
  /**
   * How long a duplicate of a request that is still running waits for it, in milliseconds,
   * instead of answering `423 Locked` at once. It gets the replay (`409`, same bytes) the
   * moment the first request completes, on whichever instance that happens (Postgres
   * LISTEN/NOTIFY wakes it); if the first request fails and frees the key, one waiter runs
   * the handler; if the first is still running when the wait ends, `423` with `Retry-After`.
   * A waiter holds its client's connection, never a database connection. `0` answers `423`
   * at once, as published. Turn it on for clients that do not retry a `423` (the published
   * Python example does not: see the README).
   * @default 0
   * @example @Idempotent({ waitInFlightMs: 10_000 })
   */
  waitInFlightMs?: number;
}

/** Options of `IdempotencyModule.forRoot()` / `forRootAsync()`. */
export interface IdempotencyModuleOptions extends IdempotentRouteOptions {
  /**
   * An existing TypeORM DataSource for Postgres (for example the one `@nestjs/typeorm`
   * provides, injected through `forRootAsync`). The module uses it and never closes it.
   * Give either this or `connection`.
   * @example IdempotencyModule.forRootAsync({ inject: [DataSource], useFactory: (dataSource) => ({ dataSource }) })
   */
  dataSource?: DataSource;
  /**
   * A Postgres URL or TypeORM Postgres options; the module then opens its own DataSource and
   * closes it on shutdown. Give either this or `dataSource`.
   * @example IdempotencyModule.forRoot({ connection: process.env.DATABASE_URL })
   */
  connection?: string | (DataSourceOptions & { type: 'postgres' });
  /**
   * Another record store instead of Postgres: an `IdempotencyStore` instance (for example
   * the in-memory store of `nest-idempotency-pg/testing` in unit tests). Give exactly one of
   * `dataSource`, `connection` and `store`. `transactional: true` needs Postgres.
   * @example IdempotencyModule.forRoot({ store: new InMemoryIdempotencyStore() })
   */
  store?: IdempotencyStore;
  /**
   * Request header that carries the key, matched case-insensitively (a string `key` does the
   * same, and can also be set per route).
   * @default 'x-idempotency-key'
   */
  headerName?: string;
  /**
   * Table that holds the records, optionally schema-qualified (`billing.idempotency_records`).
   * It must match the table the migration created.
   * @default 'idempotency_records'
   */
  tableName?: string;
  /**
   * Create the table on start-up (idempotent, safe with several instances starting at once;
   * once the table, its index and its columns are there, a start runs no DDL and takes no
   * lock on it).
   * Production setups usually add the migration class to their own migrations list instead;
   * without this option the module checks at start-up that the table exists, and stops the
   * application with the fix in the message if it does not.
   * @default false
   * @example IdempotencyModule.forRoot({ connection: url, runMigrations: true })
   */
  runMigrations?: boolean;
  /**
   * The background sweep that deletes expired records. Expiry is enforced on read, so the
   * sweep only frees space. Every `intervalMs` it deletes in batches of `batchSize` while
   * they come back full, for `timeBoxMs` at most, so it can delete up to (its rows/s) x
   * `timeBoxMs` / `intervalMs` on average; that must exceed the peak rate of new keys (see
   * the README's sizing rule). Turn it off to run `purgeExpiredIdempotencyRecords()` from a
   * cron job instead.
   * @default { enabled: true, intervalMs: 60_000, batchSize: 5000, timeBoxMs: 20_000 }
   * @example IdempotencyModule.forRoot({ connection: url, purge: { timeBoxMs: 45_000 } })
   */
  purge?: IdempotencyPurgeOptions;
  /**
   * How many duplicates may wait (`waitInFlightMs`) at once in this process; beyond it, a
   * duplicate answers `423` at once. Each waiter holds an open client connection and a
   * little memory, nothing in Postgres.
   * @default 1000
   * @example IdempotencyModule.forRoot({ connection: url, waitInFlightMs: 5_000, maxInFlightWaiters: 200 })
   */
  maxInFlightWaiters?: number;
  /**
   * Send concurrent claims and completions to Postgres as one multi-row statement per batch
   * (see "Batched under load" in the README). No timer: a request that finds its kind of
   * statement below half the pool in flight sends its own at once, so a lightly loaded
   * server works as unbatched. `false` sends one statement per call. No effect with `store`.
   * @default true
   */
  batching?: boolean;
  /**
   * `'asynchronous'`: the module's claims and completions commit with Postgres's
   * `synchronous_commit = off`, set by each statement for its own transaction only (the
   * application's transactions and connections keep theirs), so they no longer wait for the
   * WAL flush. The price: if the database server crashes (not the app), the claims and
   * completions of its last moments are lost (up to 3 x `wal_writer_delay`, 600 ms by
   * default), and a retry of such a request runs its handler again. A `transactional` route's
   * completion commits with its handler's writes and stays synchronous. No effect with `store`.
   * @default 'synchronous'
   * @example IdempotencyModule.forRoot({ connection: url, durability: 'asynchronous' })
   */
  durability?: IdempotencyDurability;
  /**
   * Where the module logs: one `debug` line per outcome (claimed, replayed, 423, 422...,
   * keys as `keyHash`, never raw), `warn` and `error` where an operator should look (store
   * unavailable, lease lost, a response given up). Nest's `Logger` with the context
   * `'Idempotency'` by default, so the application's `logLevels` apply; an application's own
   * `LoggerService` (it receives every line, with the context as last argument); or `false`
   * for none.
   * @default new Logger('Idempotency')
   * @example IdempotencyModule.forRoot({ connection: url, logger: false })
   */
  logger?: LoggerService | false;
}

/** Options of the background purge of expired records. */
export interface IdempotencyPurgeOptions {
  /** Run the sweep in this process. @default true */
  enabled?: boolean;
  /** Time between the starts of two sweeps, in milliseconds. @default 60_000 */
  intervalMs?: number;
  /**
   * Rows deleted per statement; one batch must finish well within `statementTimeoutMs`.
   * @default 5000
   */
  batchSize?: number;
  /**
   * How long one sweep keeps deleting, in milliseconds: it goes on while batches come back
   * full and starts no batch after this (it yields between batches).
   * @default 20_000
   */
  timeBoxMs?: number;
  /** Batches per sweep at most, on top of the time box. @default unlimited */
  maxBatches?: number;
}
