// Module options merged with a route's overrides and the defaults, once per route.
import {
  DEFAULT_HEADER_NAME,
  DEFAULT_LEASE_MS,
  DEFAULT_RETENTION_MS,
  DEFAULT_RETRY_AFTER_SECONDS,
  DEFAULT_STATEMENT_TIMEOUT_MS,
} from './idempotency.constants.js';
import type {
  IdempotencyKeyResolver,
  IdempotencyModuleOptions,
  IdempotencyScopeResolver,
  IdempotentRouteOptions,
  ReplayStatus,
} from './idempotency-options.interface.js';

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
  /** Reads the key from the call instead of the header `headerName`. */
  keyResolver?: IdempotencyKeyResolver;
  /** The handlers' shared namespace; `undefined` means each context's own. */
  namespace?: string;
  acknowledge: boolean;
}

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
  const key = pick('key');
  const resolved: ResolvedOptions = {
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
    keyResolver: typeof key === 'function' ? key : undefined,
    namespace: pick('namespace'),
    acknowledge: pick('acknowledge') ?? false,
  };
  assertValidOptions(resolved);
  return resolved;
}

/** Throws at start-up (or where @Idempotent() is applied) rather than on the first request. */
export function assertValidOptions(options: IdempotentRouteOptions): void {
  for (const name of [
    'retentionMs',
    'leaseMs',
    'retryAfterSeconds',
    'statementTimeoutMs',
  ] as const) {
    const value = options[name];
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
      throw new Error(`Idempotency option ${name} must be a positive number, got ${value}.`);
    }
  }
  const { key, namespace } = options;
  if (key !== undefined && typeof key !== 'function' && !(typeof key === 'string' && key)) {
    throw new Error(`Idempotency option key must be a header name or a function, got ${key}.`);
  }
  if (namespace !== undefined && typeof namespace !== 'string') {
    throw new Error(`Idempotency option namespace must be a string, got ${namespace}.`);
  }
  const status = options.replayStatus;
  if (status !== undefined && status !== 409 && status !== 'original') {
    throw new Error(`Idempotency option replayStatus must be 409 or 'original', got ${status}.`);
  }
}
