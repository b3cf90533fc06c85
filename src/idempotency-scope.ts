// Runs the application's scope resolver. What it returns decides which records a request can
// see, so anything but a string is refused with a 500 problem that names the cause in the
// log, rather than guessed at or reported as a store outage.
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
  return scope;
}

/** The route's name, for the log: made only when there is something to log. */
function routeOf(context: ExecutionContext): string {
  return `${context.getClass().name}.${context.getHandler().name}`;
}
