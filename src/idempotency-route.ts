// Checks, once per route, that Nest itself sends the route's response: a route that writes
// with @Res() or @Next() (without passthrough) goes around Nest, leaving nothing to store.
import type { ExecutionContext } from '@nestjs/common';
import { RESPONSE_PASSTHROUGH_METADATA, ROUTE_ARGS_METADATA } from '@nestjs/common/constants.js';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum.js';
import { IdempotencyUnsupportedResponseException } from './idempotency.exceptions.js';
import type { IdempotencyLog } from './idempotency.log.js';

const storableRoutes = new WeakSet<object>();
/** Routes already named in each application's log. */
const reportedRoutes = new WeakMap<IdempotencyLog, WeakSet<object>>();

/**
 * What the client is told: the route's class and method are internal detail, and go to the
 * log (once per route) instead.
 */
const UNSTORABLE_DETAIL =
  'This endpoint writes its response in a way that cannot be stored for replay, so the request was not processed. This is a server configuration error, described in the server log.';

/** Throws a configuration error for a route whose response Nest does not send. */
export function assertStorableRoute(context: ExecutionContext, logger: IdempotencyLog): void {
  const handler = context.getHandler();
  if (storableRoutes.has(handler)) return;
  const controller = context.getClass();
  // Mirrors Nest's own check (RouterExecutionContext.isResponseHandled).
  const args: Record<string, unknown> =
    Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, handler.name) ?? {};
  const takesResponse = Object.keys(args).some(
    (key) =>
      key.startsWith(`${RouteParamtypes.RESPONSE}:`) || key.startsWith(`${RouteParamtypes.NEXT}:`),
  );
  const passthrough = Reflect.getMetadata(RESPONSE_PASSTHROUGH_METADATA, controller, handler.name);
  if (takesResponse && !passthrough) {
    let reported = reportedRoutes.get(logger);
    if (!reported) reportedRoutes.set(logger, (reported = new WeakSet()));
    if (!reported.has(handler)) {
      reported.add(handler);
      logger.error(
        `${controller.name}.${handler.name} writes its response with @Res(), which cannot be stored for replay, so its keyed requests are refused (500 idempotency_unsupported_response). Use @Res({ passthrough: true }) and return the body.`,
      );
    }
    throw new IdempotencyUnsupportedResponseException(UNSTORABLE_DETAIL);
  }
  storableRoutes.add(handler);
}
