// Module options merged with a route's overrides and the defaults, once per route; and the
// checks that reject a wrong option where it is written (the decorator) or at start-up (the
// module), rather than on the first request or never.
import {
  DEFAULT_HEADER_NAME,
  DEFAULT_LEASE_MS,
  DEFAULT_RETENTION_MS,
  DEFAULT_RETRY_AFTER_SECONDS,
  DEFAULT_STATEMENT_TIMEOUT_MS,
  DEFAULT_WAIT_IN_FLIGHT_MS,
} from './idempotency.constants.js';
import type {
  IdempotencyKeyResolver,
  IdempotencyModuleOptions,
  IdempotencyPurgeOptions,
  IdempotencyScopeResolver,
  IdempotentRouteOptions,
  ReplayStatus,
} from './idempotency-options.interface.js';
import { replayHeadersFor, replayHeadersProblem } from './idempotency-replay-headers.js';
import { unstorableReason } from './idempotency-scope.js';

export interface ResolvedOptions {
  headerName: string;
  required: boolean;
  retentionMs: number;
  leaseMs: number;
  retryAfterSeconds: number;
  replayStatus: ReplayStatus;
  scope: IdempotencyScopeResolver;
  transactional: boolean;
  renewLease: boolean;
  statementTimeoutMs: number;
  /** Lower-cased names of the response headers stored for replay. */
  replayHeaders: readonly string[];
  /** Whether an error response the handler produced, with this status, is stored. */
  storeErrors: (status: number) => boolean;
  /** Reads the key from the call instead of the header `headerName`. */
  keyResolver?: IdempotencyKeyResolver;
  /** The handlers' shared namespace; `undefined` means each context's own. */
  namespace?: string;
  acknowledge: boolean;
  waitInFlightMs: number;
}

// The option names as values, to reject unknown ones at run time. Typed against the
// interfaces: adding an option there without adding it here does not compile.
const ROUTE_OPTIONS: Record<keyof IdempotentRouteOptions, true> = {
  required: true,
  retentionMs: true,
  leaseMs: true,
  renewLease: true,
  retryAfterSeconds: true,
  replayStatus: true,
  replayHeaders: true,
  storeErrors: true,
  scope: true,
  transactional: true,
  statementTimeoutMs: true,
  key: true,
  namespace: true,
  acknowledge: true,
  waitInFlightMs: true,
};
const MODULE_ONLY_OPTIONS: Record<
  Exclude<keyof IdempotencyModuleOptions, keyof IdempotentRouteOptions>,
  true
> = {
  dataSource: true,
  connection: true,
  store: true,
  headerName: true,
  tableName: true,
  runMigrations: true,
  purge: true,
  maxInFlightWaiters: true,
  batching: true,
  durability: true,
  logger: true,
};
const PURGE_OPTIONS: Record<keyof IdempotencyPurgeOptions, true> = {
  enabled: true,
  intervalMs: true,
  batchSize: true,
  timeBoxMs: true,
  maxBatches: true,
};

/** The authenticated principal (Passport-style `request.user`), else one shared scope. */
export const defaultScope: IdempotencyScopeResolver = (request) => {
  const user = request.user;
  const id = user?.id ?? user?.sub;
  return id === undefined || id === null ? '' : `user:${String(id)}`;
};

export function resolveOptions(
  module: IdempotencyModuleOptions,
  route: IdempotentRouteOptions,
): ResolvedOptions {
  const pick = <K extends keyof IdempotentRouteOptions>(name: K) => route[name] ?? module[name];
  const storeErrors = pick('storeErrors') ?? false;
  const key = pick('key');
  return {
    headerName: (typeof key === 'string'
      ? key
      : (module.headerName ?? DEFAULT_HEADER_NAME)
    ).toLowerCase(),
    required: pick('required') ?? false,
    retentionMs: pick('retentionMs') ?? DEFAULT_RETENTION_MS,
    leaseMs: pick('leaseMs') ?? DEFAULT_LEASE_MS,
    retryAfterSeconds: pick('retryAfterSeconds') ?? DEFAULT_RETRY_AFTER_SECONDS,
    replayStatus: pick('replayStatus') ?? 409,
    scope: pick('scope') ?? defaultScope,
    transactional: pick('transactional') ?? false,
    renewLease: pick('renewLease') ?? false,
    statementTimeoutMs: pick('statementTimeoutMs') ?? DEFAULT_STATEMENT_TIMEOUT_MS,
    replayHeaders: replayHeadersFor(pick('replayHeaders')),
    storeErrors: typeof storeErrors === 'function' ? storeErrors : () => storeErrors,
    keyResolver: typeof key === 'function' ? key : undefined,
    namespace: pick('namespace'),
    acknowledge: pick('acknowledge') ?? false,
    waitInFlightMs: pick('waitInFlightMs') ?? DEFAULT_WAIT_IN_FLIGHT_MS,
  };
}

/**
 * Throws, with the fix, for options that cannot work: unknown names (a typo would otherwise
 * be ignored silently) and invalid values. `where` is what the message names: the module's
 * options at start-up, or `@Idempotent()` where the decorator is applied.
 */
export function assertValidOptions(
  options: IdempotencyModuleOptions,
  where: 'module' | 'route' = 'module',
): void {
  if (options === null || typeof options !== 'object') {
    throw new Error(`${label(where)} takes an options object, got ${describeValue(options)}.`);
  }
  const valid =
    where === 'route'
      ? Object.keys(ROUTE_OPTIONS)
      : [...Object.keys(ROUTE_OPTIONS), ...Object.keys(MODULE_ONLY_OPTIONS)];
  for (const name of Object.keys(options)) {
    if (valid.includes(name)) continue;
    if (where === 'route' && name in MODULE_ONLY_OPTIONS) {
      throw new Error(
        `Idempotency option ${name} applies to the whole module: set it in IdempotencyModule.forRoot(), not in @Idempotent(). Options of @Idempotent(): ${valid.join(', ')}.`,
      );
    }
    throw new Error(
      `Unknown idempotency option "${name}" in ${label(where)}. Valid options: ${valid.join(', ')}.`,
    );
  }
  const logger = options.logger;
  if (
    logger !== undefined &&
    logger !== false &&
    (logger === null ||
      typeof logger !== 'object' ||
      typeof (logger as { warn?: unknown }).warn !== 'function')
  ) {
    throw new Error(
      `Idempotency option logger must be a Nest LoggerService (log, warn, error...) or false, got ${describeValue(logger)}.`,
    );
  }
  if (options.purge !== undefined) {
    if (options.purge === null || typeof options.purge !== 'object') {
      throw new Error(`Idempotency option purge must be an object, got ${options.purge}.`);
    }
    const purgeNames = Object.keys(PURGE_OPTIONS);
    for (const name of Object.keys(options.purge)) {
      if (!purgeNames.includes(name)) {
        throw new Error(
          `Unknown purge option "${name}" in ${label(where)}. Valid purge options: ${purgeNames.join(', ')}.`,
        );
      }
    }
  }
  assertValidValues(options);
}

function assertValidValues(
  options: IdempotentRouteOptions &
    Pick<IdempotencyModuleOptions, 'maxInFlightWaiters' | 'batching' | 'durability'>,
): void {
  for (const name of ['retentionMs', 'leaseMs', 'statementTimeoutMs'] as const) {
    const value = options[name];
    if (
      value !== undefined &&
      !(typeof value === 'number' && Number.isFinite(value) && value > 0)
    ) {
      throw new Error(
        `Idempotency option ${name} must be a positive number, got ${describeValue(value)}.`,
      );
    }
  }
  const retryAfter = options.retryAfterSeconds;
  if (retryAfter !== undefined && !(Number.isSafeInteger(retryAfter) && retryAfter > 0)) {
    throw new Error(
      `Idempotency option retryAfterSeconds must be a positive whole number of seconds (Retry-After has no fractions), got ${describeValue(retryAfter)}.`,
    );
  }
  for (const name of [
    'required',
    'renewLease',
    'transactional',
    'acknowledge',
    'batching',
  ] as const) {
    const value = options[name];
    if (value !== undefined && typeof value !== 'boolean') {
      throw new Error(
        `Idempotency option ${name} must be true or false, got ${describeValue(value)}.`,
      );
    }
  }
  const { key, namespace } = options;
  if (key !== undefined && typeof key !== 'function' && !(typeof key === 'string' && key)) {
    throw new Error(
      `Idempotency option key must be a header name or a function, got ${describeValue(key)}.`,
    );
  }
  if (namespace !== undefined && typeof namespace !== 'string') {
    throw new Error(
      `Idempotency option namespace must be a string, got ${describeValue(namespace)}.`,
    );
  }
  // Part of every record's scope: Postgres refuses NUL (every claim would answer 503) and
  // stores a lone surrogate as U+FFFD (two namespaces would share their records).
  if (namespace !== undefined && unstorableReason(namespace)) {
    throw new Error(
      `Idempotency option namespace must not contain NUL or a lone UTF-16 surrogate, got ${describeValue(namespace)}.`,
    );
  }
  for (const name of ['waitInFlightMs', 'maxInFlightWaiters'] as const) {
    const value = options[name];
    if (
      value !== undefined &&
      !(typeof value === 'number' && Number.isFinite(value) && value >= 0)
    ) {
      throw new Error(
        `Idempotency option ${name} must be a number >= 0, got ${describeValue(value)}.`,
      );
    }
  }
  const { durability } = options;
  if (durability !== undefined && durability !== 'synchronous' && durability !== 'asynchronous') {
    throw new Error(
      `Idempotency option durability must be 'synchronous' or 'asynchronous', got ${describeValue(durability)}.`,
    );
  }
  const status = options.replayStatus;
  if (status !== undefined && status !== 409 && status !== 'original') {
    throw new Error(
      `Idempotency option replayStatus must be 409 or 'original', got ${describeValue(status)}.`,
    );
  }
  if (options.scope !== undefined && typeof options.scope !== 'function') {
    throw new Error(
      `Idempotency option scope must be a function (request, context) => string, got ${describeValue(options.scope)}.`,
    );
  }
  const storeErrors = options.storeErrors;
  if (
    storeErrors !== undefined &&
    typeof storeErrors !== 'boolean' &&
    typeof storeErrors !== 'function'
  ) {
    throw new Error(
      `Idempotency option storeErrors must be true, false or a function (status) => boolean, got ${describeValue(storeErrors)}.`,
    );
  }
  if (options.replayHeaders !== undefined) {
    const problem = replayHeadersProblem(options.replayHeaders);
    if (problem) throw new Error(`Idempotency option replayHeaders ${problem}.`);
  }
}

function label(where: 'module' | 'route'): string {
  return where === 'route' ? '@Idempotent()' : 'IdempotencyModule.forRoot()';
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function' || (typeof value === 'object' && value !== null)) {
    return `a value of type ${Array.isArray(value) ? 'array' : typeof value}`;
  }
  return String(value);
}
