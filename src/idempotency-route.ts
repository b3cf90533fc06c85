// Checks, once per route, that Nest itself sends the route's response: a route that writes
// with @Res() or @Next() (without passthrough) goes around Nest, leaving nothing to store.
import type { ExecutionContext } from '@nestjs/common';
import { RESPONSE_PASSTHROUGH_METADATA, ROUTE_ARGS_METADATA } from '@nestjs/common/constants.js';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum.js';
import { IdempotencyUnsupportedResponseException } from './idempotency.exceptions.js';

const storableRoutes = new WeakSet<object>();

/** Throws a configuration error for a route whose response Nest does not send. */
export function assertStorableRoute(context: ExecutionContext): void {
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
    throw new IdempotencyUnsupportedResponseException(
      `${controller.name}.${handler.name} writes its response with @Res(), which cannot be stored for replay. Use @Res({ passthrough: true }) and return the body.`,
    );
  }
  storableRoutes.add(handler);
}
