// Runs the application's scope resolver. What it returns decides which records a request can
// see, so anything but a string (or a string Postgres would not store as it is) is refused
// with a 500 problem that names the cause in the log, rather than guessed at or reported as
// a store outage.
import type { ExecutionContext } from '@nestjs/common';
import { IdempotencyScopeUnresolvedException } from './idempotency.exceptions.js';
import type { IdempotencyLog } from './idempotency.log.js';
import type { IdempotencyScopeResolver } from './idempotency-options.interface.js';

export async function resolveScope(
  resolver: IdempotencyScopeResolver,
  subject: unknown,
  context: ExecutionContext,
  logger: IdempotencyLog,
): Promise<string> {
  let scope: unknown;
  try {
    scope = await resolver(subject, context);
  } catch (error) {
    logger.error(
      `The idempotency scope resolver of ${routeOf(context)} threw, so the request was refused (500 idempotency_scope_unresolved): ${error instanceof Error ? error.message : String(error)}`,
    );
    throw new IdempotencyScopeUnresolvedException();
  }
  if (typeof scope !== 'string') {
    logger.error(
      `The idempotency scope resolver of ${routeOf(context)} returned ${scope === null ? 'null' : typeof scope}, so the request was refused (500 idempotency_scope_unresolved). It must return a string: the owner's id (e.g. String(request.user.id)), or '' for one scope shared by every client.`,
    );
    throw new IdempotencyScopeUnresolvedException();
  }
  const unstorable = unstorableReason(scope);
  if (unstorable) {
    logger.error(
      `The idempotency scope resolver of ${routeOf(context)} returned a string ${unstorable}, which Postgres cannot store as it is, so the request was refused (500 idempotency_scope_unresolved). Return an id made of ordinary characters (e.g. a UUID, or an encoding of what you have).`,
    );
    throw new IdempotencyScopeUnresolvedException();
  }
  return scope;
}

/**
 * Why Postgres cannot store a scope (or a namespace, part of it) faithfully, if it cannot: a
 * text value refuses NUL (the claim would fail, and be answered as a store outage, 503,
 * forever), and a lone surrogate is encoded as U+FFFD, so two different scopes would become
 * one and see each other's records.
 */
export function unstorableReason(scope: string): string | undefined {
  if (scope.includes('\0')) return 'with a NUL character (\\u0000)';
  if (!(scope as unknown as { isWellFormed(): boolean }).isWellFormed()) {
    return 'with a lone UTF-16 surrogate (not well-formed Unicode)';
  }
  return undefined;
}

/** The route's name, for the log: made only when there is something to log. */
function routeOf(context: ExecutionContext): string {
  return `${context.getClass().name}.${context.getHandler().name}`;
}
